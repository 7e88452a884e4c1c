"""Segmentation metrics: instance matching by IoU, pixel scores and the adapted Rand error.

Pure numpy/scipy/scikit-image; no torch, no napari.

Conventions
-----------
* Label images: ``0`` is background, any positive integer is an object id. Ids need not be
  consecutive. Bad input raises :class:`~napari_unet.errors.InvalidLabelsError`.
* Instance matching counts a true/predicted pair as a match when ``IoU >= threshold``
  (the StarDist convention). The matching is one-to-one and maximises the number of
  matches (ties broken by the larger total IoU), so it is also correct below 0.5.
* Ratios whose denominator is zero are 0.0, except that a pair of images with no objects
  at all scores 1.0 (accuracy, F1, precision, recall, foreground IoU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment

from .errors import InvalidLabelsError
from .io import check_labels

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MatchCounts",
    "adapted_rand_error",
    "cells_from_membrane",
    "foreground_iou",
    "iou_pairs",
    "match_instances",
    "pixel_error",
    "validate_labels",
]

#: IoU thresholds 0.5, 0.55, ..., 0.9 (rounded so that they print and compare cleanly).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))

# Above this many cells the pair table is built with np.unique instead of np.bincount.
_DENSE_PAIR_LIMIT = 1 << 22


# --------------------------------------------------------------------------- validation


def validate_labels(arr: ArrayLike, name: str = "labels") -> NDArray[np.integer]:
    """Check a label image and return it as an integer array (no copy when already fine).

    Accepts integer arrays without negative values, boolean arrays (one object) and float
    arrays whose values are all finite non-negative whole numbers (converted to int64):
    :func:`napari_unet.io.check_labels` for scoring, where results other tools saved as
    float are compared.
    """
    a = np.asarray(arr)
    if a.ndim == 0:
        raise InvalidLabelsError(
            f"{name} is a scalar, not a label image; pass a 2-D or 3-D array of object ids"
        )
    return check_labels(a, name, whole_floats=True)


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise InvalidLabelsError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must cover "
            "the same pixels: crop, pad or resize one of them (nearest-neighbour for labels)"
        )


def _validate_binary(arr: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Return ``arr != 0`` for a boolean or two-valued (0 and one other value) array."""
    a = np.asarray(arr)
    if a.dtype.kind == "b":
        return a
    if a.ndim == 0 or a.dtype.kind not in "uif":
        raise InvalidLabelsError(
            f"{name} must be a boolean or 0/1 (or 0/255) array, got dtype {a.dtype} with "
            f"shape {a.shape}"
        )
    values = np.unique(a)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise InvalidLabelsError(
            f"{name} is not a binary mask: it has values {shown}; pass a boolean array or "
            "threshold it first (for example prob > 0.5)"
        )
    return a != 0


def _check_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    ts = tuple(float(t) for t in thresholds)
    if not ts:
        raise ValueError("thresholds is empty; pass at least one IoU threshold in (0, 1]")
    bad = [t for t in ts if not 0.0 < t <= 1.0]
    if bad:
        raise ValueError(f"IoU thresholds must lie in (0, 1]; got {bad}")
    return ts


# --------------------------------------------------------------------------- counts


@dataclass(frozen=True)
class MatchCounts:
    """True positives, false positives and false negatives at one IoU threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int

    @property
    def n_true(self) -> int:
        """Number of ground-truth objects (tp + fn)."""
        return self.tp + self.fn

    @property
    def n_pred(self) -> int:
        """Number of predicted objects (tp + fp)."""
        return self.tp + self.fp

    def _ratio(self, num: int, den: int) -> float:
        if self.tp + self.fp + self.fn == 0:
            return 1.0  # nothing to find and nothing found
        return num / den if den else 0.0

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def accuracy(self) -> float:
        """TP / (TP + FP + FN): the StarDist / DSB 2018 "accuracy" (average precision)."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN)."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def __add__(self, other: MatchCounts) -> MatchCounts:
        if not isinstance(other, MatchCounts):
            return NotImplemented
        if other.threshold != self.threshold:
            raise ValueError(
                f"cannot add counts at IoU threshold {self.threshold} and {other.threshold}"
            )
        return MatchCounts(
            self.threshold, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        )

    def __radd__(self, other: Any) -> MatchCounts:
        if isinstance(other, int) and other == 0:  # lets sum() start from 0
            return self
        return NotImplemented


