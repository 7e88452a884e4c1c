"""Exception types raised where bad input enters the core.

Every message names the problem and the fix, so the CLI can print it as is and the
widgets can show it as a notification, without a traceback.
"""

from __future__ import annotations


class NapariUnetError(Exception):
    """Base class of every error the package raises on purpose."""


class InvalidImageError(NapariUnetError, ValueError):
    """An image array cannot be segmented as given (shape, dtype, values, axes)."""


class InvalidLabelsError(NapariUnetError, ValueError):
    """A label array cannot be used (dtype, negative ids, shape mismatch)."""


class ImageReadError(NapariUnetError, OSError):
    """A file could not be read as an image (missing, truncated, not an image)."""


class OutputWriteError(NapariUnetError, OSError):
    """A result could not be written (read-only folder, full disk, existing file)."""


class ModelFileError(NapariUnetError, ValueError):
    """A model file is missing, corrupt, foreign, unsafe or from a newer format."""


class ModelMismatchError(NapariUnetError, ValueError):
    """A model cannot take this input (for example the wrong number of channels)."""


class DatasetError(NapariUnetError, ValueError):
    """A training or evaluation folder has no usable image/mask pairs."""


class DeviceError(NapariUnetError, ValueError):
    """The requested compute device does not exist on this machine."""


class Cancelled(NapariUnetError):
    """Raised inside long work when the caller asked it to stop."""


class SessionError(NapariUnetError, ValueError):
    """A saved session cannot be written or reopened (damaged, foreign or newer format)."""


class InvalidSettingError(NapariUnetError, ValueError):
    """A setting (an option or argument) has a value that cannot work, such as a tile
    overlap that is not smaller than the tile."""


class NapariUnetWarning(UserWarning):
    """Base class of the package's warnings: something was read as well as it could be."""


class CalibrationWarning(NapariUnetWarning):
    """A file's pixel size or unit could not be used and was dropped (the image is still
    read, uncalibrated along the axes concerned)."""


class PlaneByPlaneWarning(NapariUnetWarning):
    """A stack asked for 3D objects was too large (or written out of core) for the 3D
    step: its objects were joined plane by plane instead (:mod:`napari_unet.volume`)."""


class PackageClashWarning(NapariUnetWarning):
    """Another installed distribution (the unrelated ``napari-unet`` on PyPI) provides the
    same import package ``napari_unet``: the two overwrite each other's files."""
