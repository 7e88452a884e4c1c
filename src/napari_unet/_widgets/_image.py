"""From a napari Image layer to what the core expects: an array, its axes, its planes.

Qt-free and napari-free: it works on the layer's ``data``, ``rgb`` and ``metadata``, so
the same rules hold in tests without a viewer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .._reader import META_KEY
from ..axes import Layout, make_layout
from ..errors import InvalidImageError


def layer_axes(shape: tuple[int, ...], rgb: bool, metadata: Optional[Mapping[str, Any]]) -> str:
    """Axes of a layer's data: from napari-unet's reader metadata, else napari's conventions.

    napari puts the displayed Y, X last; leading dimensions are stacks (Z, then T before
    it); an RGB(A) layer has its colour axis last.
    """
    ndim = len(shape)
    meta = (metadata or {}).get(META_KEY, {}) if isinstance(metadata, Mapping) else {}
    axes = meta.get("axes") if isinstance(meta, Mapping) else None
    if isinstance(axes, str) and len(axes) == ndim:
        return axes.upper()
    spatial = ndim - 1 if rgb else ndim
    if spatial < 2:
        raise InvalidImageError(f"a layer of shape {shape} has no Y and X axes to segment")
    if spatial > 4:
        raise InvalidImageError(
            f"a {spatial}D layer cannot be segmented: napari-unet takes at most T, Z, Y, X "
            f"(plus channels); reduce the dimensions first"
        )
    stack = "TZ"[2 - (spatial - 2):] if spatial > 2 else ""
    return stack + "YX" + ("C" if rgb else "")


@dataclass(frozen=True)
class LayerImage:
    """An image array ready for a model: data (possibly lazy) and its axes."""

    data: Any
    axes: str

    @property
    def layout(self) -> Layout:
        return make_layout(self.data, self.axes)

    @property
    def label_shape(self) -> tuple[int, ...]:
        return self.layout.label_shape

    @property
    def stack_axes(self) -> str:
        return self.layout.stack_axes

    @property
    def plane_axes(self) -> str:
        """Axes of one plane (stack axes removed), e.g. ``"YX"`` or ``"YXC"``."""
        return "".join(a for a in self.axes if a not in "TZ")

    def plane_image(self, index: tuple[int, ...]) -> np.ndarray:
        """The plane at a stack index with its own axes (:attr:`plane_axes`), as NumPy."""
        key: list[Any] = []
        stack = iter(index)
        for axis in self.axes:
            key.append(next(stack) if axis in "TZ" else slice(None))
        return np.asarray(self.data[tuple(key)])

    def plane_cyx(self, index: tuple[int, ...]) -> np.ndarray:
        """The plane at a stack index as a (C, Y, X) NumPy array (C = 1 without channels)."""
        plane = self.plane_image(index)
        order = [self.plane_axes.index(a) for a in "CYX" if a in self.plane_axes]
        plane = plane.transpose(order)
        return plane if "C" in self.plane_axes else plane[np.newaxis]


def layer_image(data: Any, rgb: bool, metadata: Optional[Mapping[str, Any]]) -> LayerImage:
    """The image of a layer with its axes, as the core takes it.

    Colour (RGB/RGBA) layers pass as they are: the core turns them gray for one-channel
    models, exactly as in training.
    """
    image = LayerImage(data, layer_axes(tuple(data.shape), rgb, metadata))
    image.layout  # noqa: B018 - the property validates axes against the shape now, with a clear message
    return image


def scale_axes(axes: str, rgb: bool) -> str:
    """Axes of the layer's ``scale``/``translate``: an RGB layer's exclude its colour axis."""
    return axes.replace("C", "") if rgb else axes


def spatial_positions(axes: str, rgb: bool) -> list[int]:
    """Positions in the layer's ``scale``/``translate`` of the axes the labels keep.

    An RGB layer's scale already excludes the colour axis; any other C axis is dropped.
    """
    return [i for i, a in enumerate(scale_axes(axes, rgb)) if a != "C"]
