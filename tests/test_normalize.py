"""Tests for napari_unet.normalize: every dtype alike, bad values refused."""

from __future__ import annotations

import numpy as np
import pytest
from _data import dsb_pair, small_model

import napari_unet.normalize as normalize_module
from napari_unet.config import NormalizationConfig
from napari_unet.errors import InvalidImageError
from napari_unet.normalize import channel_percentiles, normalize
from napari_unet.segment import prepare_image, segment

CONFIG = NormalizationConfig()


def _norm(plane: np.ndarray) -> np.ndarray:
    plane = plane[None] if plane.ndim == 2 else plane
    return normalize(plane, channel_percentiles(plane, CONFIG, channel_axis=0))


@pytest.fixture(scope="module")
def base(real_data) -> np.ndarray:
    """A real 8-bit fluorescence crop, as integers 0..255."""
    image, _ = dsb_pair(real_data, "003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1")
    return image[:96, :96].astype(np.int64)


def test_dtypes_give_the_same_result(base: np.ndarray) -> None:
    reference = _norm(base.astype(np.uint8))
    assert reference.dtype == np.float32
    assert reference.min() < 0.05 and reference.max() > 0.95  # percentiles land on 0 and 1
    variants = {
        "uint16": (base * 257).astype(np.uint16),
        "int32": (base * 1000 - 70_000).astype(np.int32),
        "int64": (base * 3 + 5).astype(np.int64),
        "uint32": (base * 65536).astype(np.uint32),
        "float32": (base / 255.0).astype(np.float32),
        "float64": base / 255.0,
        # a large offset relative to the range: float32 arithmetic alone would lose ~3e-4
        "float64-offset": base / 255.0 * 1e-3 - 4.0,
        "int64-offset": base * 7 + 3_000_000_000,
    }
    for name, data in variants.items():
        np.testing.assert_allclose(_norm(data), reference, atol=2e-5, err_msg=name)


def test_bool_matches_its_uint8_twin(base: np.ndarray) -> None:
    mask = base > np.median(base)
    np.testing.assert_array_equal(_norm(mask), _norm(mask.astype(np.uint8) * 255))
    assert set(np.unique(_norm(mask))) == {0.0, 1.0}


def test_per_channel(base: np.ndarray) -> None:
    two = np.stack([base, base * 40 + 100])
    out = normalize(two, channel_percentiles(two, CONFIG, channel_axis=0))
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    yxc = np.moveaxis(two, 0, -1)
    np.testing.assert_allclose(channel_percentiles(yxc, CONFIG, channel_axis=-1),
                               channel_percentiles(two, CONFIG, channel_axis=0))


def test_constant_image_maps_to_zero() -> None:
    out = _norm(np.full((16, 16), 1234, np.uint16))
    assert np.isfinite(out).all() and (out == 0).all()


def test_dtype_never_reaches_the_network(base: np.ndarray) -> None:
    """segment() gives the same labels for the same relative data in any dtype."""
    model = small_model(seed=0)
    a = prepare_image(base.astype(np.uint8), model).plane(())
    b = prepare_image((base * 1000).astype(np.int32), model).plane(())
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    image = np.random.default_rng(0).random((32, 32))
    image[3, 5] = bad
    with pytest.raises(InvalidImageError, match="nan_to_num"):
        channel_percentiles(image[None], CONFIG, channel_axis=0)
    with pytest.raises(InvalidImageError):
        segment(image, small_model(), device="cpu")


def test_all_nan_says_so() -> None:
    with pytest.raises(InvalidImageError, match="no finite values"):
        channel_percentiles(np.full((1, 8, 8), np.nan), CONFIG, channel_axis=0)


def test_nan_missed_by_the_subsample_is_still_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large images are subsampled for percentiles; the full plane is still checked."""
    monkeypatch.setattr(normalize_module, "_SUBSAMPLE", 100)
    image = np.random.default_rng(0).random((40, 40))
    image[1, 1] = np.nan  # off the stride-2 subsample grid
    percentiles = channel_percentiles(image[None], CONFIG, channel_axis=0)  # does not see it
    assert np.isfinite(percentiles).all()
    with pytest.raises(InvalidImageError):
        normalize(image[None], percentiles)


def test_complex_is_refused_where_images_enter() -> None:
    with pytest.raises(InvalidImageError, match="complex"):
        segment(np.ones((8, 8), np.complex64), small_model(), device="cpu")
