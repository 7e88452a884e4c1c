"""Tests for napari_unet.zarr_io: OME-Zarr labels written and read back with their axes
and pixel size, plain zarr arrays read lazily, and unreadable stores named clearly."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet.errors import ImageReadError, InvalidLabelsError
from napari_unet.tiff_io import read_image
from napari_unet.zarr_io import create_labels, is_zarr, read_zarr


def test_ome_zarr_labels_round_trip_with_axes_pixel_size_and_metadata(tmp_path):
    labels = create_labels(tmp_path / "l.zarr", (2, 30, 40), "ZYX", pixel_size=(2.0, 0.5, 0.25),
                           unit="nm", metadata={"kind": "labels", "model": "nuclei"})
    labels[1, 3:9, 4:20] = 7
    back = read_image(tmp_path / "l.zarr")  # the TIFF reader dispatches zarr folders
    assert isinstance(back.data, da.Array) and back.axes == "ZYX"
    assert back.pixel_size == (2.0, 0.5, 0.25) and back.unit == "nm"
    assert back.metadata == {"kind": "labels", "model": "nuclei"}
    np.testing.assert_array_equal(np.asarray(back.data), labels[:])
    assert labels.dtype == np.uint32 and labels.chunks == (1, 30, 40)


def test_a_plain_zarr_array_reads_lazily_with_guessed_axes(tmp_path):
    data = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10)
    zarr.save_array(str(tmp_path / "plain.zarr"), data)
    assert is_zarr(tmp_path / "plain.zarr") and not is_zarr(tmp_path)
    back = read_zarr(tmp_path / "plain.zarr")
    assert back.axes == "YX" and back.pixel_size is None
    np.testing.assert_array_equal(back.data.compute(), data)


def test_a_group_of_several_arrays_without_metadata_is_refused_with_the_fix(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("a", shape=(4, 4), dtype="u1")
    group.create_array("b", shape=(4, 4), dtype="u1")
    with pytest.raises(ImageReadError, match="open the array folder inside it"):
        read_zarr(tmp_path / "g.zarr")


def test_label_axes_must_match_the_shape(tmp_path):
    with pytest.raises(InvalidLabelsError, match="do not match"):
        create_labels(tmp_path / "x.zarr", (3, 4), "ZYX")
