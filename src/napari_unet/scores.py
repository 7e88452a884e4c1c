"""Per-image scores of a data set and their summary: counts summed over images (as
StarDist reports them), and one CSV row per image. The metrics themselves are in
:mod:`napari_unet.metrics`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .metrics import DEFAULT_THRESHOLDS, MatchCounts, foreground_iou, match_instances


@dataclass
class ImageScores:
    """Scores of one image: object counts, match counts per threshold, foreground IoU."""

    name: str
    n_true: int
    n_pred: int
    counts: list[MatchCounts] = field(default_factory=list)
    foreground_iou: float = 1.0


def score_image(
    name: str,
    true: ArrayLike,
    pred: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> ImageScores:
    """Match and score one (true, pred) pair of label images."""
    counts = match_instances(true, pred, thresholds)
    return ImageScores(
        name=name,
        n_true=counts[0].n_true,
        n_pred=counts[0].n_pred,
        counts=counts,
        foreground_iou=foreground_iou(true, pred),
    )


def _thresholds_of(scores: Sequence[ImageScores]) -> tuple[float, ...]:
    if not scores:
        raise ValueError("no image scores to summarise; score at least one image first")
    ts = tuple(c.threshold for c in scores[0].counts)
    for s in scores[1:]:
        if tuple(c.threshold for c in s.counts) != ts:
            raise ValueError(
                f"image {s.name!r} was scored at different IoU thresholds than "
                f"{scores[0].name!r}; score all images with the same thresholds"
            )
    return ts


def summarise(scores: Sequence[ImageScores]) -> dict[str, Any]:
    """Dataset scores from counts summed over images (not a mean of per-image ratios).

    Keys: ``n_images``, ``n_true``, ``n_pred``, ``thresholds``, ``per_threshold`` (one dict
    per threshold with threshold, tp, fp, fn, accuracy, f1, precision, recall),
    ``mean_accuracy`` (summed-count accuracy averaged over the thresholds) and
    ``mean_foreground_iou`` (mean over images).
    """
    ts = _thresholds_of(scores)
    per_threshold = []
    accs = []
    for k, thr in enumerate(ts):
        total = sum((s.counts[k] for s in scores), MatchCounts(thr, 0, 0, 0))
        accs.append(total.accuracy)
        per_threshold.append(
            {
                "threshold": thr,
                "tp": total.tp,
                "fp": total.fp,
                "fn": total.fn,
                "accuracy": total.accuracy,
                "f1": total.f1,
                "precision": total.precision,
                "recall": total.recall,
            }
        )
    return {
        "n_images": len(scores),
        "n_true": sum(s.n_true for s in scores),
        "n_pred": sum(s.n_pred for s in scores),
        "thresholds": list(ts),
        "per_threshold": per_threshold,
        "mean_accuracy": float(np.mean(accs)) if accs else float("nan"),
        "mean_foreground_iou": float(np.mean([s.foreground_iou for s in scores])),
    }


def scores_table(scores: Sequence[ImageScores]) -> list[dict[str, Any]]:
    """One row per image for :class:`csv.DictWriter`.

    Columns: ``image, n_true, n_pred, acc@0.5, f1@0.5, ..., acc@0.9, f1@0.9, fg_iou``
    (threshold written with ``:g``). All rows have the same keys in the same order.
    """
    if scores:
        _thresholds_of(scores)
    rows = []
    for s in scores:
        row: dict[str, Any] = {"image": s.name, "n_true": s.n_true, "n_pred": s.n_pred}
        for c in s.counts:
            row[f"acc@{c.threshold:g}"] = c.accuracy
            row[f"f1@{c.threshold:g}"] = c.f1
        row["fg_iou"] = s.foreground_iou
        rows.append(row)
    return rows
