"""Label images: what counts as one, reading them (and training masks) from files, and
writing them as TIFFs that Fiji and napari open.

* **What is a label image**: non-negative integer ids, 0 = background (booleans are one
  object). :func:`check_labels` is the one check; float images are refused where labels are
  read, written or trained on, and accepted when whole-numbered only where they are scored.
* **Label files**: ``uint8``/``uint16`` labels are written as ImageJ hyperstack TIFFs, so
  Fiji opens a stack as a stack, with the calibration in the resolution tags plus ImageJ's
  ``spacing`` (Z) and ``unit``. ImageJ TIFFs cannot hold 32-bit integers, so ``uint32``
  labels (more than 65,535 ids) are written as OME-TIFF with ``PhysicalSize*``; Fiji opens
  them through Bio-Formats. Both are zlib compressed (lossless). Labels given as a lazy
  array (zarr, dask) are streamed tile by tile into a tiled OME BigTIFF, never loaded whole.
* **Provenance metadata** (a JSON object, e.g. model name and settings) is stored in the
  ImageJ ``Info`` property (Fiji: Image > Show Info; Fiji keeps it when re-saving) or, for
  OME-TIFF, in the OME ``Image/Description``. :func:`~napari_unet.io.read_image` returns it
  as :attr:`~napari_unet.io.ImageData.metadata`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import tifffile
from numpy.typing import ArrayLike

from ..errors import InvalidLabelsError
from .atomic import PathLike, atomic_write
from .dispatch import read_image
from .units import UNITS, find_unit

if TYPE_CHECKING:
    import dask.array

_TILE = 512  # tile side of streamed (lazy) label TIFFs
_LABEL_AXES = "TZYX"
_WHAT = "the label image"


# --------------------------------------------------------------------------- what labels are


def check_labels(data: ArrayLike, what: str, *, whole_floats: bool = False) -> np.ndarray:
    """``data`` as a label image of integer ids >= 0 (no copy when it already is one;
    booleans become uint8), or :class:`InvalidLabelsError` naming ``what`` and the fix.

    Floats are refused even when whole-numbered, so a probability map is never taken for
    labels by accident. ``whole_floats=True`` is for scoring, where label images saved as
    float by other tools are compared: floats that are all finite whole numbers >= 0 (up to
    2**53, the largest exact) are accepted and returned as int64.
    """
    a = np.asarray(data)
    kind = a.dtype.kind
    if kind == "b":
        return a.astype(np.uint8)
    if kind == "f" and whole_floats:
        return _whole_float_ids(a, what)
    if kind not in "ui":
        raise InvalidLabelsError(
            f"{what} has dtype {a.dtype}, but labels must be non-negative integer ids "
            "(0 = background); "
            "convert whole-number values with .astype(np.uint32), or threshold/label a "
            "probability map first"
        )
    if kind == "i" and a.size and a.min() < 0:
        raise _negative(what, a.min())
    return a


def _whole_float_ids(a: np.ndarray, what: str) -> np.ndarray:
    if a.size == 0:
        return a.astype(np.int64)
    if not np.all(np.isfinite(a)):
        raise InvalidLabelsError(
            f"{what} contains NaN or infinite values; a label image must hold whole-number "
            "object ids: fill or remove the invalid pixels first"
        )
    if not np.all(np.mod(a, 1) == 0):
        raise InvalidLabelsError(
            f"{what} is a float array with non-integer values, so it is not a label image "
            "(it looks like a probability or intensity map); threshold it and label the "
            "objects (for example skimage.measure.label(prob > 0.5)) before scoring"
        )
    if a.min() < 0:
        raise _negative(what, f"{a.min():g}")
    if a.max() > 2**53:
        raise InvalidLabelsError(
            f"{what} has float ids above 2**53, which cannot be exact; store the labels "
            "as an integer array"
        )
    return a.astype(np.int64)


def _negative(what: str, low: Any) -> InvalidLabelsError:
    return InvalidLabelsError(
        f"{what} contains negative values (minimum {low}); labels must be non-negative ids, "
        "0 for background: set negative pixels to 0 or relabel, e.g. with "
        "skimage.segmentation.relabel_sequential"
    )


def smallest_uint(max_value: int) -> np.dtype:
    """The smallest unsigned dtype that holds ``max_value`` (labels stay compact on disk)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


# --------------------------------------------------------------------------- reading


def read_labels(path: PathLike) -> np.ndarray:
    """Read a label image (integer ids, 0 = background) into memory, checking it is one."""
    image = read_image(path, lazy=False)
    data = np.asarray(image.data)
    if "C" in image.axes:
        raise InvalidLabelsError(
            f"{str(path)!r} has a colour/channel axis (axes {image.axes!r}), so it is not a "
            "label image; pass a single-channel image of integer ids (0 = background)"
        )
    return check_labels(data, what=repr(str(path)))


