"""A user's corrections over a prediction: pasting them on top, and the training target
that stays safe when only a few objects were corrected.

A user fixes a handful of objects and leaves the rest. Training on the fixed pixels
alone (nearly all of them objects) teaches a network that everything is an object. The
target here counts the corrected and reviewed pixels and a ring of background around
them (whoever drew an object looked at its surroundings); everywhere else fine-tuning
keeps the model close to its own previous probabilities (see
:func:`~napari_unet.losses.distill_loss`), so it does not drift where the user said nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from .io import ArrayLike


@dataclass(kw_only=True)
class Correction:
    """One corrected image for fine-tuning: the image as read (2D, or a stack of which the
    planes holding corrections are used), the labels as the user left them (prediction plus
    corrections), the pixels they corrected or reviewed (``None``: all of them), and how
    the image is normalised (``None``: by its own percentiles; a plane cut from a stack
    passes the stack's (C, 2) percentiles, so it is learnt as Segment saw it) and, for an
    RGB image and a 1-channel model, made gray (``rgb``, as Segment's option)."""

    image: ArrayLike
    labels: np.ndarray
    mask: Optional[np.ndarray] = None
    percentiles: Optional[np.ndarray] = None
    #: The image's axes (as for ``segment``); ``None``: guessed from its shape.
    axes: Optional[str] = None
    name: str = "image"
    rgb: str = "auto"

    @property
    def n_supervised(self) -> int:
        """Pixels the correction supervises."""
        if self.mask is None:
            return int(np.asarray(self.labels).size)
        return int(np.count_nonzero(self.mask))


def paste_corrections(prediction: np.ndarray, corrected: np.ndarray,
                      mask: np.ndarray) -> np.ndarray:
    """``prediction`` (labels) with the corrections of ``corrected`` inside ``mask`` on top.

    Objects of ``corrected`` that the mask touches are pasted whole, with the ids the user
    gave them when no remaining predicted object has any of those ids (their colours stay),
    else all with fresh ids above the prediction's; mask pixels that are background in
    ``corrected`` (erased) become background. A predicted object that loses at least half
    of its area to the paste is removed (it is the object the user redrew). Returns uint32
    labels.
    """
    pred = np.asarray(prediction)
    corr = np.asarray(corrected)
    mask = np.asarray(mask, dtype=bool)
    out = pred.astype(np.uint32, copy=True)
    ids = np.unique(corr[mask])
    ids = ids[ids > 0]
    objects = np.isin(corr, ids) if ids.size else np.zeros(corr.shape, bool)
    covered = objects | (mask & (corr == 0))
    if not covered.any():
        return out
    area = np.bincount(out.ravel())
    lost = np.bincount(out[covered], minlength=area.size)
    gone = np.flatnonzero((lost * 2 >= area) & (area > 0))
    gone = gone[gone > 0]
    if gone.size:
        out[np.isin(out, gone)] = 0
    out[covered] = 0
    if ids.size:
        if np.isin(ids, out).any():
            first = int(out.max(initial=0)) + 1
            out[objects] = first + np.searchsorted(ids, corr[objects]).astype(np.uint32)
        else:
            out[objects] = corr[objects]
    return out


@dataclass(frozen=True)
class TargetOptions:
    """Which pixels around the corrections count as ground truth."""

    #: Width of the background ring around corrections that counts fully, as a fraction of
    #: the objects' diameter (at least 2 pixels).
    context: float = 0.25


def correction_target(anchor: np.ndarray, corrected: np.ndarray, mask: np.ndarray,
                      diameter: float | None, options: TargetOptions = TargetOptions(),
                      instances: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(labels, weight) to train on for one corrected plane.

    ``anchor`` is what the model being tuned predicts for the plane; the corrections inside
    ``mask`` are pasted over it (as objects for instance labels, pixel by pixel for class
    maps), so the background ring does not claim predicted neighbours. The weight is 1 on
    the mask plus the ring, 0 elsewhere.
    """
    mask = np.asarray(mask, dtype=bool)
    if instances:
        labels = paste_corrections(anchor, corrected, mask)
    else:
        labels = np.where(mask, np.asarray(corrected), np.asarray(anchor))
    width = max(2.0, options.context * (diameter or 0.0))
    near = ndi.distance_transform_edt(~mask) <= width if mask.any() else mask
    return labels, (mask | (near & (labels == 0))).astype(np.float32)
