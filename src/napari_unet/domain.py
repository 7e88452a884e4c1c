"""What labelled objects tell about an image domain: their size and their polarity.

Training records both for the data a model learnt from (``object_diameter``,
``object_polarity`` in its config). Fine-tuning measures them again on the user's
corrected objects, so a model meets new images as it learnt its own: resized so objects
have the diameter it knows, and inverted when objects are dark on a light background
(stained or bright-field nuclei) instead of bright on dark (fluorescence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

Polarity = Literal["bright", "dark"]

#: Below this difference of medians (in normalised units, where the 1-99.8 percentile
#: range spans 1) the polarity is left undecided.
MIN_CONTRAST = 0.05
#: Objects needed before a size is trusted enough to rescale images for it.
MIN_OBJECTS_FOR_SIZE = 3
#: A corrected object whose outline touches other objects along more than this share is a
#: piece of one (an outline painted back with the brush's new label), not an object: its
#: size says nothing about the objects' size. 5% of the nuclei of dsb2018_fluo/test touch
#: their neighbours that much; outlines painted back touch their object along 38-62%.
MAX_SHARED_OUTLINE = 0.3
#: Rescale only when the measured size differs from the trained one by more than this factor
#: (models see a range of sizes in training: dsb2018_fluo's nuclei span ~10-40 px).
SIZE_TOLERANCE = 1.5
#: Scale factors are kept within these bounds (4x larger or smaller objects at most).
SCALE_RANGE = (0.25, 4.0)


@dataclass(frozen=True)
class DomainEstimate:
    """Size and polarity of a set of labelled objects (``None`` where undecided)."""

    #: The whole objects whose size was measured.
    n_objects: int
    diameter: Optional[float]
    polarity: Optional[Polarity]
    contrast: float


def supervised_objects(labels: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Ids of the objects with at least half of their pixels in ``mask`` (all without one)."""
    labels = np.asarray(labels)
    ids, total = np.unique(labels, return_counts=True)
    if mask is None:
        return ids[ids > 0]
    inside = np.bincount(labels[np.asarray(mask, bool)].ravel().astype(np.int64),
                         minlength=int(ids.max(initial=0)) + 1)[ids]
    keep = (ids > 0) & (inside * 2 >= total)
    return ids[keep]


def shared_outline(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """For each of ``ids`` (sorted), the share of its outline (the pixel edges between it
    and other labels) along which it touches another object rather than the background."""
    labels = np.asarray(labels)
    index = np.searchsorted(ids, labels)
    index[(index >= ids.size) | (ids[np.minimum(index, ids.size - 1)] != labels)] = ids.size
    edges = np.zeros(ids.size + 1)
    shared = np.zeros(ids.size + 1)
    for axis in range(labels.ndim):
        n = labels.shape[axis]
        low = tuple(slice(0, n - 1) if k == axis else slice(None) for k in range(labels.ndim))
        high = tuple(slice(1, n) if k == axis else slice(None) for k in range(labels.ndim))
        for own, other in ((low, high), (high, low)):
            boundary = labels[own] != labels[other]
            where = index[own][boundary]
            edges += np.bincount(where, minlength=ids.size + 1)
            shared += np.bincount(where, weights=labels[other][boundary] > 0, minlength=ids.size + 1)
    return np.divide(shared[:-1], edges[:-1], out=np.zeros(ids.size), where=edges[:-1] > 0)


def _diameters(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    areas = np.bincount(labels.ravel().astype(np.int64))[ids]
    return 2.0 * np.sqrt(areas / np.pi)


def estimate(planes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             masks: Optional[Sequence[Optional[np.ndarray]]] = None) -> DomainEstimate:
    """Size and polarity from normalised (C, Y, X) planes and their labels.

    Only objects mostly inside ``masks`` (the pixels a user corrected or reviewed) count,
    and for the size only whole ones, not pieces painted onto another object
    (:data:`MAX_SHARED_OUTLINE`). Polarity compares the median intensity inside those
    objects with the median of a ring of background around them (what a user who drew an
    object also looked at).
    """
    masks = list(masks) if masks is not None else [None] * len(planes)
    diameters, inside, outside = [], [], []
    for plane, lab, mask in zip(planes, labels, masks):
        lab = np.asarray(lab)
        ids = supervised_objects(lab, mask)
        if not len(ids):
            continue
        sizes = _diameters(lab, ids)
        diameters.append(sizes[shared_outline(lab, ids) <= MAX_SHARED_OUTLINE])
        gray = np.asarray(plane, dtype=np.float32).mean(axis=0)
        objects = np.isin(lab, ids)
        radius = max(2, int(round(float(np.median(sizes)) / 2)))
        ring = ndi.binary_dilation(objects, iterations=radius) & (lab == 0)
        inside.append(gray[objects])
        outside.append(gray[ring])
    if not inside:
        return DomainEstimate(0, None, None, 0.0)
    all_d = np.concatenate(diameters)
    contrast = 0.0
    polarity: Optional[Polarity] = None
    ins, outs = np.concatenate(inside), np.concatenate(outside)
    if ins.size and outs.size:
        contrast = float(np.median(ins) - np.median(outs))
        if abs(contrast) >= MIN_CONTRAST:
            polarity = "bright" if contrast > 0 else "dark"
    diameter = float(np.median(all_d)) if all_d.size else None
    return DomainEstimate(int(all_d.size), diameter, polarity, contrast)


def scale_for(trained_diameter: Optional[float], found: DomainEstimate) -> Optional[float]:
    """The input scale that brings the objects found to the trained diameter: 1 when they
    are close to it already, ``None`` when too few objects were found to tell."""
    if (trained_diameter is None or found.diameter is None
            or found.n_objects < MIN_OBJECTS_FOR_SIZE):
        return None
    scale = trained_diameter / found.diameter
    if 1 / SIZE_TOLERANCE <= scale <= SIZE_TOLERANCE:
        return 1.0
    return float(np.clip(scale, *SCALE_RANGE))


def scaled_shape(shape: Sequence[int], scale: float) -> tuple[int, int]:
    """A (Y, X) shape resized by ``scale`` (at least one pixel per side)."""
    return tuple(max(1, int(round(s * scale))) for s in shape[-2:])  # type: ignore[return-value]


def resize_plane(plane: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A float (C, Y, X) array resized to ``shape`` (Y, X): bilinear, anti-aliased when shrinking."""
    if tuple(plane.shape[-2:]) == tuple(shape):
        return plane
    x = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None]
    shrink = shape[0] < plane.shape[-2] or shape[1] < plane.shape[-1]
    out = F.interpolate(x, size=tuple(int(s) for s in shape), mode="bilinear",
                        align_corners=False, antialias=shrink)
    return out[0].numpy()


def resize_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Labels (or a mask) resized to ``shape`` (Y, X) by nearest neighbour."""
    labels = np.asarray(labels)
    if tuple(labels.shape[-2:]) == tuple(shape):
        return labels
    rows = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[-2] / shape[0],
                      labels.shape[-2] - 1).astype(np.int64)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[-1] / shape[1],
                      labels.shape[-1] - 1).astype(np.int64)
    return labels[..., rows[:, None], cols[None, :]]
