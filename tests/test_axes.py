"""Tests for napari_unet.axes: guessing, validating and canonical views."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_unet.axes import guess_axes, make_layout, validate_axes
from napari_unet.errors import InvalidImageError


@pytest.mark.parametrize("shape,in_channels,expected", [
    ((256, 256), 1, "YX"),
    ((3, 256, 256), 3, "CYX"),
    ((3, 256, 256), 1, "ZYX"),
    ((256, 256, 3), 1, "YXC"),
    ((256, 256, 4), 3, "YXC"),
    ((51, 120, 122), 1, "ZYX"),
    ((4, 4, 4), 1, "ZYX"),
    ((10, 256, 256, 3), 1, "ZYXC"),
    ((10, 2, 64, 64), 2, "ZCYX"),
    ((5, 10, 64, 64), 1, "TZYX"),
    ((5, 10, 2, 64, 64), 1, "TZCYX"),
    ((5, 2, 10, 64, 64), 1, "TCZYX"),  # dim 2 > 8 cannot be channels
])
def test_guess_axes(shape, in_channels, expected) -> None:
    assert guess_axes(shape, in_channels) == expected


def test_guess_refuses_six_dimensions() -> None:
    with pytest.raises(InvalidImageError, match="axes"):
        guess_axes((2, 2, 2, 2, 8, 8))


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (3, 0, 5)])
def test_empty_images_are_refused(shape) -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        make_layout(np.zeros(shape), None)


@pytest.mark.parametrize("shape", [(), (10,)])
def test_fewer_than_two_dimensions_are_refused(shape) -> None:
    with pytest.raises(InvalidImageError, match="at least 2"):
        make_layout(np.zeros(shape), None)


@pytest.mark.parametrize("axes", ["YXQ", "YY", "ZX", "YXCZ", "TZYX", "XY ", "ZCY"])
def test_bad_axes_strings(axes) -> None:
    with pytest.raises(InvalidImageError):
        make_layout(np.zeros((4, 5, 6)), axes)


def test_axes_are_normalised() -> None:
    assert validate_axes("zyx", 3) == "ZYX"
    assert validate_axes("YXS", 3) == "YXC"  # tifffile's S (samples) is a channel axis
    assert make_layout(np.zeros((4, 5, 6)), "xyz").axes == "XYZ"


def test_non_numeric_dtypes_are_refused() -> None:
    with pytest.raises(InvalidImageError):
        make_layout(np.zeros((4, 4), np.complex64), None)
    with pytest.raises(InvalidImageError):
        make_layout(np.array([["a", "b"], ["c", "d"]]), None)


@pytest.mark.parametrize("axes,shape,canonical,label_shape", [
    ("YX", (5, 7), (1, 5, 7), (5, 7)),
    ("XY", (7, 5), (1, 5, 7), (5, 7)),
    ("YXC", (5, 7, 3), (3, 5, 7), (5, 7)),
    ("CYX", (2, 5, 7), (2, 5, 7), (5, 7)),
    ("ZYX", (4, 5, 7), (4, 1, 5, 7), (4, 5, 7)),
    ("ZYXC", (4, 5, 7, 3), (4, 3, 5, 7), (4, 5, 7)),
    ("CZYX", (2, 4, 5, 7), (4, 2, 5, 7), (4, 5, 7)),
    ("TZYX", (3, 4, 5, 7), (3, 4, 1, 5, 7), (3, 4, 5, 7)),
    ("TCZYX", (3, 2, 4, 5, 7), (3, 4, 2, 5, 7), (3, 4, 5, 7)),
    ("ZTYX", (4, 3, 5, 7), (4, 3, 1, 5, 7), (4, 3, 5, 7)),  # stack axes keep their order
])
def test_to_canonical_shapes(axes, shape, canonical, label_shape) -> None:
    image = np.arange(np.prod(shape)).reshape(shape)
    layout = make_layout(image, axes)
    view = layout.to_canonical(image)
    assert view.shape == canonical
    assert layout.label_shape == label_shape
    assert layout.plane_shape == (5, 7)
    # values follow the axes: the canonical Y/X really are the image's Y/X
    y, x = axes.index("Y"), axes.index("X")
    index = [0] * len(shape)
    index[y], index[x] = 4, 6
    assert view[(0,) * (view.ndim - 2) + (4, 6)] == image[tuple(index)]


def test_to_canonical_keeps_channel_values() -> None:
    image = np.random.default_rng(0).integers(0, 255, (6, 8, 3))
    view = make_layout(image, "YXC").to_canonical(image)
    for c in range(3):
        np.testing.assert_array_equal(view[c], image[..., c])


def test_to_canonical_stays_lazy_for_dask() -> None:
    image = da.zeros((4, 16, 16, 2), chunks=(1, 16, 16, 2))
    view = make_layout(image, "ZYXC").to_canonical(image)
    assert isinstance(view, da.Array) and view.shape == (4, 2, 16, 16)
