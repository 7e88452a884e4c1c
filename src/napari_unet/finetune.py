"""``fine_tune``: a short round of training on a user's corrections, as a new model version.

A round first learns the domain from the corrected objects (their polarity and size, see
:mod:`napari_unet.domain`), then trains on a target that is safe for a few corrections
(:mod:`napari_unet.corrections`): corrected pixels count fully, elsewhere the model is
held to its own previous probabilities and its weights near the starting ones, so it learns
the fixes without forgetting the rest. The round
runs a number of steps, not seconds, so the same click teaches the same on any machine;
a time limit only shortens it on a slow one, and the round records that it did.
The base model is copied, never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np

from .augment import AugmentConfig
from .corrections import Correction, TargetOptions, correction_target
from .data import Sample, normalized_sample
from .domain import DomainEstimate, estimate, resize_plane, scale_for
from .errors import DatasetError, InvalidLabelsError
from .io import check_labels
from .model import Model
from .normalize import normalize
from .progress import CancelToken, ProgressCallback, check_cancel
from .segment import Predictor, prepare_image
from .training import TrainConfig, TrainReport, fit

#: Defaults for an interactive round: 100 steps of batch 4 x 256^2 with batch-norm statistics
#: frozen, cut short after 120 s on a slow machine; a strong pull (100) towards the previous
#: version's probabilities where nobody corrected, a pull (200) of the weights towards the
#: base model's (L2-SP), and lr 5e-4. The sweep behind them (lr 3e-5..2e-3, anchor 0..100,
#: L2-SP, SGD, no Dice, frozen encoder) is in docs/benchmarks.md ("Fine-tuning with few
#: corrections"); the anchor went from 50 to 100 with the GPU-trained nuclei, whose first
#: round of three in-domain fixes cost 0.012-0.018 at 50 and gains 0.001-0.003 at 100.
FINE_TUNE_CONFIG = TrainConfig(
    steps=100, time_budget=120.0, batch_size=4, patch_size=256, lr=5e-4, warmup_steps=5,
    val_every=10**9, patience=None, freeze_norm=True, anchor_weight=100.0, stay_close=200.0,
    # Flips and 90-degree turns only: intensity, gamma, noise and elastic changes of one
    # image pulled the model away from what it knew (docs/benchmarks.md).
    augment=AugmentConfig(elastic_p=0.0, intensity_p=0.0, gamma_p=0.0, noise_p=0.0),
)
#: A round that ran fewer than this share of its planned steps says so.
SHORT_ROUND = 0.5


@dataclass(frozen=True)
class FineTuneOptions:
    """What a round may learn besides the weights, and how its target is built."""

    target: TargetOptions = field(default_factory=TargetOptions)
    #: Invert the input when corrected objects are dark where the model learnt bright ones.
    adapt_polarity: bool = True
    #: Resize images so corrected objects reach the network at the size it learnt.
    adapt_size: bool = True


@dataclass
class _Plane:
    """One corrected 2D plane: raw (C, Y, X) image, labels, mask, normalisation."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    percentiles: np.ndarray


def _corrected_planes(model: Model, correction: Correction) -> Iterator[_Plane]:
    """The planes of one corrected image (2D or a stack) that hold supervised pixels.

    Planes keep the whole image's normalisation percentiles (or the correction's own, e.g.
    those of the stack a single corrected plane came from), as Segment sees them.
    """
    prepared = prepare_image(correction.image, model, correction.axes, correction.percentiles,
                             correction.rgb)
    layout = prepared.layout
    labels = np.asarray(correction.labels)
    if labels.shape != layout.label_shape:
        raise InvalidLabelsError(
            f"labels of shape {labels.shape} do not match the image's planes {layout.label_shape} "
            f"(axes {layout.axes}); correct the labels layer made for this image"
        )
    check_labels(labels, what="the corrected labels")
    mask = correction.mask
    mask = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise InvalidLabelsError(
            f"the correction mask has shape {mask.shape} but the labels have {labels.shape}"
        )
    stack = layout.stack_shape
    for index in np.ndindex(*stack) if stack else [()]:
        if not mask[index].any():
            continue
        suffix = "" if not index else "[" + ",".join(map(str, index)) + "]"
        yield _Plane(f"{correction.name}{suffix}", np.asarray(prepared.canonical[index]),
                     labels[index],
                     mask[index], prepared.percentiles)


def _plane_sample(predictor: Predictor, plane: _Plane, diameter: float | None,
                  target: TargetOptions) -> Sample:
    """A training sample for one corrected plane: the corrections (and a background ring)
    as ground truth, and what ``predictor``'s model says now as the soft target elsewhere."""
    config = predictor.model.config
    norm = normalize(plane.image, plane.percentiles, config.normalization.invert)
    probs = predictor.probabilities(norm)
    labels, weight = correction_target(
        predictor.labels(probs), plane.labels, plane.mask, diameter, target,
        instances=config.task == "instance")
    sample = normalized_sample(plane.name, norm, labels, config, weight=weight)
    sample.soft = resize_plane(probs, sample.image.shape[-2:])
    return sample


def correction_samples(model: Model, correction: Correction, *,
                       target: TargetOptions = TargetOptions(), diameter: float | None = None,
                       device: str = "auto", fast: bool = True) -> list[Sample]:
    """The training samples a round makes of one corrected image (2D or a stack): one per
    plane holding supervised pixels, normalised as Segment sees it (see ``fine_tune``)."""
    predictor = Predictor(model, device, fast=fast)
    diameter = diameter or model.config.object_diameter
    return [_plane_sample(predictor, plane, diameter, target)
            for plane in _corrected_planes(model, correction)]


