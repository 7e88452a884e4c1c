"""One entry point for every image napari-unet reads: :func:`read_image` sniffs the format
from the first bytes (TIFF, PNG, JPEG) or the folder (zarr) and hands it to its reader.
PNG and JPEG pictures are read here, whole: they are 2-D and small."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, overload

import numpy as np

from ..errors import ImageReadError
from .atomic import PathLike
from .image import ImageData
from .tiff import read_tiff
from .zarr import is_zarr, read_zarr

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PICTURE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG


def read_image(path: PathLike, lazy: Optional[bool] = None) -> ImageData:
    """Read a TIFF / OME-TIFF / ImageJ hyperstack, PNG or JPEG file, or a zarr / OME-Zarr
    store (always lazy).

    The format is sniffed from the first bytes, not the extension, so a TIFF named
    ``.png`` still reads. ``lazy=None`` returns a dask array for images over
    :data:`~napari_unet.io.tiff.LAZY_THRESHOLD_BYTES` or over the memory available (so huge
    stacks do not fill memory) and a NumPy array otherwise; ``lazy=True``/``False`` forces
    either (only TIFF can be read lazily). What a TIFF declares is checked before anything
    is allocated: an image that cannot fit is refused with ``lazy=False``, and so is, with
    ``lazy=True``, a compressed piece (strip or tile) that must be decoded whole and cannot
    fit. Every failure is an :class:`ImageReadError` that says what is wrong and what to do.
    """
    p = Path(path)
    if is_zarr(p):
        return read_zarr(p)
    _check_regular(p)
    head = _read_head(p)
    if head.startswith(_TIFF_MAGIC):
        return read_tiff(p, lazy)
    if head.startswith(_PICTURE_MAGIC):
        return _read_picture(p)
    raise ImageReadError(
        f"{str(p)!r} is not a TIFF, PNG or JPEG image (it starts with {head[:4]!r}); "
        "export the image as TIFF, or check that this is the file you meant"
    )


def image_stem(path: PathLike) -> str:
    """The file name without its image suffix (``cells.ome.tif`` -> ``cells``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr", ".png",
                   ".jpeg", ".jpg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


@overload
def file_name(path: PathLike, parts: int = 1) -> str: ...
@overload
def file_name(path: None, parts: int = 1) -> None: ...
def file_name(path: Optional[PathLike], parts: int = 1) -> Optional[str]:
    """The last ``parts`` parts of ``path`` (its name by default), as provenance records a
    source or a data folder: an exported file names no absolute path of the machine that
    made it (a training folder keeps two, e.g. ``dsb2018_fluo/train``)."""
    if path is None:
        return None
    return "/".join(Path(os.path.abspath(os.fspath(path))).parts[-parts:])


def _check_regular(p: Path) -> None:
    """Refuse a FIFO, socket or device before opening it: opening a FIFO waits for a
    writer, forever when there is none. A missing path or a folder is left to
    :func:`_read_head`, which says so."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ImageReadError(
            f"{str(p)!r} is not a regular file (a FIFO, socket or device); reading it could "
            "wait forever: pass an image file (TIFF, PNG, JPEG) or a zarr folder"
        )


def _read_head(p: Path) -> bytes:
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise ImageReadError(
            f"{str(p)!r} does not exist; check the path (relative paths start in {os.getcwd()!r})"
        ) from None
    except IsADirectoryError:
        raise ImageReadError(f"{str(p)!r} is a folder; pass an image file inside it") from None
    except PermissionError:
        raise ImageReadError(
            f"{str(p)!r} cannot be opened: permission denied; fix the file's permissions or "
            "copy it somewhere readable"
        ) from None
    except OSError as exc:
        raise ImageReadError(f"{str(p)!r} cannot be opened ({exc}); check the path") from exc
    if not head:
        raise ImageReadError(
            f"{str(p)!r} is empty (0 bytes); it was not saved or copied completely; "
            "export or copy it again"
        )
    return head


def _read_picture(p: Path) -> ImageData:
    """A PNG or JPEG file, through imageio."""
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(p))
    except Exception as exc:
        raise ImageReadError(
            f"{str(p)!r} is a damaged or incomplete PNG/JPEG ({type(exc).__name__}: {exc}); "
            "copy or export it again"
        ) from exc
    if data.ndim == 2:
        axes = "YX"
    elif data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        axes = "YXC"
    else:
        raise ImageReadError(
            f"{str(p)!r} holds an array of shape {data.shape}, which is not a 2-D picture; "
            "save stacks and time series as TIFF"
        )
    return ImageData(data=data, axes=axes, pixel_size=None, unit=None, source=os.fspath(p))
