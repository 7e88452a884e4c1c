"""3D objects from a 2D network: the class probabilities of every Z plane are stacked and
the objects are built in 3D, instead of joining finished 2D labels plane by plane.

The interior probability is smoothed with the voxel size (planes 2.18 times farther apart
than pixels are smoothed 2.18 times less along Z), seeds are its confident parts connected
in 3D, and a 3D seeded watershed grows them over the predicted foreground. Joining 2D
labels instead splits an object wherever one plane misses it and merges objects stacked
in Z whenever their cross-sections overlap; the 3D seeds see the whole stack at once.

Memory: while a stack is segmented its background and interior probabilities are kept as
``uint8`` (2 bytes per voxel); the 3D step then needs about 30 bytes per voxel of one Z
stack. Stacks of up to :data:`MAX_VOXELS` voxels take this path (also when the labels are
written out of core, ``segment(..., out=...)``); larger ones, and stacks split over the
workers of a distributed batch, are joined plane by plane as before, with a
:class:`~napari_unet.errors.PlaneByPlaneWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from .axes import Layout
from .blocks import Box, ProbabilitySink
from .config import PostprocessConfig
from .errors import PlaneByPlaneWarning
from .io import ImageData
from .options import SegmentOptions
from .postprocess import remove_small

#: Most voxels (all planes of the labels, every time point) the 3D step takes: 2**27, e.g.
#: 512 planes of 512 x 512, about 256 MiB of kept probabilities and 4 GiB for the 3D step.
MAX_VOXELS = 2**27
#: Smoothing of the interior probability before seeds, in Y/X pixels (Gaussian sigma);
#: Z is smoothed by this times the Y/X size over the Z size of a voxel.
SMOOTHING = 1.0
_LEVELS = 255  # probabilities are kept as uint8 steps of 1/255


class StackProbabilities:
    """The background and interior probabilities of every plane of the labels, as
    ``uint8``; a :data:`~napari_unet.blocks.ProbabilitySink` for ``segment``. Planes never
    predicted stay background."""

    def __init__(self, label_shape: Sequence[int]) -> None:
        self.background = np.full(tuple(label_shape), _LEVELS, dtype=np.uint8)
        self.interior = np.zeros(tuple(label_shape), dtype=np.uint8)

    def __call__(self, index: tuple[int, ...], box: Box, probs: np.ndarray) -> None:
        where = index + box
        self.background[where] = np.rint(probs[0] * _LEVELS)
        self.interior[where] = np.rint(probs[1] * _LEVELS)


def stack_probabilities(layout: Layout) -> Optional[StackProbabilities]:
    """A store for the 3D step of an image of ``layout``, or None, with a
    :class:`~napari_unet.errors.PlaneByPlaneWarning`, when it has more voxels than
    :data:`MAX_VOXELS` and its objects are joined plane by plane instead."""
    voxels = int(np.prod(layout.label_shape))
    if voxels <= MAX_VOXELS:
        return StackProbabilities(layout.label_shape)
    warn_plane_by_plane(f"it has {voxels:,} voxels, more than the {MAX_VOXELS:,} the 3D "
                        "step holds; crop it for objects built in 3D")
    return None


def warn_plane_by_plane(why: str) -> None:
    """Say that a stack asked for 3D objects gets them joined plane by plane, and why."""
    warnings.warn(PlaneByPlaneWarning(
        f"the objects of this stack are joined plane by plane, not built in 3D: {why}"),
        stacklevel=3)


def both(first: Optional[ProbabilitySink], second: Optional[ProbabilitySink]
         ) -> Optional[ProbabilitySink]:
    """One probability sink feeding ``first`` and ``second`` (either may be None)."""
    if first is None or second is None:
        return first or second

    def sink(index: tuple[int, ...], box: Box, probs: np.ndarray) -> None:
        first(index, box, probs)
        second(index, box, probs)

    return sink


def objects_3d(background: np.ndarray, interior: np.ndarray, config: PostprocessConfig,
               voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Labels (uint32, ids 1..N) of one (Z, Y, X) stack from its ``uint8`` background and
    interior probabilities, with the model's thresholds; ``min_size`` counts voxels."""
    foreground = background < (1.0 - config.foreground_threshold) * _LEVELS
    sizes = np.asarray(voxel_size, dtype=float)
    sigma = SMOOTHING * min(sizes[1], sizes[2]) / sizes
    smooth = ndi.gaussian_filter(interior.astype(np.float32) / _LEVELS, sigma)
    seeds, _ = ndi.label(smooth > config.seed_threshold)
    seeds = remove_small(seeds, config.min_seed_size)
    labels = watershed(-smooth, seeds, mask=foreground | (seeds > 0))
    return remove_small(labels, config.min_size)


def label_stacks(target: np.ndarray, store: StackProbabilities, layout: Layout,
                 config: PostprocessConfig, voxel_size: Optional[Sequence[float]]) -> int:
    """Write the 3D objects of each Z stack (per time point when there is a T axis) into
    ``target``, ids unique over all; returns the largest id."""
    z_axis = layout.stack_axes.index("Z")
    outer = [n for k, n in enumerate(layout.stack_shape) if k != z_axis]
    offset = 0
    for outer_index in np.ndindex(*outer):
        where = outer_index[:z_axis] + (slice(None),) + outer_index[z_axis:]
        labels = objects_3d(store.background[where], store.interior[where], config,
                            voxel_size or (1.0, 1.0, 1.0))
        target[where] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max(initial=0))
    return offset


def file_voxel_size(options: SegmentOptions, image: ImageData, layout: Layout) -> SegmentOptions:
    """``options`` with the file's voxel size when they give none and the file's
    calibration has a Z, Y and X size."""
    sizes = dict(zip([a for a in layout.axes if a in "ZYX"], image.pixel_size or ()))
    if options.voxel_size is not None or len(sizes) != 3:
        return options
    return SegmentOptions.of(options, voxel_size=(sizes["Z"], sizes["Y"], sizes["X"]))
