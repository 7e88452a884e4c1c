"""Zarr and OME-Zarr: lazy image reading, and label volumes written region by region.

A zarr store is a folder of compressed chunks, so labels larger than memory can be
written block by block and images larger than memory read the same way. Labels are
written as an OME-Zarr 0.5 image (a zarr v3 group with one resolution level ``"0"`` and
NGFF ``multiscales`` metadata: axes, units, pixel size), which napari (napari-ome-zarr),
Fiji (OME-Zarr readers) and Python (``zarr.open``, ``dask.array.from_zarr``) open.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import zarr

from .atomic import PathLike
from .axes import guess_axes
from .errors import CalibrationWarning, ImageReadError, InvalidLabelsError
from .tiff_io import ImageData, clean_calibration

NGFF_VERSION = "0.5"
#: Chunk side of label output in Y and X (one plane deep for stacks).
CHUNK = 1024

_NGFF_UNITS = {"um": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter",
               "m": "meter", "inch": "inch"}
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
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise ImageReadError(
            f"{str(p)!r} is not a readable zarr store ({type(exc).__name__}: {exc}); "
            "check that the folder is complete, or export the image as TIFF"
        ) from exc
    axes, scale, units, unit = "", None, {}, None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("ome", attrs).get("multiscales")
        if multiscales:
            axes, scale, units, node = _ngff_level0(node, multiscales[0], p)
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
    return ImageData(data=da.from_zarr(node), axes=axes, pixel_size=pixel_size, unit=unit,
                     source=os.fspath(p), metadata=dict(node.attrs.get("napari_unet", {})))


def _ngff_level0(group: Any, multiscale: Mapping[str, Any], p: Path):
    """(axes, scale, units by axis, array) of the first dataset of an NGFF multiscale."""
    names = [(a["name"] if isinstance(a, Mapping) else str(a)).upper() for a in multiscale["axes"]]
    if not set(names) <= set(_AXIS_TYPES):
        raise ImageReadError(f"{str(p)!r} has axes {names} that napari-unet does not know; "
                             "it reads t, c, z, y and x")
    units = {name: a.get("unit") for name, a in zip(names, multiscale["axes"])
             if isinstance(a, Mapping) and name in "ZYX"}
    dataset = multiscale["datasets"][0]
    scale = None
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = transform["scale"]
    return "".join(names), scale, units, group[dataset["path"]]


def _zarr_calibration(axes: str, scale: Any, units: Mapping[str, Any], p: Path):
    """(pixel size, unit) from an NGFF scale: read as far as it can be, see
    :func:`napari_unet.tiff_io.clean_calibration` (units keep their canonical name, so a
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
    be empty or new; pair it with :func:`napari_unet.atomic.atomic_folder`).

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
    ngff_unit = _NGFF_UNITS.get(unit or "um")
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
