"""Where to correct next: an uncertainty map and a ranked list of the objects most likely wrong.

A user who fine-tunes from a handful of corrections should spend them where the model is
wrong, not scan the whole image. Everything here comes from what a Segment run already
computed (its labels and the class probabilities they were made from, kept by a
:class:`ProbabilityStore` passed to ``segment(..., on_probabilities=store)``): no extra
network pass. Signals of an object, each in [0, 1]:

- **faint**: the model gives the object a low object probability on average: the sign
  that held best across the images of docs/benchmarks.md;
- **shape**: far from convex (touching objects joined, or a ragged outline);
- **two cores**: it holds two separate confident interiors (a merged pair);
- **size**: its area is far from the median object's (2x and more; it counts little: where
  most objects are fragments, the median is a fragment and the whole objects stand out);
- **weak seed**: its interior probability barely passes the seed threshold (the watershed
  started it on a doubt; a little higher and it would not exist);
- **changed**: the previous model version drew it differently (low IoU), counting less
  the more objects changed;

and for a place with no object, **missed?**: the model gives an object a real chance there.

An object's score combines its signals as independent pieces of evidence (noisy-or:
``1 - prod(1 - weight * signal)``), so two moderate doubts outrank one; the reason names
the strongest. Objects and regions the user already corrected or reviewed (``exclude``)
are left out: the list points at what is left to check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected
from skimage.measure import regionprops

from .blocks import Box
from .config import PostprocessConfig
from .errors import InvalidLabelsError, InvalidSettingError
from .metrics import iou_pairs

Kind = Literal["object", "region"]


class ProbabilityStore:
    """The class probabilities of a Segment run, kept per stack plane as uint8 (steps of
    1/255: a quarter of float32, and finer than any threshold the user sets).

    Pass it as ``segment(..., on_probabilities=store)``; it receives every block of every
    plane from the same network pass that made the labels.
    """

    def __init__(self) -> None:
        self._blocks: dict[tuple[int, ...], list[tuple[Box, np.ndarray]]] = {}

    def __call__(self, index: tuple[int, ...], box: Box, probs: np.ndarray) -> None:
        quantised = np.rint(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
        self._blocks.setdefault(tuple(index), []).append((box, quantised))

    @property
    def planes(self) -> list[tuple[int, ...]]:
        """Stack indices with probabilities (``[()]`` for a 2D image)."""
        return sorted(self._blocks)

    def update(self, other: ProbabilityStore) -> None:
        """Take ``other``'s planes (a later run of some planes replaces theirs)."""
        self._blocks.update(other._blocks)

    def plane(self, index: tuple[int, ...] = ()) -> np.ndarray:
        """The (K, Y, X) float32 probabilities of one plane."""
        blocks = self._blocks.get(tuple(index))
        if not blocks:
            raise KeyError(f"no probabilities kept for plane {tuple(index)}")
        height = max(box[0].stop for box, _ in blocks)
        width = max(box[1].stop for box, _ in blocks)
        out = np.zeros((blocks[0][1].shape[0], height, width), np.float32)
        for box, quantised in blocks:
            out[(slice(None),) + box] = quantised * np.float32(1 / 255)
        return out


@dataclass(frozen=True)
class Candidate:
    """One place to look at: an object that may be wrong, or a region that may hide one."""

    kind: Kind
    #: The object's id in the labels (0 for a region with no object).
    label: int
    #: (y, x) in plane pixels: where the viewer centres.
    centre: tuple[float, float]
    #: (y0, x0, y1, x1) in plane pixels, stop exclusive.
    bbox: tuple[int, int, int, int]
    area: int
    score: float
    reason: str
    #: Stack index of the plane (``()`` for a 2D image).
    plane: tuple[int, ...] = ()


@dataclass
class Guidance:
    """What :func:`guide` found on one plane: the map and the candidates, best first."""

    uncertainty: np.ndarray
    candidates: list[Candidate] = field(default_factory=list)


