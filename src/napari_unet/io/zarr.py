"""Zarr and OME-Zarr: lazy image reading, and label volumes written region by region.

A zarr store is a folder of compressed chunks, so labels larger than memory can be
written block by block and images larger than memory read the same way. Labels are
written as an OME-Zarr 0.5 image (a zarr v3 group with one resolution level ``"0"`` and
NGFF ``multiscales`` metadata: axes, units, pixel size), which napari (napari-ome-zarr),
Fiji (OME-Zarr readers) and Python (``zarr.open``, ``dask.array.from_zarr``) open.

A store given as input is checked when it is opened: OME-Zarr metadata that cannot say
which array holds the image or what its axes are is refused naming the key (calibration
that cannot be read is dropped with a warning instead, as for TIFFs), and so is a store
of more chunks than can be scheduled. A chunk file that exists but cannot be decoded raises
an :class:`~napari_unet.errors.ImageReadError` naming the store and region when it is read.
An absent chunk file reads as the array's fill value (usually 0): zarr writers leave out
chunks that hold only the fill value, so absence is how zarr stores them, not damage.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import zarr

from ..axes import guess_axes, validate_axes
from ..errors import CalibrationWarning, ImageReadError, InvalidImageError, InvalidLabelsError
from .atomic import PathLike
from .image import ImageData
from .units import UNITS, clean_calibration

NGFF_VERSION = "0.5"
#: Chunk side of label output in Y and X (one plane deep for stacks).
CHUNK = 1024

#: At most this many dask chunks per zarr input: a computation over the whole image (the
#: normalisation's subsample is one) holds a few kB per chunk, so the 2.4 million stored
#: chunks of 100,000^2 pixels in chunks of 64^2 would take over 10 GB before reading a pixel.
MAX_DASK_CHUNKS = 10_000
#: ... and, where stored chunks are joined to stay below that, none larger than this (a
#: dask chunk is read whole, however little of it is wanted).
MAX_DASK_CHUNK_BYTES = 512 << 20

_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def is_zarr(path: PathLike) -> bool:
    """Whether ``path`` is a zarr store (v2 or v3) rather than a file."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in ("zarr.json", ".zgroup", ".zarray"))


def read_zarr(path: PathLike) -> ImageData:
    """Open a zarr array or OME-Zarr image lazily (dask), with axes and pixel size when
    the store's NGFF metadata gives them (the highest-resolution level is used); a plain
    array's axes are guessed from its shape."""
    import dask.array as da

    p = Path(path)
    try:
        node: Any = zarr.open(str(p), mode="r")  # a group or an array, told apart below
    except Exception as exc:
        raise ImageReadError(
            f"{str(p)!r} is not a readable zarr store ({type(exc).__name__}: {exc}); "
            "check that the folder is complete, or export the image as TIFF"
        ) from exc
    axes, scale, units, unit = "", None, {}, None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        ome = attrs.get("ome", attrs)
        multiscales = ome.get("multiscales") if isinstance(ome, Mapping) else None
        if multiscales:
            axes, scale, units, node = _ngff_level0(node, multiscales, p)
        else:
            arrays = list(node.array_keys())
            if len(arrays) != 1:
                raise ImageReadError(
                    f"{str(p)!r} is a zarr group with {len(arrays)} arrays and no OME-Zarr "
                    "metadata; open the array folder inside it that holds the image"
                )
            node = node[arrays[0]]
    if 0 in node.shape:
        raise ImageReadError(f"{str(p)!r} holds an empty image (shape {node.shape}); "
                             "check that this is the store you meant")
    axes = axes or guess_axes(tuple(node.shape))  # a plain array names none: as for TIFFs
    pixel_size = None
    if scale is not None:
        pixel_size, unit = _zarr_calibration(axes, scale, units, p)
    chunks = _dask_chunks(tuple(node.shape), tuple(node.chunks), node.dtype.itemsize, axes, p)
    metadata = node.attrs.get("napari_unet")
    return ImageData(data=da.from_array(_ChunkReader(node, os.fspath(p)), chunks=chunks),
                     axes=axes, pixel_size=pixel_size, unit=unit, source=os.fspath(p),
                     metadata=dict(metadata) if isinstance(metadata, Mapping) else {})


