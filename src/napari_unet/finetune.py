"""``fine_tune``: a few seconds of training on a user's corrections, as a new model version.

Only pixels marked in ``mask`` (the edited pixels, plus regions the user marked as
reviewed) count as ground truth; untouched predictions are ignored, so the model is
never taught its own mistakes. The base model is copied, never changed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from .data import Sample, make_sample
from .errors import DatasetError, InvalidLabelsError
from .model import Model
from .progress import CancelToken, ProgressCallback
from .segment import prepare_image
from .tiff_io import check_label_values
from .training import TrainConfig, TrainReport, fit

#: Defaults for an interactive round: short, batch-norm statistics frozen. lr 2e-3 reaches the
#: human-in-the-loop benchmark's +0.15 in ~20 s instead of ~30 s with 5e-4, and still +0.20
#: after 60 s (docs/benchmarks.md, "Fine-tuning speed").
FINE_TUNE_CONFIG = TrainConfig(
    steps=100_000, time_budget=30.0, batch_size=4, patch_size=256, lr=2e-3, warmup_steps=5,
    val_every=10**9, patience=None, freeze_norm=True,
)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def correction_samples(model: Model, image, labels, mask=None, axes: str | None = None,
                       name: str = "image", percentiles: np.ndarray | None = None) -> list[Sample]:
    """Training samples from one image (2D or a stack) and its corrected labels.

    Stacks are split into 2D planes; only planes with at least one supervised pixel
    become samples. Planes are normalised with the whole image's percentiles, exactly
    as :func:`~napari_unet.segment.segment` sees them (or with ``percentiles``, e.g. those
    of the stack a single corrected plane came from).
    """
    prepared = prepare_image(image, model, axes, percentiles)
    layout = prepared.layout
    labels = np.asarray(labels)
    if labels.shape != layout.label_shape:
        raise InvalidLabelsError(
            f"labels of shape {labels.shape} do not match the image's planes {layout.label_shape} "
            f"(axes {layout.axes}); correct the labels layer made for this image"
        )
    check_label_values(labels, what="the corrected labels")
    mask = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise InvalidLabelsError(
            f"the correction mask has shape {mask.shape} but the labels have {labels.shape}"
        )
    samples = []
    stack = layout.stack_shape
    for index in np.ndindex(*stack) if stack else [()]:
        if not mask[index].any():
            continue
        plane = np.asarray(prepared.canonical[index])
        suffix = "" if not index else "[" + ",".join(map(str, index)) + "]"
        samples.append(make_sample(f"{name}{suffix}", plane, labels[index], model.config,
                                   axes="CYX", weight=mask[index].astype(np.float32),
                                   percentiles=prepared.percentiles))
    return samples


def fine_tune(model: Model, image, labels, mask=None, *, axes: str | None = None,
              time_budget: float | None = 30.0, steps: int | None = None,
              config: TrainConfig | None = None, name: str | None = None,
              percentiles=None,
              progress: Optional[ProgressCallback] = None,
              on_report: Optional[Callable[[TrainReport], None]] = None,
              cancel: Optional[CancelToken] = None) -> Model:
    """Train a copy of ``model`` on corrected labels and return the copy.

    ``image``, ``labels`` and ``mask`` may each be one array or a list (several corrected
    images of a session). ``mask`` marks the pixels that count (``None``: all of them).
    ``percentiles`` (one (C, 2) array, or a list with one array or ``None`` per image)
    normalise an image like a larger one it was cut from; by default each image's own.
    Stops at ``time_budget`` seconds or ``steps``, whichever comes first; cancelling
    raises :class:`~napari_unet.errors.Cancelled` and leaves ``model`` untouched.
    """
    images, label_list = _as_list(image), _as_list(labels)
    masks = _as_list(mask) if mask is not None else [None] * len(images)
    pcts = percentiles if isinstance(percentiles, (list, tuple)) else [percentiles] * len(images)
    if not (len(images) == len(label_list) == len(masks) == len(pcts)):
        raise DatasetError("give as many label arrays, masks and percentiles as images")
    tuned = model.copy(name or f"{model.name}-tuned")
    samples: list[Sample] = []
    for i, (img, lab, m, pct) in enumerate(zip(images, label_list, masks, pcts)):
        samples += correction_samples(tuned, img, lab, m, axes, name=f"image{i}", percentiles=pct)
    if not samples:
        raise DatasetError(
            "there are no corrections to learn from: paint or erase some labels first "
            "(or mark a region as reviewed)"
        )
    base = config or FINE_TUNE_CONFIG
    smallest = min(min(s.image.shape[1:]) for s in samples)
    multiple = tuned.config.network.size_multiple
    patch = min(base.patch_size, max(64, -(-smallest // multiple) * multiple))
    cfg = replace(base, patch_size=patch, time_budget=time_budget,
                  steps=steps if steps is not None else base.steps)
    history = fit(tuned, samples, (), cfg, progress, on_report, cancel)
    rounds = list(model.config.provenance.get("fine_tune_rounds", []))
    rounds.append({
        "base_model": model.name,
        "images": len(images),
        "planes": len(samples),
        "supervised_pixels": int(sum(s.weight.sum() for s in samples)),
        "steps": history[-1].step if history else 0,
        "seconds": round(history[-1].elapsed, 1) if history else 0.0,
    })
    tuned.config.provenance = {**model.config.provenance, "fine_tune_rounds": rounds}
    return tuned
