"""Axis strings: validate them, guess them, and bring arrays to (planes, C, Y, X).

Axes use the letters T (time), Z (depth), C (channels), Y and X. The network sees 2D
planes; every other non-channel axis is a stack axis predicted plane by plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .color import RgbConversion, conversion_for
from .errors import InvalidImageError

VALID = set("TZCYX")


def validate_axes(axes: str, ndim: int) -> str:
    """Upper-case, check letters, uniqueness, YX presence and length against ``ndim``."""
    axes = axes.upper().replace("S", "C")
    if len(axes) != ndim:
        raise InvalidImageError(
            f"axes {axes!r} name {len(axes)} dimensions but the image has {ndim}; "
            f"give one letter per dimension, e.g. axes='ZYX'"
        )
    bad = set(axes) - VALID
    if bad or len(set(axes)) != len(axes) or "Y" not in axes or "X" not in axes:
        raise InvalidImageError(
            f"axes {axes!r} are not valid; use each of the letters T, Z, C, Y, X at most once, "
            f"with Y and X always present (e.g. 'YX', 'CYX', 'ZYX', 'TZCYX')"
        )
    return axes


def guess_axes(shape: tuple[int, ...], in_channels: int = 1) -> str:
    """A sensible guess for common layouts; ambiguous >3D shapes must be named explicitly."""
    ndim = len(shape)
    if ndim == 2:
        return "YX"
    if ndim == 3:
        if shape[-1] in (3, 4) and shape[0] > 4:
            return "YXC"
        if shape[0] == in_channels and in_channels > 1:
            return "CYX"
        if shape[-1] == in_channels and in_channels > 1:
            return "YXC"  # e.g. (Y, X, 2) for a 2-channel model: channels last
        return "ZYX"
    if ndim == 4:
        if shape[-1] in (3, 4):
            return "ZYXC"
        if shape[1] == in_channels and in_channels > 1:
            return "ZCYX"
        return "TZYX"
    if ndim == 5:
        return "TZCYX" if shape[2] <= 8 else "TCZYX"
    raise InvalidImageError(
        f"cannot guess the axes of a {ndim}D image of shape {shape}; pass axes explicitly, "
        f"e.g. axes='TZCYX'"
    )


@dataclass(frozen=True)
class Layout:
    """How an image maps to planes: its axes and the shape of the label output."""

    axes: str
    shape: tuple[int, ...]

    @property
    def stack_axes(self) -> str:
        return "".join(a for a in self.axes if a in "TZ")

    @property
    def label_axes(self) -> str:
        return self.stack_axes + "YX"

    @property
    def n_channels(self) -> int:
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.stack_axes)

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    @property
    def label_shape(self) -> tuple[int, ...]:
        return self.stack_shape + self.plane_shape

    def canonical_order(self) -> list[int]:
        """Transpose order to stack axes, then C (if any), then Y, X."""
        order = [self.axes.index(a) for a in self.stack_axes]
        if "C" in self.axes:
            order.append(self.axes.index("C"))
        return order + [self.axes.index("Y"), self.axes.index("X")]

    def to_canonical(self, image):
        """A (..stack.., C, Y, X) view of ``image`` (numpy or dask), C added when missing."""
        arr = image.transpose(self.canonical_order())
        if "C" not in self.axes:
            arr = arr[..., None, :, :]
        return arr


def make_layout(image, axes: str | None, in_channels: int = 1) -> Layout:
    """Check an image array's basic sanity and resolve its axes."""
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 2:
        raise InvalidImageError(
            f"the image has shape {shape}; a microscopy image needs at least 2 dimensions (Y, X)"
        )
    if 0 in shape:
        raise InvalidImageError(f"the image is empty (shape {shape}); load a non-empty image")
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "biuf":
        raise InvalidImageError(
            f"images of dtype {dtype} cannot be segmented; convert to a numeric type, "
            f"e.g. numpy.abs(image) for complex data"
        )
    axes = validate_axes(axes, len(shape)) if axes else guess_axes(shape, in_channels)
    return Layout(axes=axes, shape=shape)


def fitted_channels(n_channels: int, in_channels: int) -> int:
    """How many channels :func:`fit_channels` leaves for a model with ``in_channels``."""
    if n_channels == 4 and in_channels in (1, 3):
        n_channels = 3
    if n_channels == 3 and in_channels == 1:
        n_channels = 1
    return n_channels


def rgb_conversion(canonical, in_channels: int, rgb: str | RgbConversion = "auto"
                   ) -> RgbConversion | None:
    """The colour conversion :func:`fit_channels` applies to a (..., C, Y, X) array for a
    model with ``in_channels``: for RGB(A) input to a 1-channel model, ``rgb`` (a mode of
    :data:`~napari_unet.color.RGB_MODES`; ``auto`` decided on the first plane), else
    ``None``."""
    n = canonical.shape[-3]
    if not (n in (3, 4) and fitted_channels(n, in_channels) == 1):
        return None
    if isinstance(rgb, RgbConversion):
        return rgb
    return conversion_for(canonical[(0,) * (canonical.ndim - 3) + (slice(0, 3),)], rgb)


def fit_channels(canonical, in_channels: int, rgb: str | RgbConversion = "auto"):
    """Adapt a (..., C, Y, X) array to a model's channel count the way training does.

    RGBA loses alpha; RGB becomes gray for 1-channel models by ``rgb`` (a mode or a
    conversion already chosen; :mod:`napari_unet.color`). Numpy stacks are wrapped in dask first so the conversion
    happens plane by plane, never as a whole float copy; dask arrays stay lazy, block by
    block. Other channel counts pass unchanged (the model then refuses them with a clear
    message).
    """
    n = canonical.shape[-3]
    target = fitted_channels(n, in_channels)
    conversion = rgb_conversion(canonical, in_channels, rgb)
    if n == 4 and target < 4:
        canonical = canonical[..., :3, :, :]
    if conversion is None:
        return canonical
    if isinstance(canonical, np.ndarray) and canonical.ndim == 3:
        return conversion.apply(canonical)
    import dask.array as da

    if isinstance(canonical, np.ndarray):
        chunks = (1,) * (canonical.ndim - 3) + canonical.shape[-3:]
        canonical = da.from_array(canonical, chunks=chunks)
    whole_pixels = canonical.rechunk({canonical.ndim - 3: 3})
    return whole_pixels.map_blocks(
        _gray_blocks, conversion, dtype=np.float32,
        chunks=whole_pixels.chunks[:-3] + ((1,),) + whole_pixels.chunks[-2:])


def _gray_blocks(block: np.ndarray, conversion: RgbConversion) -> np.ndarray:
    """``conversion`` over every (3, Y, X) plane of a (..., 3, Y, X) block."""
    out = np.empty(block.shape[:-3] + (1,) + block.shape[-2:], np.float32)
    for index in np.ndindex(*block.shape[:-3]):
        out[index] = conversion.apply(block[index])
    return out