def read_mask(path: PathLike) -> np.ndarray:
    """A training/evaluation mask as one label image, its colour channels removed.

    A gray mask saved as RGB(A) (all colour channels equal; an alpha channel, the last of
    2 or 4, is ignored) is read as one channel. A colour-coded mask (channels that differ)
    is refused with :class:`InvalidLabelsError`: reading one channel of it would silently
    drop the objects coded in the others.
    """
    image = read_image(path, lazy=False)  # needed whole: refused here if it cannot fit
    data = np.asarray(image.data)
    if "C" not in image.axes:
        return data
    channels = np.moveaxis(data, image.axes.index("C"), -1)
    if channels.shape[-1] in (2, 4):
        channels = channels[..., :-1]  # alpha: transparency, not labels
    if not (channels == channels[..., :1]).all():
        raise InvalidLabelsError(
            f"{str(path)!r} is a colour mask whose channels differ (axes {image.axes!r}); "
            "reading one channel would lose the objects coded in the others: save the mask "
            "as one label image (a single channel of integer ids, 0 = background)"
        )
    return channels[..., 0]


# --------------------------------------------------------------------------- writing


def write_labels(
    path: PathLike,
    labels: Any,
    *,
    axes: Optional[str] = None,
    pixel_size: Optional[Sequence[float]] = None,
    unit: Optional[str] = "um",
    metadata: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Atomically write a label image as a compressed TIFF that Fiji and napari open.

    ``labels`` holds integer ids >= 0 (bool masks are accepted); it is stored in the
    smallest of uint8/uint16/uint32 that holds the largest id. ``axes`` is an ordered
    subset of ``"TZYX"`` ending in ``"YX"`` (default ``"YX"``/``"ZYX"`` by dimension);
    ``pixel_size`` has one value per Z/Y/X axis in ``unit`` (``None``, as
    :func:`~napari_unet.io.read_image` gives for uncalibrated files, means micrometres);
    ``metadata`` is a JSON-serialisable dict kept in the file (see the module docstring for
    where). Length-1 T/Z axes are dropped, as every reader squeezes them anyway.
    Returns the written path; raises :class:`InvalidLabelsError` for bad labels and
    :class:`~napari_unet.errors.OutputWriteError` when the file cannot be written
    (the previous file, if any, is then left unchanged).
    """
    data = _as_lazy_labels(labels) if _is_lazy(labels) else _as_labels(labels)
    axes = _label_axes(axes, data.shape)
    spatial = [ax for ax in axes if ax in "ZYX"]
    if pixel_size is None:
        sizes: dict[str, float] = {}
    else:
        values = [float(v) for v in pixel_size]
        if len(values) != len(spatial) or not all(math.isfinite(v) and v > 0 for v in values):
            raise InvalidLabelsError(
                f"pixel_size needs one positive value per Z/Y/X axis of {axes!r} "
                f"({len(spatial)}), got {tuple(pixel_size)!r}"
            )
        sizes = dict(zip(spatial, values))
    # Readers (tifffile, Fiji) squeeze length-1 T/Z axes anyway, and tifffile's OME
    # writer rejects some of them: drop them here, with their pixel size.
    dropped = [ax for ax, n in zip(axes, data.shape) if ax in "TZ" and n == 1]
    if dropped:
        data = data.reshape([n for ax, n in zip(axes, data.shape) if ax not in dropped])
        axes = "".join(ax for ax in axes if ax not in dropped)
        sizes = {ax: v for ax, v in sizes.items() if ax not in dropped}
    given = find_unit(unit or "um")
    if given is None:
        raise InvalidLabelsError(
            f"unknown unit {unit!r}; use 'um', 'nm', 'mm', 'cm', 'm', 'inch' or 'pixel'")
    stored = UNITS[given.stored_as]
    if given.micrometres is not None:  # e.g. inch -> um: the values follow the unit written
        sizes = {ax: v * given.micrometres / stored.micrometres  # type: ignore[operator]
                 for ax, v in sizes.items()}
    try:
        info = json.dumps(dict(metadata), allow_nan=False) if metadata else None
    except (TypeError, ValueError) as exc:
        raise InvalidLabelsError(
            f"metadata must be JSON-serialisable ({exc}); convert values to str, int, float, "
            "bool, list or dict"
        ) from exc
    writer = _write_ome if data.dtype == np.uint32 or _is_lazy(data) else _write_imagej
    return atomic_write(
        path, partial(writer, data=data, axes=axes, sizes=sizes, unit=stored.name,  # type: ignore[arg-type]
                      info=info),
        overwrite=overwrite,
    )


def _as_labels(labels: Any) -> np.ndarray:
    data = check_labels(labels, what=_WHAT)
    _check_not_empty(data.shape)
    return np.ascontiguousarray(data.astype(_storage_dtype(int(data.max())), copy=False))


def _is_lazy(labels: Any) -> bool:
    """Array-likes that are not in memory (dask, zarr): streamed, never loaded whole."""
    return not isinstance(labels, np.ndarray) and hasattr(labels, "shape") and hasattr(
        labels, "dtype") and not np.isscalar(labels)


def _as_lazy_labels(labels: Any) -> dask.array.Array:
    """A dask view of lazy labels in the smallest uint dtype (one pass for min and max)."""
    import dask.array as da

    data = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=_chunks(labels))
    check_labels(np.zeros(0, data.dtype), what=_WHAT)  # the dtype; values are read below
    _check_not_empty(data.shape)
    low, top = (int(v) for v in da.compute(data.min(), data.max()))
    if low < 0:
        raise _negative(_WHAT, low)
    return data.astype(_storage_dtype(top))


def _check_not_empty(shape: tuple[int, ...]) -> None:
    if math.prod(shape) == 0:
        raise InvalidLabelsError(
            f"the label image is empty (shape {shape}); pass an array with pixels"
        )


def _storage_dtype(top: int) -> np.dtype:
    """The dtype labels with largest id ``top`` are written in: TIFF labels stop at uint32."""
    dtype = smallest_uint(top)
    if dtype.itemsize > 4:
        raise InvalidLabelsError(
            f"the largest label id {top} does not fit in 32 bits; renumber the labels, e.g. "
            "with skimage.segmentation.relabel_sequential"
        )
    return dtype


def _chunks(labels: Any) -> Any:
    """A lazy array's own chunks (zarr) when it has them, else dask's default."""
    chunks = getattr(labels, "chunks", None)
    return chunks if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks) else "auto"


def _label_axes(axes: Optional[str], shape: tuple[int, ...]) -> str:
    if axes is None:
        axes = {2: "YX", 3: "ZYX"}.get(len(shape), "")
        if not axes:
            raise InvalidLabelsError(
                f"labels of shape {shape} need explicit axes; pass axes='TZYX' (or the "
                "subset that matches)"
            )
    axes = axes.upper()
    ordered = "".join(ax for ax in _LABEL_AXES if ax in axes)
    if axes != ordered or not axes.endswith("YX"):
        raise InvalidLabelsError(
            f"label axes {axes!r} are not supported; use an ordered subset of 'TZYX' ending "
            "in 'YX' (transpose the array first, e.g. with np.moveaxis)"
        )
    if len(axes) != len(shape):
        raise InvalidLabelsError(
            f"labels have {len(shape)} dimensions (shape {shape}) but axes {axes!r} name "
            f"{len(axes)}; pass axes with one letter per dimension"
        )
    return axes


def _write_imagej(
    tmp: Path, *, data: np.ndarray, axes: str, sizes: dict[str, float], unit: str,
    info: Optional[str],
) -> None:
    # An explicit length-1 samples axis stops tifffile from taking a stack's X axis of
    # length 1 for RGB samples.
    data = data[..., np.newaxis]
    metadata: dict[str, Any] = {"axes": axes + "S"}
    resolution = None
    if sizes:
        metadata["unit"] = UNITS[unit].imagej
        resolution = (1.0 / sizes["X"], 1.0 / sizes["Y"])
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
    if info:
        metadata["Info"] = info
    tifffile.imwrite(
        tmp,
        data,
        imagej=True,
        photometric="minisblack",
        compression="zlib",
        resolution=resolution,
        metadata=metadata,
    )


def _write_ome(
    tmp: Path, *, data: np.ndarray, axes: str, sizes: dict[str, float], unit: str,
    info: Optional[str],
) -> None:
    metadata: dict[str, Any] = {"axes": axes}
    for ax, value in sizes.items():
        metadata[f"PhysicalSize{ax}"] = value
        metadata[f"PhysicalSize{ax}Unit"] = UNITS[unit].ome
    if info:
        metadata["Description"] = info
    if isinstance(data, np.ndarray):
        tifffile.imwrite(
            tmp, data, ome=True, photometric="minisblack", compression="zlib", metadata=metadata
        )
        return
    tifffile.imwrite(  # streamed: one tile in memory at a time
        tmp, _tiles(data), shape=data.shape, dtype=data.dtype, tile=(_TILE, _TILE),
        bigtiff=True, ome=True, photometric="minisblack", compression="zlib", metadata=metadata,
    )


def _tiles(data: Any) -> Iterator[np.ndarray]:
    """Tiles of a lazy (..., Y, X) array in TIFF order: page by page, rows of tiles."""
    height, width = data.shape[-2:]
    for index in np.ndindex(*data.shape[:-2]):
        for y in range(0, height, _TILE):
            for x in range(0, width, _TILE):
                yield np.asarray(data[index + (slice(y, y + _TILE), slice(x, x + _TILE))])