# --------------------------------------------------------------------------- matching


def _compact(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map ids to 0 (background), 1..n. Returns (index per pixel, original ids, areas)."""
    top = int(flat.max()) if flat.size else 0
    if top <= max(1 << 20, 4 * flat.size):
        flat = flat.astype(np.intp, copy=False)
        counts = np.bincount(flat, minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(top + 1, dtype=np.intp)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[flat], ids, counts[ids]
    uniq, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    if uniq[0] != 0:  # no background present: shift so that index 0 stays free
        return inv + 1, uniq, counts
    return inv, uniq[1:], counts[1:]


def iou_pairs(
    true: ArrayLike, pred: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every overlapping (true, pred) object pair, from the sparse contingency table.

    Returns ``(true_ids, pred_ids, i, j, iou)``: the object ids present in each image, and
    for each overlapping pair its indices ``i`` into ``true_ids`` and ``j`` into ``pred_ids``
    and its IoU. Pairs that do not overlap (IoU 0) are not listed.
    """
    t = validate_labels(true, "true labels")
    p = validate_labels(pred, "predicted labels")
    _check_same_shape(t, p, "true labels", "predicted labels")
    ti, t_ids, t_area = _compact(t.reshape(-1))
    pi, p_ids, p_area = _compact(p.reshape(-1))
    both = (ti > 0) & (pi > 0)
    width = p_ids.size + 1
    key = ti[both] * width + pi[both]
    if (t_ids.size + 1) * width <= _DENSE_PAIR_LIMIT:
        table = np.bincount(key, minlength=(t_ids.size + 1) * width)
        key = np.flatnonzero(table)
        inter = table[key]
    else:
        key, inter = np.unique(key, return_counts=True)
    i = key // width - 1
    j = key % width - 1
    iou = inter / (t_area[i] + p_area[j] - inter)
    return t_ids, p_ids, i, j, iou


def _max_matching(i: np.ndarray, j: np.ndarray, iou: np.ndarray) -> int:
    """Size of a maximum one-to-one matching over the candidate pairs (i, j)."""
    if i.size == 0:
        return 0
    _, ci, row_deg = np.unique(i, return_inverse=True, return_counts=True)
    _, cj, col_deg = np.unique(j, return_inverse=True, return_counts=True)
    isolated = (row_deg[ci] == 1) & (col_deg[cj] == 1)  # pairs nothing competes with
    n = int(isolated.sum())
    rest = ~isolated
    if rest.any():
        ri, rows = np.unique(i[rest], return_inverse=True)
        rj, cols = np.unique(j[rest], return_inverse=True)
        # Cost: -1 per match (maximise the count), minus a small IoU bonus (< 1 in total)
        # that only breaks ties; pairs below the threshold cost 0 and are never counted.
        cost = np.zeros((ri.size, rj.size))
        cost[rows, cols] = -1.0 - iou[rest] / (2.0 * (min(ri.size, rj.size) + 1))
        r, c = linear_sum_assignment(cost)
        n += int(np.count_nonzero(cost[r, c] < 0))
    return n


def match_instances(
    true: ArrayLike, pred: ArrayLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[MatchCounts]:
    """Match predicted to true objects one-to-one by IoU; one :class:`MatchCounts` per threshold.

    A pair counts as a match when ``IoU >= threshold`` (StarDist convention). Among those
    pairs the matching maximises the number of matches (Hungarian algorithm on the pairs
    above the threshold), which for thresholds > 0.5 equals the unique IoU > t matching
    and stays correct for lower thresholds where a greedy match would not be.
    Thresholds must be in (0, 1].
    """
    ts = _check_thresholds(thresholds)
    t_ids, p_ids, i, j, iou = iou_pairs(true, pred)
    out = []
    for thr in ts:
        keep = iou >= thr
        tp = _max_matching(i[keep], j[keep], iou[keep])
        out.append(MatchCounts(thr, tp, int(p_ids.size) - tp, int(t_ids.size) - tp))
    return out


# --------------------------------------------------------------------------- pixel scores


def foreground_iou(true: ArrayLike, pred: ArrayLike) -> float:
    """Binary IoU of ``true > 0`` and ``pred > 0``; 1.0 when both are empty."""
    t = validate_labels(true, "true labels")
    p = validate_labels(pred, "predicted labels")
    _check_same_shape(t, p, "true labels", "predicted labels")
    tf, pf = t > 0, p > 0
    union = int(np.count_nonzero(tf | pf))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(tf & pf)) / union


def pixel_error(true_mask: ArrayLike, pred_mask: ArrayLike) -> float:
    """Fraction of pixels where two binary masks differ (the ISBI 2012 pixel error).

    Each mask is boolean or holds 0 and at most one other value (e.g. 0/255); anything
    non-zero counts as ``True``. Returns 0.0 for empty arrays.
    """
    t = _validate_binary(true_mask, "true mask")
    p = _validate_binary(pred_mask, "predicted mask")
    _check_same_shape(t, p, "true mask", "predicted mask")
    if t.size == 0:
        return 0.0
    return int(np.count_nonzero(t != p)) / t.size


def cells_from_membrane(membrane: ArrayLike) -> NDArray[np.int32]:
    """Label the connected non-membrane regions (4-connectivity in 2-D); membrane -> 0.

    For the ISBI 2012 masks (255 = cell interior, 0 = membrane) pass ``mask == 0``.
    """
    from skimage.measure import label

    m = _validate_binary(membrane, "membrane mask")
    return label(~m, connectivity=1).astype(np.int32, copy=False)


def adapted_rand_error(true: ArrayLike, pred: ArrayLike) -> float:
    """Adapted Rand error (1 - Rand F-score, 0 is perfect) between two labelings.

    Wraps :func:`skimage.metrics.adapted_rand_error` with the ISBI 2012 / SNEMI3D
    foreground-restricted convention: pixels with label 0 in ``true`` (membrane /
    background) are ignored, and pixels with label 0 in ``pred`` are unassigned, each its
    own singleton segment (as in the SNEMI3D reference script), so they cost recall but
    never merge cells. No border thinning is applied, so values are not the ISBI
    leaderboard's "V_rand (thinned)". Returns 0.0 when ``true`` has no foreground.
    """
    from skimage.metrics import adapted_rand_error as _are
    from skimage.metrics import contingency_table

    t = validate_labels(true, "true labels")
    p = validate_labels(pred, "predicted labels")
    _check_same_shape(t, p, "true labels", "predicted labels")
    ti, _, _ = _compact(t.reshape(-1))
    pi, p_ids, _ = _compact(p.reshape(-1))
    keep = ti > 0
    ti, pi = ti[keep], pi[keep].copy()
    unassigned = pi == 0
    pi[unassigned] = p_ids.size + 1 + np.arange(int(unassigned.sum()))
    if ti.size == 0:
        return 0.0
    table = contingency_table(ti, pi, normalize=False, sparse_type="array")
    n = float(ti.size)
    rows = np.asarray(table.sum(axis=1)).ravel()
    cols = np.asarray(table.sum(axis=0)).ravel()
    pairs_true = float(rows @ rows) - n
    pairs_pred = float(cols @ cols) - n
    if pairs_true == 0.0 or pairs_pred == 0.0:
        # Degenerate: no two pixels share a segment in one labeling. Perfect if neither
        # has such pairs, otherwise no agreeing pair can exist (F-score 0).
        return 0.0 if pairs_true == pairs_pred else 1.0
    return float(_are(table=table)[0])
