"""Tests for napari_unet.device: per-device defaults and the CLI's allocator setting."""

from __future__ import annotations

import sys

import torch

from napari_unet.device import default_batch, keep_freed_memory


def test_tiles_per_pass_suit_each_device():
    assert default_batch(torch.device("cpu")) == 2
    assert default_batch(torch.device("cuda")) > default_batch(torch.device("cpu"))


def test_the_cli_allocator_setting_applies_on_linux():
    assert keep_freed_memory() is sys.platform.startswith("linux")
