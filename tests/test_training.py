"""Tests for napari_unet.training: the loop learns, is reproducible, stops and reports."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import DSB_TRAIN, TickingClock, dsb_crop, pair_folder, small_config, small_model

import napari_unet.training as training
from napari_unet.calibrate import SEED_GRID
from napari_unet.data import make_sample
from napari_unet.errors import Cancelled, DatasetError
from napari_unet.progress import CancelToken
from napari_unet.training import TrainConfig, fit, split_validation, train

CONFIG = TrainConfig(steps=25, batch_size=2, patch_size=64, warmup_steps=3, lr=2e-3,
                     device="cpu", fast=False, seed=0)


@pytest.fixture(scope="module")
def samples(real_data):
    """Four real 96x96 DSB crops with their instance masks."""
    return [make_sample(stem[:8], *dsb_crop(real_data, stem, 96), small_config())
            for stem in DSB_TRAIN]


def _losses(history) -> list[float]:
    return [r.loss for r in history]


def test_short_fit_lowers_the_loss(samples) -> None:
    model = small_model(seed=0)
    calls = []
    history = fit(model, samples, (), CONFIG, progress=lambda d, t: calls.append((d, t)))
    losses = _losses(history)
    assert len(losses) == 25 and all(np.isfinite(losses))
    # measured: 2.58 -> 1.90 (ratio 0.74)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert [r.step for r in history] == list(range(1, 26))
    assert calls[-1] == (1000, 1000)
    assert not model.network.training  # left in eval mode, ready to predict


def test_same_seed_same_run(samples) -> None:
    runs = []
    for _ in range(2):
        model = small_model(seed=1)
        runs.append((_losses(fit(model, samples, (), replace(CONFIG, steps=6))), model))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].network.state_dict().items():
        assert torch.equal(value, runs[1][1].network.state_dict()[key]), key
    other = _losses(fit(small_model(seed=1), samples, (), replace(CONFIG, steps=6, seed=2)))
    assert other != runs[0][0]  # the seed really drives patches and augmentation


def test_no_annotated_pixels_is_a_dataset_error(samples) -> None:
    blank = [replace(s, weight=np.zeros_like(s.weight)) for s in samples]
    with pytest.raises(DatasetError, match="annotated"):
        fit(small_model(), blank, (), CONFIG)
    with pytest.raises(DatasetError):
        fit(small_model(), [], (), CONFIG)


def test_best_validation_weights_are_restored(samples) -> None:
    model = small_model(seed=0)
    snapshots = {}

    def keep(rep) -> None:
        if rep.val_loss is not None:
            snapshots[rep.step] = (rep.val_loss, copy.deepcopy(model.network.state_dict()))

    config = replace(CONFIG, steps=8, val_every=2, lr=2e-2, patience=None)
    history = fit(model, samples[:3], samples[3:], config, on_report=keep)
    assert sorted(snapshots) == [2, 4, 6, 8]
    best_step = min(snapshots, key=lambda s: snapshots[s][0])
    assert history[-1].best_val_loss == pytest.approx(snapshots[best_step][0])
    for key, value in snapshots[best_step][1].items():
        assert torch.equal(model.network.state_dict()[key], value), key


def test_patience_stops_early(samples) -> None:
    # lr 0 with frozen batch norm: the validation loss never changes, so it improves once
    # (from infinity) and then stops after `patience` rounds without gain
    config = replace(CONFIG, steps=200, val_every=1, patience=2, lr=0.0, freeze_norm=True)
    history = fit(small_model(), samples[:3], samples[3:], config)
    assert len(history) == 3
    assert history[0].val_loss == history[1].val_loss == history[2].val_loss


def test_steps_are_planned_from_the_measured_speed(samples, monkeypatch) -> None:
    """A slow machine (2 s a step on a fake clock) plans the steps that fit in the time
    budget after timing three steps, and reports the plan; a fast one runs them all."""
    monkeypatch.setattr(training, "time", TickingClock())  # two readings per step
    history = fit(small_model(), samples, (), replace(CONFIG, steps=100, time_budget=40.0))
    planned = history[-1].total_steps
    assert history[0].total_steps == 100 and 10 <= planned <= 25
    assert planned - 2 <= len(history) <= planned
    assert all(r.total_steps == planned for r in history[4:])
    monkeypatch.undo()
    quick = fit(small_model(), samples, (), replace(CONFIG, steps=6, time_budget=3600.0))
    assert len(quick) == 6 and quick[-1].total_steps == 6


def test_time_budget_stops_training(samples, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "time", TickingClock())
    history = fit(small_model(), samples, (), replace(CONFIG, steps=50, time_budget=6.0))
    assert 1 <= len(history) <= 6
    assert all(0 < r.progress < 1 for r in history)
    assert history[-1].elapsed <= 8.0


def test_cancel_stops_with_cancelled(samples) -> None:
    token = CancelToken()
    steps = []

    def on_report(rep) -> None:
        steps.append(rep.step)
        if rep.step == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        fit(small_model(), samples, (), CONFIG, on_report=on_report, cancel=token)
    assert steps == [1, 2, 3]


def test_split_validation(samples) -> None:
    train_set, val_set = split_validation(samples, 0.5, None, seed=0)
    assert len(train_set) == len(val_set) == 2
    assert {s.name for s in train_set} | {s.name for s in val_set} == {s.name for s in samples}
    assert split_validation(samples, 0.5, None, seed=0)[1] == val_set  # reproducible
    train_set, val_set = split_validation(samples, 0.0, 1, seed=0)
    assert val_set == samples[-1:] and train_set == samples[:-1]
    assert split_validation(samples, 0.01, None, seed=0) == (samples, [])
    with pytest.raises(DatasetError):
        split_validation(samples, 0.0, 4, seed=0)


def test_train_on_a_folder(real_data, tmp_path: Path) -> None:
    folder = pair_folder(tmp_path / "data", real_data, DSB_TRAIN)
    base = small_model(seed=0)
    before = copy.deepcopy(base.network.state_dict())
    config = replace(CONFIG, steps=10, val_every=5)
    reports = []
    model = train(folder, model=base, val_fraction=0.5, config=config, name="tiny",
                  on_report=reports.append)
    assert model is not base and model.name == "tiny"
    for key, value in before.items():  # the given model is copied, never changed
        assert torch.equal(base.network.state_dict()[key], value), key
    prov = model.config.provenance
    assert prov["data"] == f"{folder.parent.name}/{folder.name}"  # no absolute path
    assert prov["n_train_images"] == 2 and prov["n_val_images"] == 2
    assert set(prov["val_images"]) < set(DSB_TRAIN)
    assert prov["steps"] == 10 and len(reports) == 10
    assert prov["train_config"]["steps"] == 10
    assert prov["best_val_loss"] is not None
    assert prov["package_version"] and prov["created"]
    assert prov["device"].startswith("cpu: ")  # a training time means little without it
    assert prov["calibrated_seed_threshold"] in SEED_GRID
    assert model.config.postprocess.seed_threshold == prov["calibrated_seed_threshold"]
    assert 0.0 <= prov["val_accuracy@0.5"] <= 1.0


def test_train_on_a_folder_without_pairs(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no image/mask pairs"):
        train(tmp_path, model=small_model(), config=CONFIG)
    with pytest.raises(DatasetError, match="images/"):
        train(tmp_path / "images", model=small_model(), config=CONFIG)


def test_stay_close_pulls_the_weights_back_to_the_start(samples) -> None:
    """L2-SP after every step: a pull of the full learning step (lr x stay_close >= 1)
    leaves the weights where they started; a moderate one keeps them nearer than none."""
    def distance(stay: float) -> float:
        model = small_model(seed=1)
        start = [p.detach().clone() for p in model.network.parameters()]
        fit(model, samples, (), replace(CONFIG, steps=4, stay_close=stay))
        return float(sum((p.detach() - s).norm() for p, s in zip(model.network.parameters(), start)))

    free, held = distance(0.0), distance(10.0 / CONFIG.lr)
    assert distance(1e9) < 1e-6  # rounding only
    assert 0.0 < held < free