def _ngff_level0(group: Any, multiscales: Any, p: Path):
    """(axes, scale, units by axis, array) of the first dataset of the first NGFF
    multiscale. Metadata that does not say which array holds the image, or what its axes
    are, is refused naming the key (a scale that cannot be read is left to
    :func:`_zarr_calibration`, which drops it with a warning)."""

    def refused(key: str, problem: str) -> ImageReadError:
        return ImageReadError(
            f"{str(p)!r}: its OME-Zarr metadata {key} {problem}, so the image cannot be "
            "found in it; write the store again with an OME-Zarr writer, or open the array "
            f"folder inside it that holds the image (e.g. {str(p / '0')!r}; its axes are "
            "then guessed)")

    if not isinstance(multiscales, list):
        raise refused("'multiscales'", "is not a list of images")
    multiscale = multiscales[0]
    if not isinstance(multiscale, Mapping):
        raise refused("'multiscales[0]'", "is not an object")
    axes = multiscale.get("axes")
    if not isinstance(axes, list):
        raise refused("'multiscales[0].axes'", "is missing or not a list")
    names = []
    for i, a in enumerate(axes):
        name = a.get("name") if isinstance(a, Mapping) else a  # NGFF 0.3: plain names
        if not isinstance(name, str):
            raise refused(f"'multiscales[0].axes[{i}]'", "has no name")
        names.append(name.upper())
    if not set(names) <= set(_AXIS_TYPES):
        raise ImageReadError(f"{str(p)!r} has axes {names} that napari-unet does not know; "
                             "it reads t, c, z, y and x")
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], Mapping):
        raise refused("'multiscales[0].datasets'", "is missing or not a list of datasets")
    dataset = datasets[0]
    path = dataset.get("path")
    try:
        array = group[path] if isinstance(path, str) else None
    except (KeyError, ValueError):  # ValueError: '..' in the path
        array = None
    if not isinstance(array, zarr.Array):
        raise refused("'multiscales[0].datasets[0].path'",
                      f"is {path!r}, which names no array in the store")
    try:
        validate_axes("".join(names), array.ndim)
    except InvalidImageError as exc:
        raise refused("'multiscales[0].axes'", f"names {names} for an array of shape "
                      f"{array.shape} ({exc})") from None
    units = {name: a.get("unit") for name, a in zip(names, axes)
             if isinstance(a, Mapping) and name in "ZYX"}
    transforms = dataset.get("coordinateTransformations", [])
    if not isinstance(transforms, list) or not all(isinstance(t, Mapping) for t in transforms):
        warnings.warn(CalibrationWarning(
            f"{str(p)!r}: the coordinateTransformations {transforms!r} are not a list of "
            "transformations; the calibration is ignored"), stacklevel=3)
        transforms = []
    scales = [t.get("scale") for t in transforms if t.get("type") == "scale"]
    return "".join(names), (scales[-1] if scales else None), units, array


