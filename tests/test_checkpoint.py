"""Tests for napari_unet.checkpoint: a stopped run continues exactly where it stopped."""

from __future__ import annotations

from dataclasses import replace
from itertools import islice
from pathlib import Path

import pytest
import torch
from _data import DSB_TRAIN, dsb_crop, small_config, small_model

from napari_unet.checkpoint import CheckpointError
from napari_unet.data import make_sample
from napari_unet.training import TrainConfig, fit, fit_iter

CONFIG = TrainConfig(steps=8, batch_size=2, patch_size=64, warmup_steps=2, val_every=2,
                     device="cpu", fast=False, seed=0)


@pytest.fixture(scope="module")
def samples(real_data):
    return [make_sample(stem[:8], *dsb_crop(real_data, stem, 96), small_config())
            for stem in DSB_TRAIN]


def test_a_resumed_run_ends_as_an_uninterrupted_one(samples, tmp_path: Path) -> None:
    train, val = samples[:3], samples[3:]
    whole = small_model(seed=0)
    history = fit(whole, train, val, CONFIG)
    ckpt = tmp_path / "run.ckpt"
    stopped = small_model(seed=0)
    list(islice(fit_iter(stopped, train, val, CONFIG, checkpoint=ckpt), 5))  # stops at 5
    assert ckpt.exists()  # written at step 4
    continued = small_model(seed=0)  # a new process: fresh weights, the checkpoint's state
    rest = fit(continued, train, val, CONFIG, checkpoint=ckpt, resume=True)
    assert [r.step for r in rest] == [5, 6, 7, 8]
    assert [r.loss for r in rest] == [r.loss for r in history[4:]]
    for key, value in whole.network.state_dict().items():
        assert torch.equal(value, continued.network.state_dict()[key]), key


def test_an_existing_checkpoint_is_not_overwritten_unasked(samples, tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    list(islice(fit_iter(small_model(seed=0), samples, (), CONFIG, checkpoint=ckpt), 2))
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="--resume"):
        fit(small_model(seed=0), samples, (), CONFIG, checkpoint=ckpt)
    assert ckpt.read_bytes() == before


def test_a_checkpoint_of_other_settings_is_refused(samples, tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    list(islice(fit_iter(small_model(seed=0), samples, (), CONFIG, checkpoint=ckpt), 2))
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.002, now 0.001"):
        fit(small_model(seed=0), samples, (), replace(CONFIG, lr=1e-3), checkpoint=ckpt,
            resume=True)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_a_foreign_or_damaged_file_is_refused(samples, tmp_path: Path, content) -> None:
    ckpt = tmp_path / "run.ckpt"
    if content is None:  # a torch file of someone else's
        torch.save({"weights": torch.zeros(2)}, ckpt)
    else:
        ckpt.write_bytes(content)
    with pytest.raises(CheckpointError, match="delete it|not a napari-unet"):
        fit(small_model(seed=0), samples, (), CONFIG, checkpoint=ckpt, resume=True)


def test_a_checkpoint_of_the_older_format_is_refused_naming_why(samples, tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    torch.save({"format": "napari-unet-checkpoint/1"}, ckpt)
    with pytest.raises(CheckpointError, match="older napari-unet.*delete it"):
        fit(small_model(seed=0), samples, (), CONFIG, checkpoint=ckpt, resume=True)


def test_a_run_resumed_with_worker_processes_ends_as_a_single_process_one(
        samples, tmp_path: Path) -> None:
    """Batches made by worker processes (the GPU setting) are those of the training
    process, also after a resume, so the weights match bit for bit on the CPU."""
    train, val = samples[:3], samples[3:]
    whole = small_model(seed=0)
    fit(whole, train, val, CONFIG)
    ckpt = tmp_path / "run.ckpt"
    list(islice(fit_iter(small_model(seed=0), train, val, replace(CONFIG, data_workers=2),
                         checkpoint=ckpt), 5))
    continued = small_model(seed=0)
    fit(continued, train, val, replace(CONFIG, data_workers=2), checkpoint=ckpt, resume=True)
    for key, value in whole.network.state_dict().items():
        assert torch.equal(value, continued.network.state_dict()[key]), key
