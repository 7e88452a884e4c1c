"""Tests for napari_unet.data: folders of pairs, channels, and sample checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _data import DSB_TRAIN, dsb_crop, dsb_rgba, pair_folder, small_config

from napari_unet.data import find_pairs, load_folder, make_sample, to_channels
from napari_unet.errors import DatasetError, InvalidImageError, InvalidLabelsError


def test_find_pairs_sorts_naturally_and_skips_unpaired(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("10", "2", "1", "b", "a"):
        (tmp_path / "images" / f"{name}.png").touch()
        (tmp_path / "masks" / f"{name}.tif").touch()
    (tmp_path / "images" / "lonely.png").touch()
    (tmp_path / "images" / "notes.txt").touch()
    assert [p[0].stem for p in find_pairs(tmp_path)] == ["1", "2", "10", "a", "b"]


def test_load_folder_of_real_pairs(real_data, tmp_path: Path) -> None:
    folder = pair_folder(tmp_path / "d", real_data, DSB_TRAIN[:2])
    samples = load_folder(folder, small_config())
    assert [s.name for s in samples] == list(DSB_TRAIN[:2])
    s = samples[0]
    assert s.image.shape == (1, 256, 256) and s.image.dtype == np.float32
    assert s.target.shape == (256, 256) and set(np.unique(s.target)) == {0, 1, 2}
    assert s.weight.all() and s.focus is None
    assert len(np.unique(s.labels)) - 1 == 36


def test_to_channels(real_data) -> None:
    rgba = dsb_rgba(real_data, DSB_TRAIN[0])
    gray = to_channels(rgba, "YXC", 1)
    assert gray.shape == (1, 256, 256)
    np.testing.assert_allclose(gray[0], rgba[..., :3].mean(-1))
    assert to_channels(rgba, "YXC", 3).shape == (3, 256, 256)  # alpha dropped
    with pytest.raises(InvalidImageError, match="2D"):
        to_channels(np.zeros((3, 8, 8)), "ZYX", 1)
    with pytest.raises(InvalidImageError, match="channel"):
        to_channels(np.zeros((2, 8, 8)), "CYX", 1)


def test_make_sample_checks_labels(real_data) -> None:
    image, mask = dsb_crop(real_data, DSB_TRAIN[0], 64)
    config = small_config()
    with pytest.raises(InvalidLabelsError, match="do not match"):
        make_sample("x", image, mask[:60], config)
    with pytest.raises(InvalidLabelsError, match="non-negative"):
        make_sample("x", image, mask.astype(np.int32) - 1, config)
    with pytest.raises(InvalidLabelsError):
        make_sample("x", image, mask.astype(np.float32), config)
    weight = np.zeros(mask.shape, np.float32)
    weight[5, 7] = 1
    s = make_sample("x", image, mask, config, weight=weight)
    objects, background = s.focus  # split by class, so patches centre on both alike
    pixel = objects if mask[5, 7] else background
    np.testing.assert_array_equal(pixel, [[5, 7]])
    assert len(objects) + len(background) == 1


def test_missing_subfolders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="images/"):
        find_pairs(tmp_path)