def _dask_chunks(shape: tuple[int, ...], stored: tuple[int, ...], itemsize: int, axes: str,
                 p: Path) -> tuple[int, ...]:
    """Dask chunks for a zarr array: its stored chunks, or where they are more than
    :data:`MAX_DASK_CHUNKS`, whole multiples of them (doubled along Y or X while a plane is
    in several pieces, since images are read plane by plane, then along the axis in the
    most pieces, until few enough), so the dask graph stays small and no stored chunk is
    read for two dask chunks. Refuses an array that even then needs pieces over
    :data:`MAX_DASK_CHUNK_BYTES`."""
    factors = [1] * len(shape)

    def pieces(axis: int) -> int:
        return -(-shape[axis] // (stored[axis] * factors[axis]))

    def order(axis: int) -> tuple[bool, int]:
        return axes[axis] in "YX" and pieces(axis) > 1, pieces(axis)

    while math.prod(pieces(a) for a in range(len(shape))) > MAX_DASK_CHUNKS:
        factors[max(range(len(shape)), key=order)] *= 2
    chunks = tuple(min(n, c * f) for n, c, f in zip(shape, stored, factors))
    if max(factors) > 1 and math.prod(chunks) * itemsize > MAX_DASK_CHUNK_BYTES:
        raise ImageReadError(
            f"{str(p)!r} holds {math.prod(shape) * itemsize / 2**30:.0f} GiB in "
            f"{math.prod(-(-n // c) for n, c in zip(shape, stored))} chunks of {stored}, more "
            f"than can be read in {MAX_DASK_CHUNKS} pieces of at most "
            f"{MAX_DASK_CHUNK_BYTES >> 20} MiB; crop it, or write the planes or time points "
            "you need into a store of their own")
    return chunks


class _ChunkReader:
    """A zarr array as dask reads it: a chunk that cannot be read or decoded raises an
    :class:`ImageReadError` naming the store and the region, not the codec's own error from
    deep inside a dask task."""

    def __init__(self, array: Any, source: str) -> None:
        self.array, self.source = array, source
        self.shape, self.dtype, self.ndim = tuple(array.shape), array.dtype, array.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - every codec and store has its own errors
            region = ", ".join(f"{k.start}:{k.stop}" if isinstance(k, slice) else str(k)
                               for k in (key if isinstance(key, tuple) else (key,)))
            raise ImageReadError(
                f"{self.source!r}: the data in [{region}] cannot be read "
                f"({type(exc).__name__}: {exc}); a chunk file is damaged or was copied "
                "incompletely: copy or write the store again") from exc


def _zarr_calibration(axes: str, scale: Any, units: Mapping[str, Any], p: Path):
    """(pixel size, unit) from an NGFF scale: read as far as it can be, see
    :func:`napari_unet.io.units.clean_calibration` (units keep their canonical name, so a
    store in nanometres stays in nanometres)."""
    if not isinstance(scale, (list, tuple)) or len(scale) != len(axes):
        warnings.warn(CalibrationWarning(
            f"{str(p)!r}: the scale {scale!r} does not give one number per axis of "
            f"{axes!r}; the calibration is ignored"), stacklevel=3)
        return None, None
    sizes = {a: (s, units.get(a) if isinstance(units.get(a), str) else None)
             for a, s in zip(axes, scale) if a in "ZYX"}
    return clean_calibration(sizes, axes, p, micrometres=False)


def create_labels(
    folder: Path,
    shape: Sequence[int],
    axes: str,
    *,
    pixel_size: Optional[Sequence[float]] = None,
    unit: Optional[str] = "um",
    metadata: Optional[Mapping[str, Any]] = None,
    name: str = "labels",
) -> Any:
    """A zero-filled uint32 label array in a new OME-Zarr image at ``folder`` (which must
    be empty or new; pair it with :func:`napari_unet.io.atomic.atomic_folder`).

    ``axes`` is a subset of ``"TZYX"`` ending in ``"YX"``; ``pixel_size`` has one value per
    Z/Y/X axis. Chunks are one plane deep and :data:`CHUNK` wide, so a plane's blocks are
    written independently.
    """
    if len(axes) != len(shape) or not axes.endswith("YX"):
        raise InvalidLabelsError(f"label axes {axes!r} do not match shape {tuple(shape)}")
    spatial = [a for a in axes if a in "ZYX"]
    if pixel_size is not None and len(pixel_size) != len(spatial):
        raise InvalidLabelsError(f"pixel_size needs one value per Z/Y/X axis of {axes!r}")
    if pixel_size is not None and not all(
            isinstance(v, (int, float, np.number)) and math.isfinite(v) and v > 0
            for v in pixel_size):
        # Never into zarr.json: NaN is not JSON, and a negative size mirrors the image.
        raise InvalidLabelsError(
            f"the pixel size must be positive finite numbers, got {tuple(pixel_size)!r}; "
            "leave it out (None) when the image has no usable calibration")
    sizes = dict(zip(spatial, pixel_size)) if pixel_size is not None else {}
    known = UNITS.get(unit or "um")  # napari-unet's own unit names, as ImageData.unit gives
    ngff_unit = known.ngff if known is not None else None
    ngff_axes = []
    for a in axes:
        entry: dict[str, Any] = {"name": a.lower(), "type": _AXIS_TYPES[a]}
        if a in "ZYX" and ngff_unit:
            entry["unit"] = ngff_unit
        ngff_axes.append(entry)
    group = zarr.open_group(str(folder), mode="w", zarr_format=3)
    group.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": [{
            "name": name,
            "axes": ngff_axes,
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [float(sizes.get(a, 1.0)) for a in axes]}]}],
        }],
    }
    if metadata:
        group.attrs["napari_unet"] = dict(metadata)
    chunks = tuple(1 for _ in axes[:-2]) + tuple(min(CHUNK, n) for n in shape[-2:])
    array = group.create_array("0", shape=tuple(shape), dtype=np.uint32, chunks=chunks,
                               fill_value=0)
    if metadata:
        array.attrs["napari_unet"] = dict(metadata)
    return array
