"""Training and fine-tuning loops: a generator of per-step reports, and wrappers around it.

The generator shape lets a GUI worker yield live losses and stop cooperatively, while
the CLI and the library consume the same loop with plain callbacks.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ._version import __version__
from .augment import AugmentConfig, augment, random_crop
from .calibrate import calibrate_seed_threshold
from .checkpoint import TrainState, check_start, load_checkpoint, save_checkpoint
from .config import COUNT, COUNT_OR_ZERO, Range, Task, check_fields, check_value, preset, setting
from .data import Sample, load_folder
from .device import autocast, describe, memory_format, pick_device
from .domain import estimate
from .errors import DatasetError
from .io import file_name
from .losses import distill_loss, instance_loss, semantic_loss
from .model import Model
from .progress import CancelToken, ProgressCallback, check_cancel, report

_NON_NEGATIVE_NUMBER = Range(0)
#: Share of the images held out for validation (below 1: some must remain for training).
VAL_FRACTION = Range(0, 1, open_high=True)
#: Final images held out for validation instead (0 or None: use ``val_fraction``).
VAL_LAST = Range(0, integer=True, optional=True)


@dataclass
class TrainConfig:
    """Optimisation settings.

    Training runs ``steps`` steps. With a ``time_budget`` (seconds) the speed of the first
    steps on this machine decides how many of them fit: the plan shrinks to that number
    (and the learning-rate schedule with it), and the budget still stops a run that slows
    down later. Reports say how many steps were planned. A value outside its field's rule
    raises :class:`~napari_unet.errors.InvalidSettingError` (the CLI refuses the same).
    """

    steps: int = setting(2000, COUNT)
    time_budget: float | None = setting(None, Range(0, open_low=True, optional=True))
    batch_size: int = setting(8, COUNT)
    patch_size: int = setting(256, COUNT)
    lr: float = setting(2e-3, _NON_NEGATIVE_NUMBER)
    weight_decay: float = setting(1e-4, _NON_NEGATIVE_NUMBER)
    warmup_steps: int = setting(50, COUNT_OR_ZERO)
    val_every: int = setting(100, COUNT)
    #: Validations without improvement before training stops; 0 or None: never stop early.
    patience: int | None = setting(10, Range(0, integer=True, optional=True))
    boundary_weight: float = setting(2.0, _NON_NEGATIVE_NUMBER)
    seed: int = setting(0, Range(0, 2**32 - 1, integer=True))
    device: str = "auto"
    #: Processes that make training batches ahead of the network (0: the training process
    #: makes each in turn). A GPU waits for patches without them; results do not change.
    data_workers: int = setting(0, COUNT_OR_ZERO)
    fast: bool = True
    freeze_norm: bool = False
    #: With partial supervision, the share of patches centred on supervised pixels (the rest
    #: are drawn anywhere, where soft targets, if any, hold the model's own predictions).
    focus_fraction: float = setting(0.8, Range(0, 1))
    #: With samples that carry soft targets, the weight of keeping the model's own
    #: predictions where nobody annotated (:func:`~napari_unet.losses.distill_loss`).
    anchor_weight: float = setting(1.0, _NON_NEGATIVE_NUMBER)
    #: Pull towards the starting weights, applied with the learning rate after every step
    #: (decoupled L2-SP): fine-tuning on one image then cannot wander far from what the
    #: model knew about other images. 0 turns it off.
    stay_close: float = setting(0.0, _NON_NEGATIVE_NUMBER)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class TrainReport:
    """One optimisation step: what a progress bar and a loss curve need."""

    step: int
    total_steps: int
    loss: float
    lr: float
    elapsed: float
    progress: float
    val_loss: float | None = None
    best_val_loss: float | None = None


class _Batches(torch.utils.data.Dataset):
    """Random augmented patches drawn from samples: item ``k`` is the batch of step ``k``.

    Each batch draws from its own random stream, seeded by (seed, step), so a batch is the
    same whichever process makes it and in whatever order: worker processes
    (``TrainConfig.data_workers``) and a resumed run see exactly the batches of a
    single-process, uninterrupted one. Samples are drawn in proportion to the square root
    of their supervised area: large images are seen more often, but do not crowd out the
    small ones.
    """

    def __init__(self, samples: Sequence[Sample], config: TrainConfig) -> None:
        self.samples = samples
        self.config = config
        area = np.array([max(float(np.count_nonzero(s.weight)), 1.0) for s in samples])
        self.p = np.sqrt(area) / np.sqrt(area).sum()
        self.focus = [s.focus for s in samples]

    def __getitem__(self, step: int) -> tuple[torch.Tensor, ...]:
        """(images, targets, weights), and soft targets when the samples carry them."""
        rng = np.random.default_rng([self.config.seed, step])
        parts: list[list[np.ndarray]] = [[], [], [], []]
        for _ in range(self.config.batch_size):
            i = int(rng.choice(len(self.samples), p=self.p))
            s = self.samples[i]
            focus = self.focus[i]
            if focus is not None and rng.random() >= self.config.focus_fraction:
                focus = None
            crop = random_crop(s.image, s.target, s.weight, self.config.patch_size,
                               rng, focus, s.soft, self.config.augment.draw_scale(rng))
            image, target, weight, *soft = crop
            for part, array in zip(parts, augment(image, target, weight, rng,
                                                  self.config.augment, *soft)):
                part.append(array)
        return tuple(torch.from_numpy(np.stack(part)) for part in parts if part)

    def from_step(self, step: int, workers: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """The batches of steps ``step``, ``step + 1``, ...; made ahead by ``workers``
        processes (0: here, one at a time)."""
        if not workers:
            return (self[k] for k in itertools.count(step))
        loader = torch.utils.data.DataLoader(
            self, batch_size=None, sampler=itertools.count(step),
            num_workers=workers, prefetch_factor=4, persistent_workers=False)
        return iter(loader)


def _fixed_val_batches(samples: Sequence[Sample], patch: int, batch: int) -> list[tuple]:
    """One crop per validation image from a fixed seed, so losses compare across steps."""
    rng = np.random.default_rng(12345)
    items = []
    for s in samples:
        items.append(random_crop(s.image, s.target, s.weight, patch, rng, None))
    return [
        tuple(torch.from_numpy(np.stack(parts)) for parts in zip(*items[i : i + batch]))
        for i in range(0, len(items), batch)
    ]


#: Steps timed (after the first, which warms up) to plan how many fit in a time budget.
_SPEED_STEPS = 3


def _plan_steps(config: TrainConfig, elapsed: float, done: int, rate: float) -> int:
    """How many steps fit in the time budget at ``rate`` seconds per step (timed after the
    first step, which pays for warm-up), counting the ``elapsed`` time; at most ``config.steps``."""
    if rate <= 0 or not config.time_budget:
        return config.steps
    fit = done + int(max(config.time_budget - elapsed, 0.0) / rate)
    return min(config.steps, max(done + 1, fit))


def _lr_at(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay over the step or time budget."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def fit_iter(model: Model, train: Sequence[Sample], val: Sequence[Sample] = (),
             config: TrainConfig | None = None, cancel: Optional[CancelToken] = None,
             checkpoint: str | Path | None = None, resume: bool = False,
             ) -> Iterator[TrainReport]:
    """Train ``model.network`` in place, yielding a report per step.

    With validation samples, the best weights by validation loss are restored at the end
    and training stops after ``patience`` validations without improvement. With a
    ``checkpoint`` path the run's state is written there at every validation; ``resume``
    continues from it (:mod:`napari_unet.checkpoint`).
    """
    config = config or TrainConfig()
    check_fields(config)  # again: a config may have been changed since it was made
    if not train:
        raise DatasetError("no training samples: give at least one annotated image")
    multiple = model.config.network.size_multiple
    if config.patch_size % multiple or config.patch_size <= 0:
        raise DatasetError(
            f"patch size {config.patch_size} must be a positive multiple of {multiple} "
            f"(2**depth) for this network; e.g. {max(multiple, config.patch_size // multiple * multiple)}"
        )
    if not any(s.weight.any() for s in train):
        raise DatasetError("the training samples have no annotated pixels; correct or mark some first")
    check_start(checkpoint, resume)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    fmt = memory_format(device) if config.fast else torch.contiguous_format
    net = model.network.to(device, memory_format=fmt)  # type: ignore[call-overload]  # not in torch's stubs
    loss_fn = instance_loss if model.config.task == "instance" else semantic_loss
    trained = list(net.parameters())
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    start_weights = [p.detach().clone() for p in trained] if config.stay_close else []
    batches = _Batches(train, config)
    val_batches = _fixed_val_batches(val, config.patch_size, config.batch_size) if val else []
    best_state, best_val, bad_rounds = None, math.inf, 0
    start = time.perf_counter()
    step = 0
    planned = config.steps
    first_step_done = 0.0
    fingerprint = _fingerprint(model, train, val, config)
    last: TrainReport | None = None
    resumed: TrainState | None = None
    if checkpoint is not None and resume and Path(checkpoint).exists():
        state = resumed = load_checkpoint(checkpoint, fingerprint)
        net.load_state_dict(state.network)
        optimizer.load_state_dict(state.optimizer)
        best_state, best_val, bad_rounds = state.best_network, state.best_val, state.bad_rounds
        step, planned, start = state.step, state.planned, start - state.elapsed
        torch.set_rng_state(state.torch_rng)
    batch_stream = batches.from_step(step, config.data_workers)

    def run(x, y, w, soft=None):
        x = x.to(device).contiguous(memory_format=fmt)
        w = w.to(device)
        with autocast(device, config.fast):
            logits = net(x)
        loss = loss_fn(logits, y.to(device), w, config.boundary_weight)
        if soft is not None and config.anchor_weight:
            soft = soft.to(device)
            where = (w == 0) & (soft.sum(1) > 0)  # not annotated, and not padding
            loss = loss + config.anchor_weight * distill_loss(logits, soft, where,
                                                              model.config.task)
        return loss

    while not (config.patience and bad_rounds >= config.patience):
        check_cancel(cancel)
        elapsed = time.perf_counter() - start
        if step == 1:
            first_step_done = elapsed
        elif config.time_budget and step == _SPEED_STEPS + 1:
            rate = (elapsed - first_step_done) / _SPEED_STEPS
            planned = _plan_steps(config, elapsed, step, rate)
        progress = step / planned
        if config.time_budget:
            progress = max(progress, elapsed / config.time_budget)
        if progress >= 1.0:
            break
        lr = _lr_at(step, progress, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        net.train()
        if config.freeze_norm:
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        loss = run(*next(batch_stream))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if start_weights:
            with torch.no_grad():
                pull = min(1.0, lr * config.stay_close)
                for p, p0 in zip(trained, start_weights):
                    p.sub_(p - p0, alpha=pull)
        step += 1
        val_loss = None
        if val_batches and step % config.val_every == 0:
            net.eval()
            with torch.no_grad():
                val_loss = float(np.mean([run(*b).item() for b in val_batches]))
            if val_loss < best_val:
                best_val, bad_rounds = val_loss, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad_rounds += 1
        last = TrainReport(step, planned, float(loss.item()), lr, time.perf_counter() - start,
                           min(progress, 1.0), val_loss, best_val if best_state else None)
        if checkpoint is not None and step % config.val_every == 0:
            save_checkpoint(checkpoint, TrainState(
                step, planned, last.elapsed, best_val, bad_rounds,
                net.state_dict(), optimizer.state_dict(), best_state,
                torch.get_rng_state(), fingerprint,
                asdict(last)))
        yield last
    if last is None and resumed is not None:  # the checkpoint's run had already ended
        yield TrainReport(**resumed.last_report)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()


def _fingerprint(model: Model, train: Sequence[Sample], val: Sequence[Sample],
                 config: TrainConfig) -> dict:
    """What a continued run must share with the one that wrote its checkpoint (as JSON
    sees it, so tuples and lists compare alike)."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("device", "fast", "data_workers")}
    return json.loads(json.dumps({
        **settings, "network": asdict(model.config.network), "task": model.config.task,
        "train_images": [s.name for s in train], "val_images": [s.name for s in val]},
        default=str))