@dataclass(frozen=True)
class GuideOptions:
    """Knobs of the ranking; the defaults are what docs/benchmarks.md measured."""

    #: Solidity (area / convex area) where the shape signal starts, and where it is 1.
    solidity: tuple[float, float] = (0.95, 0.7)
    #: Mean object probability missing (1 - mean) where the faint signal starts, and is 1.
    faint: tuple[float, float] = (0.1, 0.4)
    #: Area ratio to the median object (either way) where the size signal starts, and is 1.
    size_ratio: tuple[float, float] = (2.0, 4.0)
    #: IoU with the previous version's best match below which "changed" starts, and is 1.
    changed_iou: tuple[float, float] = (0.7, 0.3)
    #: How much each signal counts in the combined score (a full signal of weight w alone
    #: scores w). Chosen on images none of the benchmarks score (docs/benchmarks.md).
    weights: tuple[tuple[str, float], ...] = (
        ("faint", 0.9), ("shape", 0.7), ("weak seed", 0.4), ("two cores", 0.3),
        ("size", 0.2), ("changed", 0.6), ("missed?", 0.8))
    #: Object probability from which a region with no object counts as a possible miss.
    region_level: float = 0.25
    #: Pixels this close to an object (its fading edge) are never a region.
    edge: float = 2.0
    #: A region must cover at least this share of the median object area.
    region_area: float = 0.25
    #: Objects and regions at least this much inside ``exclude`` are left out.
    excluded_share: float = 0.5

    def weight(self, signal: str) -> float:
        return dict(self.weights)[signal]


# --------------------------------------------------------------------------- the map


def object_probability(probs: np.ndarray, task: str) -> np.ndarray:
    """Per pixel, the probability of "some object here": 1 - background for instance
    models, the most likely class for semantic ones."""
    return (1.0 - probs[0]) if task == "instance" else probs.max(0)


