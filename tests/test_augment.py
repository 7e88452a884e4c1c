"""Tests for napari_unet.augment: crops and transforms keep image, target and weight aligned."""

from __future__ import annotations

import numpy as np

from napari_unet.augment import AugmentConfig, augment, random_crop


def _coded(shape=(40, 52)):
    """An image whose values encode the pixel position, and matching target/weight."""
    yy, xx = np.indices(shape)
    code = (yy * 1000 + xx).astype(np.float32)
    return code[None], code.astype(np.int64), code.copy()


def test_random_crop_is_aligned_and_sized() -> None:
    image, target, weight = _coded()
    rng = np.random.default_rng(0)
    for _ in range(20):
        i, t, w = random_crop(image, target, weight, 32, rng)
        assert i.shape == (1, 32, 32) and t.shape == w.shape == (32, 32)
        np.testing.assert_array_equal(i[0], t)
        np.testing.assert_array_equal(t, w)


def test_small_images_are_padded_with_zero_weight() -> None:
    image, target, weight = _coded((10, 12))
    weight = np.ones_like(weight)
    i, t, w = random_crop(image, target, weight, 16, np.random.default_rng(0))
    assert i.shape == (1, 16, 16)
    assert w[:10, :12].all() and not w[10:].any() and not w[:, 12:].any()


def test_focus_centres_crops_on_both_classes_equally() -> None:
    image, target, weight = _coded((200, 200))
    focus = (np.array([[180, 20]]), np.array([[20, 180]]))  # one object, one background pixel
    rng = np.random.default_rng(1)
    near = {0: 0, 1: 0}
    for _ in range(40):
        _, t, _ = random_crop(image, target, weight, 32, rng, focus)
        ys, xs = t // 1000, t % 1000
        for k, (y, x) in enumerate((focus[0][0], focus[1][0])):
            near[k] += int(ys.min() <= y <= ys.max() and xs.min() <= x <= xs.max())
    assert near[0] + near[1] == 40 and min(near.values()) >= 10


def test_elastic_deformation_moves_pixels_by_about_alpha() -> None:
    """The displacement's standard deviation is ``elastic_alpha`` pixels (it was 0.19 px
    while the alpha was divided by sigma and multiplied again)."""
    from napari_unet.augment import _elastic

    yy, xx = np.meshgrid(np.arange(128.0), np.arange(128.0), indexing="ij")
    moved_y, = _elastic([(yy, 1)], alpha=3.0, sigma=10.0, rng=np.random.default_rng(0))
    inner = (slice(20, -20), slice(20, -20))  # away from the reflected edges
    shift = np.abs(moved_y - yy)[inner]
    assert 1.5 < float(shift.mean()) < 4.5


def test_geometric_augmentation_moves_everything_alike() -> None:
    image, target, weight = _coded((32, 32))
    config = AugmentConfig(elastic_p=0.0, intensity_p=0.0, gamma_p=0.0, noise_p=0.0)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(16):
        i, t, w = augment(image, target, weight, rng, config)
        np.testing.assert_array_equal(i[0], t)
        np.testing.assert_array_equal(t, w)
        assert sorted(t.ravel()) == sorted(target.ravel())  # a permutation of pixels
        seen.add(t.tobytes())
    assert len(seen) > 3  # rotations and flips really happen


def test_elastic_keeps_labels_integral_and_aligned() -> None:
    labels = np.zeros((48, 48), np.int64)
    labels[10:30, 10:30] = 2
    image = (labels > 0).astype(np.float32)[None]
    config = AugmentConfig(elastic_p=1.0, intensity_p=0.0, gamma_p=0.0, noise_p=0.0)
    i, t, w = augment(image, labels, np.ones((48, 48), np.float32), np.random.default_rng(3), config)
    assert set(np.unique(t)) <= {0, 2}  # nearest-neighbour: no invented classes
    assert ((i[0] > 0.5) == (t > 0)).mean() > 0.97


def test_disabled_changes_nothing() -> None:
    image, target, weight = _coded()
    i, t, w = augment(image, target, weight, np.random.default_rng(0), AugmentConfig(enabled=False))
    assert i is image and t is target and w is weight


_ONLY_GEOMETRY = AugmentConfig(elastic_p=0.0, intensity_p=0.0, gamma_p=0.0, noise_p=0.0)


def test_inversion_turns_bright_objects_dark() -> None:
    labels = np.zeros((32, 32), np.int64)
    labels[8:20, 8:20] = 1
    image = (labels > 0).astype(np.float32)[None]
    config = AugmentConfig(elastic_p=0.0, intensity_p=0.0, gamma_p=0.0, noise_p=0.0,
                           invert_p=1.0)
    i, t, _ = augment(image, labels, np.ones((32, 32), np.float32), np.random.default_rng(0),
                      config)
    np.testing.assert_array_equal(i[0], 1.0 - (t > 0))  # objects now dark on light


def test_blur_smooths_the_image_only() -> None:
    image, target, weight = _coded((32, 32))
    noisy = np.random.default_rng(1).random((1, 32, 32)).astype(np.float32)
    config = AugmentConfig(elastic_p=0.0, intensity_p=0.0, gamma_p=0.0, noise_p=0.0,
                           blur_p=1.0, blur_sigma=(1.5, 1.5))
    i, t, _ = augment(noisy, target, weight, np.random.default_rng(0), config)
    assert i.std() < 0.5 * noisy.std()
    assert sorted(t.ravel()) == sorted(target.ravel())  # labels untouched by blur


def test_scaled_crop_zooms_objects_and_keeps_them_aligned() -> None:
    labels = np.zeros((128, 128), np.int64)
    labels[40:60, 40:60] = 3  # a 20 x 20 object
    image = (labels > 0).astype(np.float32)[None]
    weight = np.ones((128, 128), np.float32)
    rng = np.random.default_rng(0)
    i, t, w = random_crop(image, labels, weight, 96, rng, focus=(np.argwhere(labels > 0),),
                          scale=2.0)
    assert i.shape == (1, 96, 96) and t.shape == w.shape == (96, 96)
    assert set(np.unique(t)) <= {0, 3}  # nearest neighbour: no invented classes
    assert 1400 < np.count_nonzero(t) <= 1600  # 400 px object, 4x the area
    assert ((i[0] > 0.5) == (t > 0)).mean() > 0.99


def test_scale_is_drawn_only_when_asked() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert _ONLY_GEOMETRY.draw_scale(rng) == 1.0
    assert rng.bit_generator.state == state  # runs without scaling keep their random streams
    scales = [AugmentConfig(scale_p=1.0, scale_range=(0.5, 2.0)).draw_scale(rng)
              for _ in range(200)]
    assert 0.5 <= min(scales) < 0.6 and 1.8 < max(scales) <= 2.0
