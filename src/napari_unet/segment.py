"""``segment``: image array in, label array out, for any supported axes layout."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch

from .axes import Layout, fit_channels, make_layout
from .config import PostprocessConfig
from .device import memory_format, pick_device
from .errors import InvalidImageError
from .model import Model
from .normalize import channel_percentiles, normalize
from .postprocess import instance_labels, semantic_labels, smallest_uint, stitch_planes
from .progress import CancelToken, ProgressCallback, check_cancel, report
from .tiling import TileConfig, predict_plane


class Predictor:
    """A model placed on a device with its tiling settings, reused across planes."""

    def __init__(self, model: Model, device: str | torch.device = "auto", tiles: TileConfig | None = None,
                 fast: bool = True) -> None:
        self.model = model
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.tiles = tiles or TileConfig(model.config.tile_size, model.config.tile_overlap)
        self.fast = fast
        fmt = memory_format(self.device) if fast else torch.contiguous_format
        self.network = model.network.to(self.device, memory_format=fmt).eval()

    @property
    def activation(self) -> str:
        return "softmax" if self.model.config.task == "instance" else "sigmoid"

    def probabilities(self, plane: np.ndarray, progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelToken] = None) -> np.ndarray:
        """(K, Y, X) probabilities for one normalised (C, Y, X) plane."""
        return predict_plane(
            self.network, plane, activation=self.activation,
            multiple=self.model.config.network.size_multiple, tiles=self.tiles,
            device=self.device, fast=self.fast, progress=progress, cancel=cancel,
        )

    def labels(self, probs: np.ndarray, postprocess: PostprocessConfig | None = None) -> np.ndarray:
        """Labels for one plane's probabilities, with the model's post-processing by default."""
        config = postprocess or self.model.config.postprocess
        if self.model.config.task == "instance":
            return instance_labels(probs, config)
        return semantic_labels(probs, config)


@dataclass(frozen=True)
class PreparedImage:
    """An image seen as planes: its layout, canonical view and normalisation percentiles."""

    layout: Layout
    canonical: object
    percentiles: np.ndarray

    def plane(self, index: tuple[int, ...]) -> np.ndarray:
        """The normalised float32 (C, Y, X) plane at a stack index (reads lazily from dask)."""
        return normalize(np.asarray(self.canonical[index]), self.percentiles)


def prepare_image(image, model: Model, axes: str | None = None) -> PreparedImage:
    """Validate an image against a model and compute its normalisation once."""
    layout = make_layout(image, axes, model.in_channels)
    canonical = layout.to_canonical(image)
    canonical = fit_channels(canonical, model.in_channels)
    model.check_channels(canonical.shape[-3])
    percentiles = channel_percentiles(canonical, model.config.normalization, channel_axis=-3)
    return PreparedImage(layout, canonical, percentiles)


def segment(
    image,
    model: Model,
    axes: str | None = None,
    *,
    device: str = "auto",
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    batch_size: int = 1,
    postprocess: PostprocessConfig | None = None,
    stitch_3d: bool = False,
    planes: Optional[Sequence[tuple[int, ...]]] = None,
    fast: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Segment a 2D image or a stack; returns labels over its T, Z, Y, X axes (C dropped).

    Instance models give one id per object (unique over the whole stack); with
    ``stitch_3d`` objects overlapping across consecutive Z planes share one id. Semantic
    models give a class index per pixel. ``planes`` (stack indices, e.g. ``[(12,)]`` for
    Z plane 12) limits the work to those planes, normalised exactly as in a whole-stack run;
    the other planes stay 0. ``progress(done, total)`` counts tiles; ``cancel`` stops
    between tiles with :class:`~napari_unet.errors.Cancelled`.
    """
    prepared = prepare_image(image, model, axes)
    layout = prepared.layout
    tiles = TileConfig(
        tile_size or model.config.tile_size,
        model.config.tile_overlap if tile_overlap is None else tile_overlap,
        batch_size,
    )
    predictor = Predictor(model, device, tiles, fast)
    stack_shape = layout.stack_shape
    indices = _plane_indices(stack_shape, planes)
    n_planes = len(indices)
    out = np.zeros(layout.label_shape, dtype=np.uint32)
    offset = 0
    for i, index in enumerate(indices):
        check_cancel(cancel)

        def plane_progress(done: int, total: int, i: int = i) -> None:
            report(progress, i * total + done, n_planes * total)

        probs = predictor.probabilities(prepared.plane(index), plane_progress, cancel)
        labels = predictor.labels(probs, postprocess)
        if model.config.task == "instance" and labels.max() > 0:
            labels = np.where(labels > 0, labels + offset, 0)
            offset = int(labels.max())
        out[index] = labels
    if stitch_3d and model.config.task == "instance" and "Z" in layout.stack_axes:
        out = _stitch_along_z(out, layout)
    return out.astype(smallest_uint(int(out.max()) if out.size else 0), copy=False)


def _plane_indices(stack_shape: tuple[int, ...],
                   planes: Optional[Sequence[tuple[int, ...]]]) -> list[tuple[int, ...]]:
    """All stack indices, or the requested ones after checking they exist."""
    if planes is None:
        return list(np.ndindex(*stack_shape)) if stack_shape else [()]
    chosen = [tuple(int(i) for i in p) for p in planes]
    for index in chosen:
        if len(index) != len(stack_shape) or any(not 0 <= i < n for i, n in zip(index, stack_shape)):
            raise InvalidImageError(
                f"plane {index} is not in a stack of shape {stack_shape}; give one index per "
                f"stack axis, each within its range"
            )
    return chosen


def _stitch_along_z(labels: np.ndarray, layout: Layout) -> np.ndarray:
    """Stitch each Z stack (per time point when there is a T axis) into 3D objects."""
    z_axis = layout.stack_axes.index("Z")
    moved = np.moveaxis(labels, z_axis, -3)
    out = np.zeros_like(moved)
    offset = 0
    for index in np.ndindex(*moved.shape[:-3]):
        stitched = stitch_planes(moved[index])
        out[index] = np.where(stitched > 0, stitched + offset, 0)
        offset = max(offset, int(out[index].max()))
    return np.moveaxis(out, -3, z_axis)


def with_postprocess(model: Model, **changes) -> PostprocessConfig:
    """The model's post-processing config with the given fields changed; ``None`` values
    (an option the user left unset) keep the model's own value."""
    return replace(model.config.postprocess, **{k: v for k, v in changes.items() if v is not None})
