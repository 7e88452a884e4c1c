"""``segment``: image array in, label array out, for any supported axes layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import numpy as np
import torch

from .axes import Layout, fit_channels, make_layout, rgb_conversion
from .blocks import ProbabilitySink, segment_plane
from .color import RgbConversion
from .config import PostprocessConfig
from .device import default_batch, pick_device
from .domain import resize_plane, scaled_shape
from .errors import InvalidImageError, InvalidLabelsError
from .fastpath import inference_network
from .io import ArrayLike, smallest_uint
from .model import Model
from .normalize import channel_percentiles, normalize
from .options import SegmentOptions
from .postprocess import PlaneStitcher, instance_labels, semantic_labels
from .progress import CancelToken, ProgressCallback, check_cancel, report
from .tiling import TileConfig, count_tiles, predict_plane
from .volume import both, label_stacks, stack_probabilities


class Predictor:
    """A model placed on a device with its tiling settings, reused across planes."""

    def __init__(self, model: Model, device: str | torch.device = "auto", tiles: TileConfig | None = None,
                 fast: bool = True, compile: bool = False,  # noqa: A002 (torch.compile)
                 tta: bool = False) -> None:
        self.model = model
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.tiles = tiles or TileConfig(model.config.tile_size, model.config.tile_overlap)
        self.fast = fast
        self.network = inference_network(model.network, self.device, fast, compile)
        #: The mirror images each plane is predicted as (test-time augmentation), as axes
        #: to flip: the plane itself only, or all four mirrors of it.
        self.mirrors: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if tta else [()]

    @property
    def activation(self) -> str:
        return "softmax" if self.model.config.task == "instance" else "sigmoid"

    def probabilities(self, plane: np.ndarray, progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelToken] = None) -> np.ndarray:
        """(K, Y, X) probabilities for one normalised (C, Y, X) plane; with a model whose
        ``input_scale`` is not 1 the plane is resized for the network and the result back.
        With test-time augmentation, the mean over the mirrored planes, mirrored back."""
        scale = self.model.config.input_scale
        shape = plane.shape[-2:]
        if scale != 1.0:
            plane = resize_plane(plane, scaled_shape(shape, scale))
        n = len(self.mirrors)
        probs = self._mirrored(plane, self.mirrors[0], 0, progress, cancel)
        for k, axes in enumerate(self.mirrors[1:], 1):
            probs += self._mirrored(plane, axes, k, progress, cancel)
        if n > 1:
            probs /= n
        return resize_plane(probs, shape) if scale != 1.0 else probs

    def _mirrored(self, plane: np.ndarray, axes: tuple[int, ...], k: int,
                  progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> np.ndarray:
        """The probabilities of ``plane`` mirrored along ``axes``, mirrored back; progress
        counts this pass as the ``k``-th of the mirrors."""
        n = len(self.mirrors)

        def pass_progress(done: int, total: int) -> None:
            report(progress, k * total + done, n * total)

        seen = np.ascontiguousarray(np.flip(plane, axes)) if axes else plane
        out = predict_plane(
            self.network, seen, activation=self.activation,
            multiple=self.model.config.network.size_multiple, tiles=self.tiles,
            device=self.device, fast=self.fast, progress=pass_progress, cancel=cancel,
        )
        return np.ascontiguousarray(np.flip(out, axes)) if axes else out

    def count_tiles(self, shape: tuple[int, int]) -> int:
        """Tiles one plane (or block) of ``shape`` takes, for progress totals."""
        shape = scaled_shape(shape, self.model.config.input_scale)
        return len(self.mirrors) * count_tiles(shape, self.tiles, self.model.config.network.size_multiple)

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
    canonical: Any  # a numpy or dask array
    percentiles: np.ndarray
    invert: bool = False
    #: How an RGB image was made gray for a 1-channel model (None: no conversion).
    conversion: RgbConversion | None = None

    def plane(self, index: tuple[int, ...], box: tuple[slice, slice] = (slice(None),) * 2
              ) -> np.ndarray:
        """The normalised float32 (C, Y, X) plane at a stack index, or its ``box`` region;
        only that region is read from a lazy (dask) image."""
        return normalize(np.asarray(self.canonical[index + (slice(None),) + box]), self.percentiles,
                         self.invert)


def prepare_image(image: ArrayLike, model: Model, axes: str | None = None,
                  percentiles: np.ndarray | None = None, rgb: str = "auto") -> PreparedImage:
    """Validate an image against a model and compute its normalisation once (unless
    ``percentiles``, one (low, high) row per channel, are given); ``rgb`` is the colour
    conversion for RGB input to a 1-channel model (:mod:`napari_unet.color`)."""
    layout = make_layout(image, axes, model.in_channels)
    canonical = layout.to_canonical(image)
    conversion = rgb_conversion(canonical, model.in_channels, rgb)
    canonical = fit_channels(canonical, model.in_channels, conversion or rgb)
    model.check_channels(canonical.shape[-3])
    if percentiles is None:
        percentiles = channel_percentiles(canonical, model.config.normalization, channel_axis=-3)
    elif np.shape(percentiles) != (canonical.shape[-3], 2):
        raise InvalidImageError(
            f"percentiles need one (low, high) row per channel, shape "
            f"({canonical.shape[-3]}, 2); got shape {np.shape(percentiles)}"
        )
    return PreparedImage(layout, canonical, np.asarray(percentiles, dtype=np.float64),
                         model.config.normalization.invert, conversion)


def segment(
    image: ArrayLike,
    model: Model,
    axes: str | None = None,
    options: SegmentOptions | None = None,
    *,
    planes: Optional[Sequence[tuple[int, ...]]] = None,
    out=None,
    percentiles: np.ndarray | None = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    on_probabilities: Optional[ProbabilitySink] = None,
    **choices: Any,
):
    """Segment a 2D image or a stack; returns labels over its T, Z, Y, X axes (C dropped).

    ``options`` (:class:`~napari_unet.options.SegmentOptions`) say how: device, tiles,
    post-processing overrides, object size, 3D stitching, blocks. ``choices`` are its field
    names as a shorthand, changing ``options`` for this call
    (``segment(image, model, "YX", device="cpu")``); an unknown name raises
    :class:`~napari_unet.errors.InvalidSettingError`.

    Instance models give one id per object (unique over the whole stack); with
    ``stitch_3d`` the objects are built in 3D from the stacked probabilities of the planes,
    with ``options.voxel_size`` (:mod:`napari_unet.volume`; a stack too large for that is
    joined plane by plane, with a warning). Semantic
    models give a class index per pixel. ``planes`` (stack indices, e.g. ``[(12,)]`` for
    Z plane 12) limits the work to those planes, normalised exactly as in a whole-stack run;
    the other planes stay 0. Planes larger than ``blocks.block`` are processed block by
    block (see :mod:`napari_unet.blocks`), so memory is bounded by one block.
    ``out`` (optional) is a zero-filled integer array of the labels' shape, e.g. a zarr
    array on disk, written plane region by plane region and returned: with a lazy (dask)
    image this segments data larger than memory. Without it a numpy array in the smallest
    unsigned dtype is returned. ``percentiles`` (from :func:`prepare_image`) normalise
    with values computed once elsewhere, e.g. for planes of one volume segmented by
    separate workers. ``progress(done, total)`` counts tiles; ``cancel`` stops
    between tiles with :class:`~napari_unet.errors.Cancelled`.
    ``on_probabilities(index, box, probs)`` receives the class probabilities the labels were
    made from, block by block (``box``: the block in plane coordinates), from the same
    network pass: e.g. a :class:`napari_unet.guidance.ProbabilityStore` keeps them for
    :func:`napari_unet.guidance.guide`.
    """
    options = SegmentOptions.of(options, **choices)
    if options.object_size is not None:
        model = model.for_object_size(options.object_size)
    prepared = prepare_image(image, model, axes, percentiles, options.rgb)
    layout = prepared.layout
    torch_device = pick_device(options.device)
    size = options.tile_size or model.config.tile_size
    overlap = model.config.tile_overlap if options.tile_overlap is None else options.tile_overlap
    if options.tile_overlap is None and overlap >= size:
        overlap = size // 4  # the model's overlap does not fit a tile this small
    tiles = TileConfig(
        size, overlap,
        options.batch_size or default_batch(torch_device),
        adaptive=options.tile_size is None,
    )
    predictor = Predictor(model, torch_device, tiles, options.fast, options.compile, options.tta)
    postprocess = options.postprocess(model.config.postprocess)
    indices = _plane_indices(layout.stack_shape, planes)
    target = np.zeros(layout.label_shape, dtype=np.uint32) if out is None else _check_out(out, layout)
    instance = model.config.task == "instance"
    three_d = options.stitch_3d and instance and "Z" in layout.stack_axes
    volume = stack_probabilities(layout) if three_d else None
    offset = 0
    for i, index in enumerate(indices):
        check_cancel(cancel)

        def plane_progress(done: int, total: int, i: int = i) -> None:
            report(progress, i * total + done, len(indices) * total)

        offset = segment_plane(
            partial(prepared.plane, index), layout.label_shape[-2:],
            predictor.probabilities, lambda probs: predictor.labels(probs, postprocess),
            target, index, instance=instance, offset=offset, blocks=options.blocks,
            context=tiles.overlap, tiles_per_region=predictor.count_tiles,
            progress=plane_progress, cancel=cancel,
            on_probabilities=both(on_probabilities, volume),
        )
    if volume is not None:
        offset = label_stacks(target, volume, layout, postprocess, options.voxel_size)
    elif three_d:
        offset = stitch_along_z(target, layout)
    if out is not None:
        return out
    return target.astype(smallest_uint(offset if instance else int(target.max(initial=0))),
                         copy=False)


def _check_out(out, layout: Layout):
    """``out`` if it can hold the labels, else an error naming the shape and dtype to use."""
    shape, dtype = tuple(getattr(out, "shape", ())), np.dtype(getattr(out, "dtype", object))
    if shape != layout.label_shape or dtype.kind not in "ui" or dtype.itemsize < 4:
        raise InvalidLabelsError(
            f"out has shape {shape} and dtype {dtype}, but the labels of this image need "
            f"shape {layout.label_shape} (axes {layout.label_axes}) and a 32- or 64-bit "
            f"integer dtype; create it with that shape and dtype uint32, filled with 0"
        )
    return out


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


def stitch_along_z(labels, layout: Layout) -> int:
    """Stitch each Z stack (per time point when there is a T axis) into 3D objects, in
    place and one plane at a time; returns the largest id."""
    z_axis = layout.stack_axes.index("Z")
    outer = [n for k, n in enumerate(layout.stack_shape) if k != z_axis]
    next_id = 1
    for outer_index in np.ndindex(*outer):
        stitcher = PlaneStitcher(first_id=next_id)
        for z in range(layout.stack_shape[z_axis]):
            index = outer_index[:z_axis] + (z,) + outer_index[z_axis:]
            labels[index] = stitcher.add(np.asarray(labels[index]))
        next_id = stitcher.next_id
    return next_id - 1
