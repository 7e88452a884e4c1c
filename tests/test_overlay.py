"""Tests for napari_unet.overlay: a PNG preview, written atomically."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from napari_unet.errors import OutputWriteError
from napari_unet.overlay import overlay_rgb, write_overlay


def test_overlay_marks_objects_and_outlines() -> None:
    plane = np.tile(np.linspace(0, 1000, 32), (32, 1))
    labels = np.zeros((32, 32), np.uint16)
    labels[8:20, 8:20] = 1
    rgb = overlay_rgb(plane, labels)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert (rgb[8, 10] == 255).all()  # outline pixel is white
    assert not (rgb[14, 14] == rgb[14, 14][0]).all()  # interior is tinted
    assert (rgb[28, 3] == rgb[28, 3][0]).all()  # background stays gray


def test_write_overlay_never_overwrites(tmp_path: Path) -> None:
    labels = np.zeros((16, 16), np.uint8)
    labels[4:9, 4:9] = 1
    path = write_overlay(tmp_path / "o.png", np.random.default_rng(0).random((16, 16)), labels)
    assert iio.imread(path).shape == (16, 16, 3)
    before = path.read_bytes()
    with pytest.raises(OutputWriteError):
        write_overlay(path, np.zeros((16, 16)), labels)
    assert path.read_bytes() == before