def uncertainty_map(probs: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """(Y, X) float32 in [0, 1]: 1 where the object probability sits at the threshold that
    decides object or not, 0 where it is sure either way. Sharp object edges show as thin
    lines; hesitation over a whole area shows as a blob, which is what to look at."""
    p = object_probability(probs, task)
    distance = np.abs(p - threshold) / max(threshold, 1.0 - threshold)
    return np.clip(1.0 - distance, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- signals


def _ramp(value: np.ndarray, start: float, full: float) -> np.ndarray:
    """0 at ``start``, 1 at ``full`` (either direction), linear between, clipped."""
    return np.clip((np.asarray(value, float) - start) / (full - start), 0.0, 1.0)


def _per_object(values: np.ndarray, labels: np.ndarray, n: int,
                func: Callable[..., object]) -> np.ndarray:
    """``func`` (an ndimage reduction) of ``values`` over each id 1..n (0 for absent ids)."""
    if n == 0:
        return np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):  # ids with no pixels: 0/0
        return np.nan_to_num(np.asarray(func(values, labels, np.arange(1, n + 1)), float))


def _cores(interior: np.ndarray, labels: np.ndarray, level: float, min_size: int,
           n: int) -> np.ndarray:
    """Per id 1..n, how many separate confident interiors (interior > ``level``, at least
    ``min_size`` pixels) it holds: two in one object is the mark of a merged pair."""
    cores = connected(np.where(interior > level, labels, 0), background=0)
    if not cores.max():
        return np.zeros(n)
    sizes = np.bincount(cores.ravel())
    owner = np.zeros(sizes.size, np.int64)
    owner[cores.ravel()] = labels.ravel()
    big = np.flatnonzero(sizes >= max(min_size, 1))
    big = big[big > 0]
    return np.bincount(owner[big], minlength=n + 1)[1:].astype(float)


def _best_iou(labels: np.ndarray, previous: np.ndarray, n: int) -> np.ndarray:
    """Per id 1..n of ``labels``, its best IoU with any object of ``previous``."""
    best = np.zeros(n + 1)
    ids, _, i, _, iou = iou_pairs(labels, previous)
    np.maximum.at(best, ids[i], iou)
    return best[1:]


# --------------------------------------------------------------------------- ranking


def _describe(name: str, value: float, threshold: float) -> str:
    """The reason text of a signal, with the value that raised it."""
    texts = {
        "shape": f"far from convex (solidity {value:.2f}): touching objects joined, or a "
                 f"ragged outline",
        "faint": f"the model gives it only {value:.0%} object probability on average",
        "two cores": f"holds {value:.0f} separate confident interiors: touching objects "
                     f"joined?",
        "size": f"{value:.1f}x the median object's area",
        "weak seed": f"barely passes the seed threshold (interior peak {value:.2f}, "
                     f"threshold {threshold:.2f})",
        "changed": f"the previous model version drew it differently (IoU {value:.2f})",
    }
    return texts[name]


def _solidity(labels: np.ndarray, n: int, min_area: int) -> np.ndarray:
    """Per id 1..n, area / convex hull area (1 for objects under ``min_area`` pixels, whose
    pixel outlines make the ratio meaningless)."""
    solidity = np.ones(n)
    for prop in regionprops(labels):
        if prop.area >= min_area:
            solidity[prop.label - 1] = prop.solidity
    return solidity


def object_signals(labels: np.ndarray, probs: np.ndarray, config: PostprocessConfig,
                   previous: Optional[np.ndarray] = None,
                   options: GuideOptions = GuideOptions()) -> tuple[dict, dict]:
    """Per object id 1..N of an instance segmentation, each signal in [0, 1] and the value
    it came from (for the reason text), as two dicts of (N,) arrays by signal name."""
    n = int(labels.max(initial=0))
    interior = probs[1]
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(float)
    present = areas > 0
    median_area = float(np.median(areas[present])) if present.any() else 1.0
    ratio = areas / median_area
    mean_object = _per_object(1.0 - probs[0], labels, n, ndi.mean)
    solidity = _solidity(labels, n, 3 * max(config.min_size, 10))
    peak = _per_object(interior, labels, n, ndi.maximum)
    threshold = config.seed_threshold
    cores = _cores(interior, labels, (1.0 + threshold) / 2, config.min_seed_size, n)
    # size counts only among enough objects to have a typical size
    size = np.abs(np.log(np.maximum(ratio, 1e-9))) if present.sum() >= 5 else np.zeros(n)
    signals = {
        "shape": _ramp(solidity, *options.solidity),
        "faint": _ramp(1.0 - mean_object, *options.faint),
        "two cores": (cores >= 2).astype(float),
        "size": _ramp(size, *np.log(options.size_ratio)),
        "weak seed": (1.0 - _ramp(peak, threshold, 1.0)) * (peak > 0),
    }
    values = {"shape": solidity, "faint": mean_object, "two cores": cores, "size": ratio,
              "weak seed": peak}
    if previous is not None:
        iou = _best_iou(labels, previous, n)
        changed = _ramp(iou, *options.changed_iou)
        # a change most objects share (a first round in a new kind of image redraws them
        # all) singles none out: the signal fades as the share of changed objects grows
        share = float(changed[present].mean()) if present.any() else 0.0
        signals["changed"] = changed * max(0.0, 1.0 - share)
        values["changed"] = iou
    return signals, values


#: A signal is named in a candidate's reason when it weighs at least this share of the
#: strongest one: the user sees every doubt that ranked the object, not only the first.
ALSO_SHARE = 0.5


def combine(signals: dict, options: GuideOptions = GuideOptions()) -> tuple[np.ndarray, list]:
    """(score per object, names of its signals that count, strongest first): a noisy-or of
    the weighted signals, so independent doubts add up but never pass 1."""
    names = list(signals)
    weighted = np.stack([options.weight(k) * np.asarray(signals[k]) for k in names])
    score = 1.0 - np.prod(1.0 - weighted, axis=0)
    counted = []
    for column in weighted.T:
        order = np.argsort(-column, kind="stable")
        counted.append([names[i] for i in order if column[i] >= ALSO_SHARE * column[order[0]]])
    return score, counted


def _object_candidates(labels: np.ndarray, probs: np.ndarray, config: PostprocessConfig,
                       previous: Optional[np.ndarray], keep: np.ndarray,
                       options: GuideOptions, plane: tuple[int, ...]) -> list[Candidate]:
    """Every object with a doubt, scored by :func:`combine`."""
    n = int(labels.max(initial=0))
    if n == 0:
        return []
    signals, values = object_signals(labels, probs, config, previous, options)
    score, counted = combine(signals, options)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    boxes = ndi.find_objects(labels)
    out = []
    for k in np.flatnonzero((areas > 0) & keep[1:n + 1] & (score > 0)):
        box = boxes[k]
        reason = "; also ".join(_describe(name, float(values[name][k]), config.seed_threshold)
                                for name in counted[k])
        out.append(_candidate("object", int(k + 1), labels[box] == k + 1, box, int(areas[k]),
                              float(score[k]), reason, plane))
    return out


def _candidate(kind: Kind, label: int, mask: np.ndarray, box: Box, area: int, score: float,
               reason: str, plane: tuple[int, ...]) -> Candidate:
    """A candidate from its pixels within ``box`` (centre = their centroid)."""
    ys, xs = np.nonzero(mask)
    centre = (float(ys.mean() + box[0].start), float(xs.mean() + box[1].start))
    bbox = (box[0].start, box[1].start, box[0].stop, box[1].stop)
    return Candidate(kind, label, centre, bbox, area, round(score, 3), reason, plane)


def _region_candidates(labels: np.ndarray, p_object: np.ndarray, excluded: np.ndarray,
                       options: GuideOptions, min_area: float,
                       plane: tuple[int, ...]) -> list[Candidate]:
    """Regions with no object where the model still gives an object a real chance. The
    fading edge around every object is not one: pixels near an object are left out."""
    away = ndi.distance_transform_edt(labels == 0) > options.edge
    doubt = (p_object > options.region_level) & away & ~excluded
    regions, n = ndi.label(doubt)
    if n == 0:
        return []
    areas = np.bincount(regions.ravel(), minlength=n + 1)
    peak = _per_object(p_object, regions, n, ndi.maximum)
    mean = _per_object(p_object, regions, n, ndi.mean)
    weight = options.weight("missed?")
    out = []
    for k, box in enumerate(ndi.find_objects(regions)):
        if box is None or areas[k + 1] < min_area:
            continue
        # a mean object probability of 0.5 over the region is as sure a miss as it gets
        score = weight * float(np.clip(2.0 * mean[k], 0.0, 1.0))
        reason = (f"no object here, but the model gives it up to {peak[k]:.0%} object "
                  f"probability: a missed object?")
        out.append(_candidate("region", 0, regions[box] == k + 1, box, int(areas[k + 1]),
                              score, reason, plane))
    return out


def _check(labels: np.ndarray, probs: np.ndarray, task: str, previous, exclude) -> None:
    """The probabilities and labels of one plane, from one run of a model of ``task``."""
    if task not in ("instance", "semantic"):
        raise InvalidSettingError(f"task must be 'instance' or 'semantic' (the model's "
                                  f"config.task), not {task!r}")
    if labels.dtype.kind not in "ui":
        raise InvalidLabelsError(f"labels must be integers, not {labels.dtype}")
    if labels.ndim != 2 or probs.ndim != 3 or probs.shape[1:] != labels.shape:
        raise InvalidLabelsError(
            f"guidance needs one plane's (Y, X) labels and its (K, Y, X) probabilities; got "
            f"labels {labels.shape} and probabilities {probs.shape}: pass the plane the "
            f"probabilities were kept for")
    if task == "instance" and probs.shape[0] != 3:
        raise InvalidLabelsError(
            f"an instance model's probabilities have 3 classes (background, interior, "
            f"boundary), these have {probs.shape[0]}: pass task='semantic' for a semantic "
            f"model")
    for name, other in (("previous", previous), ("exclude", exclude)):
        if other is not None and np.shape(other) != labels.shape:
            raise InvalidLabelsError(
                f"{name} has shape {np.shape(other)} but the labels {labels.shape}; pass the "
                f"same plane")


def guide(labels: np.ndarray, probs: np.ndarray, task: str = "instance",
          postprocess: PostprocessConfig | None = None, *,
          previous: Optional[np.ndarray] = None, exclude: Optional[np.ndarray] = None,
          options: GuideOptions = GuideOptions(), plane: tuple[int, ...] = ()) -> Guidance:
    """The uncertainty map and the ranked candidates of one plane.

    ``labels`` are the labels shown (a prediction, possibly with corrections pasted on
    top); ``probs`` the (K, Y, X) probabilities the prediction came from
    (:meth:`ProbabilityStore.plane`); ``task`` the model's; ``postprocess`` the thresholds
    the labels were made with (the model's ``config.postprocess`` with any override;
    default: :class:`PostprocessConfig`'s); ``previous`` the previous model version's labels
    of the plane, if any; ``exclude`` pixels already corrected or reviewed. Instance models
    get object and region candidates; semantic models region candidates only (their
    classes are not objects).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, np.float32)
    _check(labels, probs, task, previous, exclude)
    config = postprocess or PostprocessConfig()
    threshold = (1.0 - config.foreground_threshold if task == "instance"
                 else config.semantic_threshold)
    excluded = np.zeros(labels.shape, bool) if exclude is None else np.asarray(exclude, bool)
    labels = labels.astype(np.int64)
    n = int(labels.max(initial=0))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels.ravel(), weights=excluded.ravel(), minlength=n + 1)
    keep = inside < options.excluded_share * np.maximum(areas, 1)
    candidates: list[Candidate] = []
    if task == "instance":
        prev = None if previous is None else np.asarray(previous).astype(np.int64)
        candidates = _object_candidates(labels, probs, config, prev, keep, options, plane)
    median = float(np.median(areas[1:][areas[1:] > 0])) if (areas[1:] > 0).any() else 0.0
    min_area = max(config.min_size, options.region_area * median)
    candidates += _region_candidates(labels, object_probability(probs, task), excluded, options,
                                     min_area, plane)
    candidates.sort(key=lambda c: (-c.score, -c.area))
    return Guidance(uncertainty_map(probs, task, threshold), candidates)


def guide_planes(labels, store: ProbabilityStore, task: str = "instance",
                 postprocess: PostprocessConfig | None = None, *,
                 previous=None, exclude=None, planes: Optional[Sequence[tuple[int, ...]]] = None,
                 options: GuideOptions = GuideOptions()) -> tuple[dict, list[Candidate]]:
    """:func:`guide` over the stack planes of ``store`` (all, or ``planes``): the map of each
    plane by stack index, and one ranking over all of them (each candidate names its plane)."""
    maps: dict[tuple[int, ...], np.ndarray] = {}
    candidates: list[Candidate] = []
    for index in store.planes if planes is None else [tuple(p) for p in planes]:
        result = guide(np.asarray(labels[index]), store.plane(index), task, postprocess,
                       previous=None if previous is None else np.asarray(previous[index]),
                       exclude=None if exclude is None else np.asarray(exclude[index]),
                       options=options, plane=index)
        maps[index] = result.uncertainty
        candidates += result.candidates
    candidates.sort(key=lambda c: (-c.score, -c.area))
    return maps, candidates
