"""The re-segmentation that ends a fine-tuning round (no Qt, no napari import): what to
segment again, taken on the GUI thread with the edits as they are then, and the worker
job that segments it with the new version and judges it against the previous one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..model import Model
from ..postprocess import keep_ids
from ..progress import CancelToken, ProgressCallback
from ..round_check import RoundCheck, check_round
from ._jobs import KEEP_PROBABILITIES, SegmentResult, layer_dtype, run_segment
from ._session import LabelsLink


@dataclass(eq=False)
class Resegment:
    """One tracked labels layer to segment again: whole (``planes`` None) or only its
    supervised planes; per ``judged`` plane, what the previous version showed, the labels
    as corrected and the supervision mask (edits made while the round runs are kept, but
    not judged); and, for a whole layer of up to :data:`KEEP_PROBABILITIES` pixels, the
    labels shown when the round started, whose ids the new labels take over."""

    link: LabelsLink
    planes: Optional[list[tuple[int, ...]]]
    judged: list[tuple[int, ...]]
    before: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    shown: Optional[np.ndarray] = None


def plan_resegment(links: list[LabelsLink], layers: Any) -> list[Resegment]:
    """The layers still in ``layers`` (the viewer's) that hold corrections."""
    plan = []
    for link in links:
        if link.labels_layer not in layers:
            continue
        tracker = link.current_tracker()
        if not tracker.n_supervised:
            continue
        planes = tracker.supervised_planes(link.n_stack)
        data = np.asarray(link.labels_layer.data)
        whole = not (link.image.stack_axes and link.settings.scope == "plane")
        shown = np.array(data) if whole and data.size <= KEEP_PROBABILITIES else None
        # one copy of the labels as shown: the judged planes are views into it when it exists
        before = [(np.array(tracker.baseline[p]),
                   shown[p] if shown is not None else np.array(data[p]), tracker.mask[p].copy())
                  for p in planes]
        plan.append(Resegment(link, None if whole else planes, planes, before, shown))
    return plan


def keep_shown_ids(labels: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """``labels`` of a whole layer with the ids of the ``shown`` objects they overlap (so
    the objects a round leaves alone keep their colour and versions compare by eye); new
    objects get ids above the shown ones. In the layer's dtype."""
    kept, _ = keep_ids(labels, shown, int(shown.max(initial=0)) + 1)
    return kept.astype(layer_dtype(kept), copy=False)


def run_resegment(plan: list[Resegment], model: Model, progress: ProgressCallback,
                  cancel: CancelToken) -> tuple[list[SegmentResult], RoundCheck]:
    """Segment ``plan`` with ``model`` (the new version) and compare it with the previous
    version on the judged planes, before anything is shown."""
    results, previous, new, corrected, masks = [], [], [], [], []
    for item in plan:
        result = run_segment(item.link.image, model, item.link.settings, item.planes,
                             progress=progress, cancel=cancel)
        if item.shown is not None:  # planes of a stack keep ids when they are applied
            result.labels = keep_shown_ids(np.asarray(result.labels), item.shown)
        results.append(result)
        for index, (prev, corr, mask) in zip(item.judged, item.before):
            previous.append(prev)
            new.append(np.asarray(result.labels[index]))
            corrected.append(corr)
            masks.append(mask)
    return results, check_round(previous, new, corrected, masks)
