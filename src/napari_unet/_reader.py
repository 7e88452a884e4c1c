"""napari reader: TIFF / OME-TIFF / ImageJ files and (OME-)Zarr stores as layers with
their axes and pixel size. Large TIFFs and every zarr store open lazily (dask), so napari
loads only the planes it shows.

Multichannel images open as one layer per channel (``channel_axis``); RGB(A) pictures
open as one colour layer. The pixel size becomes the layer scale, so measurements and
the labels made later stay calibrated. Label images written by napari-unet open as
Labels layers again. No Qt here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, Optional

from .errors import NapariUnetError
from .io import ImageData, clean_calibration, image_stem, is_zarr, read_image
from .io.units import UNITS

#: Key under which napari-unet keeps its own facts in a layer's ``metadata``.
META_KEY = "napari_unet"
SUFFIXES = (".tif", ".tiff")
#: A TIFF that names no axes and holds this many planes opens as channels, not a z-stack:
#: napari users expect a few planes to be the colours of one picture (a CYX export), and a
#: z-stack has more. The Segment widget's Axes field overrides the guess.
GUESSED_CHANNELS = range(2, 5)


def get_reader(path: Any) -> Optional[Callable[[Any], list]]:
    """npe2 reader hook: a reader function for one TIFF file or zarr folder, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    if not str(path).lower().endswith(SUFFIXES) and not is_zarr(path):
        return None
    return read_layers


def read_layers(path: Any) -> list[tuple]:
    """Read ``path`` into napari layer data tuples; a bad file raises a clear error."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    return image_layer_data(_channels_guessed(read_image(path)), image_stem(path))


def _channels_guessed(image: ImageData) -> ImageData:
    """A file without axes whose few planes (:data:`GUESSED_CHANNELS`) are read as a Z stack
    is channels instead: ``CYX``, with the pixel size of Y and X only."""
    if (image.axes_declared or image.axes != "ZYX" or image.metadata.get("kind") == "labels"
            or image.data.shape[0] not in GUESSED_CHANNELS):
        return image
    size = image.pixel_size
    return dataclasses.replace(image, axes="CYX",
                               pixel_size=size[1:] if size and len(size) == 3 else size)


def _is_rgb(image: ImageData) -> bool:
    axes, shape = image.axes, image.data.shape
    return axes.endswith("C") and shape[-1] in (3, 4) and str(image.data.dtype) == "uint8"


def _geometry(image: ImageData, axes: str) -> dict[str, Any]:
    """Scale and units for the non-channel axes in ``axes``: pixel size for Z/Y/X, 1 for T.

    The pixel size goes through :func:`~napari_unet.io.units.clean_calibration` again, as
    an :class:`ImageData` may come from elsewhere than :func:`read_image`: a NaN, infinite,
    zero or negative size (which would mirror or collapse the layer) is dropped with a
    :class:`~napari_unet.errors.CalibrationWarning`, as when a file is read."""
    spatial = [a for a in image.axes if a in "ZYX"]
    raw = {a: (size, image.unit) for a, size in zip(spatial, image.pixel_size or ())}
    pixel_size = clean_calibration(raw, image.axes, image.source, micrometres=False)[0]
    sizes = dict(zip(spatial, pixel_size or ()))
    kept = [a for a in axes if a != "C"]
    kwargs: dict[str, Any] = {"scale": [float(sizes.get(a, 1.0)) for a in kept]}
    known = UNITS.get(image.unit or "")
    unit = known.napari if known is not None else None  # a name napari (pint) accepts
    if unit is not None:
        kwargs["units"] = [unit if a in "ZYX" else "pixel" for a in kept]
    return kwargs


def image_layer_data(image: ImageData, name: str) -> list[tuple]:
    """Layer data tuples for an :class:`ImageData` (shared by the reader and sample data)."""
    axes = image.axes
    meta: dict[str, Any] = {
        "axes": axes,
        "source": image.source,
        "pixel_size": list(image.pixel_size) if image.pixel_size else None,
        "unit": image.unit,
    }
    if image.metadata.get("kind") == "labels" and "C" not in axes:
        meta["provenance"] = image.metadata
        kwargs = {"name": name, "metadata": {META_KEY: meta}, **_geometry(image, axes)}
        return [(image.data, kwargs, "labels")]
    kwargs = {"name": name, **_geometry(image, axes)}
    if "C" in axes and _is_rgb(image):
        kwargs["rgb"] = True
    elif "C" in axes:
        c = axes.index("C")
        n = image.data.shape[c]
        kwargs["channel_axis"] = c
        kwargs["name"] = [f"{name} ch{i}" for i in range(n)]
        kwargs["blending"] = "additive"
        meta = {**meta, "axes": axes.replace("C", ""), "channel_axes": axes}
    kwargs["metadata"] = {META_KEY: meta}
    return [(image.data, kwargs, "image")]


__all__ = ["META_KEY", "get_reader", "read_layers", "image_layer_data", "NapariUnetError"]