def adapt_to_corrections(model: Model, found: DomainEstimate,
                         options: FineTuneOptions = FineTuneOptions()) -> None:
    """Set ``model``'s input inversion and scale from what the corrections showed.

    Undecided estimates (too little contrast, too few objects) keep the model's settings.
    """
    config = model.config
    if options.adapt_polarity and config.object_polarity and found.polarity:
        config.normalization.invert = found.polarity != config.object_polarity
    if options.adapt_size and config.object_diameter:
        scale = scale_for(config.object_diameter, found)
        if scale is not None:
            config.input_scale = scale


def fine_tune(model: Model, corrections: Union[Correction, Sequence[Correction]], *,
              time_budget: float | None = None, steps: int | None = None,
              config: TrainConfig | None = None, options: FineTuneOptions | None = None,
              name: str | None = None,
              progress: Optional[ProgressCallback] = None,
              on_report: Optional[Callable[[TrainReport], None]] = None,
              cancel: Optional[CancelToken] = None) -> Model:
    """Train a copy of ``model`` on corrected labels and return the copy.

    ``corrections``: one :class:`~napari_unet.corrections.Correction` or several (the
    corrected images of a session), each an image, its labels as the user left them and
    the pixels corrected or reviewed. The round runs ``steps`` steps (default
    :data:`FINE_TUNE_CONFIG`), fewer when ``time_budget`` seconds cannot hold them on this
    machine; its provenance records steps planned and done. Cancelling raises
    :class:`~napari_unet.errors.Cancelled` and leaves ``model`` untouched.
    """
    if isinstance(corrections, Correction):
        corrections = [corrections]
    base = config or FINE_TUNE_CONFIG
    if time_budget is not None and not (np.isfinite(time_budget) and time_budget > 0):
        raise DatasetError(f"the time limit must be a positive number of seconds, not {time_budget}")
    if steps is not None and steps <= 0:
        raise DatasetError(f"a round needs a positive number of steps, not {steps}")
    options = options or FineTuneOptions()
    planes: list[_Plane] = []
    for correction in corrections:
        planes += _corrected_planes(model, correction)
    if not planes:
        raise DatasetError(
            "there are no corrections to learn from: paint or erase some labels first "
            "(or mark a region as reviewed)"
        )
    found = estimate([normalize(p.image, p.percentiles) for p in planes],
                     [p.labels for p in planes], [p.mask for p in planes])
    tuned = model.copy(name or f"{model.name}-tuned")
    adapt_to_corrections(tuned, found, options)
    diameter = found.diameter or tuned.config.object_diameter
    predictor = Predictor(tuned, base.device, fast=base.fast)
    samples = []
    for plane in planes:
        check_cancel(cancel)
        samples.append(_plane_sample(predictor, plane, diameter, options.target))
    smallest = min(min(s.image.shape[1:]) for s in samples)
    multiple = tuned.config.network.size_multiple
    patch = min(base.patch_size, max(64, -(-smallest // multiple) * multiple))
    cfg = replace(base, patch_size=patch,
                  time_budget=base.time_budget if time_budget is None else time_budget,
                  steps=steps if steps is not None else base.steps)
    history = fit(tuned, samples, (), cfg, progress, on_report, cancel)
    done = history[-1].step if history else 0
    planned = history[-1].total_steps if history else cfg.steps
    rounds = list(model.config.provenance.get("fine_tune_rounds", []))
    rounds.append({
        "base_model": model.name,
        "images": len(corrections),
        "planes": len(samples),
        "supervised_pixels": int(sum(np.count_nonzero(p.mask) for p in planes)),
        "steps": done,
        "steps_requested": cfg.steps,
        "steps_planned": planned,
        "short": done < SHORT_ROUND * cfg.steps,
        "seconds": round(history[-1].elapsed, 1) if history else 0.0,
        "objects_found": found.n_objects,
        "object_diameter_found": None if found.diameter is None else round(found.diameter, 1),
        "polarity_found": found.polarity,
        "contrast_found": round(found.contrast, 3),
        "invert": tuned.config.normalization.invert,
        "input_scale": round(tuned.config.input_scale, 3),
    })
    tuned.config.provenance = {**model.config.provenance, "fine_tune_rounds": rounds}
    return tuned


def describe_round(stats: dict) -> str:
    """One plain sentence on what a round did: steps, and what it learnt of the domain."""
    text = f"{stats.get('steps', '?')} of {stats.get('steps_requested', '?')} steps"
    if stats.get("seconds") is not None:
        text += f" in {stats['seconds']:.0f} s"
    if stats.get("short"):
        text += (" (cut short by the time limit: this machine was slow or busy, so the "
                 "model learnt less; raise the time limit or run the round again)")
    learnt = []
    if stats.get("invert"):
        learnt.append("dark objects on a light background (input inverted)")
    if stats.get("input_scale", 1.0) != 1.0:
        learnt.append(f"objects of {stats.get('object_diameter_found')} px "
                      f"(images resized x{stats['input_scale']:.2f})")
    if learnt:
        text += "; learnt: " + ", ".join(learnt)
    return text