def fit(model: Model, train: Sequence[Sample], val: Sequence[Sample] = (),
        config: TrainConfig | None = None, progress: Optional[ProgressCallback] = None,
        on_report: Optional[Callable[[TrainReport], None]] = None,
        cancel: Optional[CancelToken] = None, checkpoint: str | Path | None = None,
        resume: bool = False) -> list[TrainReport]:
    """Run :func:`fit_iter` to the end; ``progress`` gets (permille done, 1000)."""
    history = []
    for rep in fit_iter(model, train, val, config, cancel, checkpoint, resume):
        history.append(rep)
        report(progress, int(rep.progress * 1000), 1000)
        if on_report is not None:
            on_report(rep)
    report(progress, 1000, 1000)
    return history


def split_validation(samples: list[Sample], val_fraction: float, val_last: int | None,
                     seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``val_last`` final samples (for serial sections) or a random fraction."""
    if val_last:
        if val_last >= len(samples):
            raise DatasetError(f"val_last={val_last} leaves no training images out of {len(samples)}")
        return samples[:-val_last], samples[-val_last:]
    n_val = int(round(len(samples) * val_fraction))
    if n_val == 0 or n_val >= len(samples):
        return samples, []
    order = np.random.default_rng(seed).permutation(len(samples))
    val_idx = set(order[:n_val].tolist())
    return ([s for i, s in enumerate(samples) if i not in val_idx],
            [s for i, s in enumerate(samples) if i in val_idx])


def train(data_dir: str | Path, *, model: Model | None = None, preset_name: str = "default",
          task: Task = "instance", class_names: tuple[str, ...] | None = None,
          in_channels: int = 1, invert_masks: bool = False, val_fraction: float = 0.05,
          val_last: int | None = None, config: TrainConfig | None = None, name: str = "model",
          progress: Optional[ProgressCallback] = None,
          on_report: Optional[Callable[[TrainReport], None]] = None,
          cancel: Optional[CancelToken] = None, checkpoint: str | Path | None = None,
          resume: bool = False) -> Model:
    """Train a model on a folder of image/mask pairs and return it, calibrated.

    A new model is built from ``preset_name`` unless ``model`` is given (then it is copied,
    never changed). Instance models get their seed threshold calibrated on the validation
    images; provenance (data, steps, scores, version) goes into the model's config.
    ``checkpoint``/``resume``: see :func:`fit_iter`.
    """
    check_start(checkpoint, resume)
    check_value("val_fraction", val_fraction, VAL_FRACTION, 0.05)
    check_value("val_last", val_last, VAL_LAST, None)
    config = config or TrainConfig()
    check_fields(config)
    if model is None:
        cfg = preset(preset_name, in_channels=in_channels, task=task, class_names=class_names)
        model = Model.create(cfg, name=name, seed=config.seed)
    else:
        model = model.copy(name)
    samples = load_folder(data_dir, model.config, invert_masks=invert_masks)
    if model.config.task == "instance":  # what fine-tuning compares new images with
        found = estimate([s.image for s in samples], [s.labels for s in samples])
        model.config.object_diameter = found.diameter
        model.config.object_polarity = found.polarity
    train_set, val_set = split_validation(samples, val_fraction, val_last, config.seed)
    history = fit(model, train_set, val_set, config, progress, on_report, cancel,
                  checkpoint, resume)
    provenance = {
        "data": file_name(data_dir, parts=2),
        "n_train_images": len(train_set),
        "n_val_images": len(val_set),
        "val_images": [s.name for s in val_set],
        "steps": history[-1].step if history else 0,
        "seconds": round(history[-1].elapsed, 1) if history else 0.0,
        "device": describe(pick_device(config.device)),
        "final_loss": round(history[-1].loss, 4) if history else None,
        "best_val_loss": history[-1].best_val_loss if history else None,
        "train_config": {k: v for k, v in asdict(config).items() if k != "augment"},
        "augment": asdict(config.augment),
        "invert_masks": invert_masks,
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if model.config.task == "instance" and val_set:
        threshold, acc = calibrate_seed_threshold(model, val_set, config.device)
        provenance["calibrated_seed_threshold"] = threshold
        provenance["val_accuracy@0.5"] = round(acc, 4)
    model.config.provenance = provenance
    return model
