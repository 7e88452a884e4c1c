"""Tests for napari_unet.color: RGB pictures become gray with the nuclei's contrast kept."""

from __future__ import annotations

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from _data import DSB_TRAIN, dsb_rgba

from napari_unet.axes import fit_channels
from napari_unet.color import RGB_MODES, conversion_for
from napari_unet.errors import InvalidSettingError
from napari_unet.options import SegmentOptions

HISTO = "dsb2018_histo_brightfield/train/{}/0121d6759c5adb290c8e828fc882f37dfaf3663ec885c663859948c154a443ed.{}"


def _histo(root):
    """A stained (H&E-like) section: (3, Y, X) uint8, and its nuclei mask."""
    rgba = np.asarray(iio.imread(root / HISTO.format("images", "png")))
    return np.moveaxis(rgba[..., :3], -1, 0), np.asarray(tifffile.imread(root / HISTO.format("masks", "tif")))


def _contrast(gray: np.ndarray, mask: np.ndarray) -> float:
    """Median inside the nuclei minus median outside, in units of the image's spread."""
    gray = gray[0]
    return float((np.median(gray[mask > 0]) - np.median(gray[mask == 0])) / gray.std())


def test_a_stained_section_gets_bright_nuclei(real_data) -> None:
    rgb, mask = _histo(real_data)
    auto = conversion_for(rgb)
    assert auto.mode == "optical-density"
    assert _contrast(fit_channels(rgb, 1), mask) > 0.5  # nuclei bright, as in fluorescence
    assert _contrast(fit_channels(rgb, 1, "mean"), mask) < -0.5  # the mean: dark nuclei
    assert _contrast(fit_channels(rgb, 1, "hematoxylin"), mask) > 0.5


def test_fluorescence_saved_as_rgb_keeps_the_mean(real_data) -> None:
    rgba = np.moveaxis(dsb_rgba(real_data, DSB_TRAIN[0]), -1, 0)
    assert conversion_for(rgba[:3]).mode == "mean"
    np.testing.assert_array_equal(fit_channels(rgba, 1), rgba[:3].astype(np.float32).mean(0, keepdims=True))


def test_lazy_stacks_convert_block_by_block_like_a_whole_plane(real_data) -> None:
    rgb, _ = _histo(real_data)
    stack = np.stack([rgb, rgb[:, ::-1]])  # (Z, C, Y, X)
    lazy = da.from_array(stack, chunks=(1, 1, 64, 80))  # blocks smaller than a plane
    gray = fit_channels(lazy, 1)
    assert isinstance(gray, da.Array) and gray.shape == (2, 1) + rgb.shape[1:]
    whole = conversion_for(rgb).apply(rgb)  # the first plane decides, for every plane
    np.testing.assert_allclose(np.asarray(gray[0]), whole, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gray[1]), whole[:, ::-1], rtol=1e-6)


def test_an_unknown_conversion_is_refused() -> None:
    with pytest.raises(InvalidSettingError, match="rgb"):
        SegmentOptions(rgb="hsv")
    with pytest.raises(InvalidSettingError, match="optical-density"):
        conversion_for(np.zeros((3, 4, 4)), "hsv")
    assert set(RGB_MODES) == {"auto", "mean", "optical-density", "hematoxylin"}
