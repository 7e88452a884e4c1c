"""Label images through the public API: what counts as one, reading labels, and writing
label TIFFs (round trips with their calibration and provenance, refusals, atomic replacement)."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_unet.errors import InvalidLabelsError, OutputWriteError
from napari_unet.io import check_labels, read_image, read_labels, smallest_uint, write_labels


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- what labels are


def test_one_label_check_with_a_policy_per_caller():
    whole = np.array([[0.0, 2.0]])
    with pytest.raises(InvalidLabelsError, match="float64"):
        check_labels(whole, "x")  # read, written or trained on: never a float
    scored = check_labels(whole, "x", whole_floats=True)  # scored: whole numbers are ids
    assert scored.dtype == np.int64 and scored.tolist() == [[0, 2]]
    ids = np.array([[0, 3]], np.int16)
    assert check_labels(ids, "x") is ids and check_labels(ids, "x", whole_floats=True) is ids
    for policy in (False, True):
        with pytest.raises(InvalidLabelsError, match="set negative pixels to 0"):
            check_labels(np.array([[0, -1]]), "x", whole_floats=policy)
        assert check_labels(np.array([True, False]), "x", whole_floats=policy).dtype == np.uint8


@pytest.mark.parametrize("value,dtype", [(0, np.uint8), (255, np.uint8), (256, np.uint16),
                                         (65536, np.uint32), (2**32, np.uint64)])
def test_smallest_uint(value, dtype) -> None:
    assert smallest_uint(value) == np.dtype(dtype)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("top", "dtype"),
    [(1, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.uint32)],
)
def test_smallest_dtype_holding_the_largest_id(tmp_path, top, dtype):
    labels = np.zeros((6, 7), np.int64)
    labels[2, 3] = top
    path = write_labels(tmp_path / "l.tif", labels)
    back = read_labels(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)


def test_2d_imagej_file_with_pixel_size_and_metadata(tmp_path):
    labels = np.arange(20, dtype=np.int32).reshape(4, 5)
    meta = {"model": "nuclei", "threshold": 0.7, "napari_unet": "0.1.0"}
    path = write_labels(tmp_path / "l.tif", labels, pixel_size=(0.325, 0.325), metadata=meta)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["unit"] == "micron"
        assert json.loads(tif.imagej_metadata["Info"]) == meta
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    image = read_image(path)
    assert image.axes == "YX"
    assert image.pixel_size == pytest.approx((0.325, 0.325))
    assert image.unit == "um"
    assert image.metadata == meta


def test_3d_stack_opens_as_imagej_stack_with_spacing(tmp_path):
    labels = np.random.default_rng(1).integers(0, 300, (5, 8, 9))
    path = write_labels(
        tmp_path / "l.tif", labels, axes="ZYX", pixel_size=(2.0, 0.5, 0.25), metadata={"a": 1}
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["slices"] == 5
        assert tif.imagej_metadata["spacing"] == pytest.approx(2.0)
        assert tif.series[0].axes == "ZYX"
    image = read_image(path)
    assert (image.axes, image.data.dtype) == ("ZYX", np.uint16)
    assert image.pixel_size == pytest.approx((2.0, 0.5, 0.25))
    assert image.metadata == {"a": 1}
    np.testing.assert_array_equal(image.data, labels)


def test_uint32_labels_are_ome_tiff_with_calibration_and_metadata(tmp_path):
    labels = np.zeros((2, 3, 4, 5), np.uint64)
    labels[1, 2, 3, 4] = 70000
    path = write_labels(
        tmp_path / "l.tif", labels, axes="TZYX", pixel_size=(3, 0.1, 0.1), unit="nm",
        metadata={"model": "x"},
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and not tif.is_imagej
        assert tif.series[0].axes == "TZYX"
    image = read_image(path)
    assert (image.axes, image.data.dtype) == ("TZYX", np.uint32)
    assert image.pixel_size == pytest.approx((0.003, 1e-4, 1e-4))  # nm -> um
    assert image.unit == "um"
    assert image.metadata == {"model": "x"}
    np.testing.assert_array_equal(image.data, labels)


def test_relative_unit_and_bool_mask(tmp_path):
    path = write_labels(
        tmp_path / "m.tif", np.eye(4, dtype=bool)[None].repeat(2, 0), pixel_size=(2.18, 1, 1),
        unit="pixel",
    )
    image = read_image(path)
    assert image.data.dtype == np.uint8 and image.data.max() == 1
    assert image.pixel_size == pytest.approx((2.18, 1.0, 1.0))
    assert image.unit == "pixel"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    labels=st.one_of(
        arrays(np.int64, st.tuples(st.integers(1, 9), st.integers(1, 9)),
               elements=st.integers(0, 70000)),
        arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
               elements=st.integers(0, 70000)),
    ),
    pixel=st.floats(0.01, 100),
    lazy=st.booleans(),
)
def test_round_trip_property(tmp_path, labels, pixel, lazy):
    """In memory or lazy (dask: streamed tile by tile into a tiled OME-TIFF), what is
    written reads back the same."""
    import dask.array as da

    sizes = (pixel,) * labels.ndim
    given_labels = da.from_array(labels, chunks=3) if lazy else labels
    path = write_labels(tmp_path / "p.tif", given_labels, pixel_size=sizes, overwrite=True)
    back = read_image(path)
    expected = labels[0] if labels.ndim == 3 and labels.shape[0] == 1 else labels
    assert back.data.shape == expected.shape
    np.testing.assert_array_equal(back.data, expected)
    assert back.pixel_size == pytest.approx((pixel,) * expected.ndim, rel=1e-6)
    assert _files(tmp_path) == ["p.tif"]


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (np.array([[0, -1], [2, 3]]), "negative"),
        (np.zeros((3, 3), np.float32), "float32"),
        (np.full((2, 2), 2**32, np.int64), "32 bits"),
        (np.zeros((0, 3), np.uint8), "empty"),
    ],
)
@pytest.mark.parametrize("lazy", [False, True])
def test_invalid_labels(tmp_path, labels, words, lazy):
    """Refused with the reason, in memory and lazy (dask, streamed) alike; nothing written."""
    import dask.array as da

    given = da.from_array(labels, chunks=1) if lazy else labels
    with pytest.raises(InvalidLabelsError, match=words):
        write_labels(tmp_path / "l.tif", given)
    assert _files(tmp_path) == []


def test_axes_must_match_the_array(tmp_path):
    with pytest.raises(InvalidLabelsError, match="axes"):
        write_labels(tmp_path / "l.tif", np.zeros((2, 3, 4), np.uint8), axes="YX")
    with pytest.raises(InvalidLabelsError, match="TZYX"):
        write_labels(tmp_path / "l.tif", np.zeros((2, 3, 4), np.uint8), axes="YXZ")


def test_existing_file_is_kept_without_overwrite(tmp_path):
    path = write_labels(tmp_path / "l.tif", np.ones((4, 4), np.uint8))
    before = path.read_bytes()
    with pytest.raises(OutputWriteError, match="overwrite=True"):
        write_labels(path, np.full((4, 4), 7, np.uint8))
    assert path.read_bytes() == before
    write_labels(path, np.full((4, 4), 7, np.uint8), overwrite=True)
    assert read_labels(path).max() == 7
    assert _files(tmp_path) == ["l.tif"]


def test_missing_output_folder_is_created(tmp_path):
    path = write_labels(tmp_path / "a" / "b" / "l.tif", np.ones((3, 3), np.uint8))
    assert read_labels(path).shape == (3, 3)


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod cannot make a folder read-only here")
        with pytest.raises(OutputWriteError, match="read-only") as info:
            write_labels(folder / "l.tif", np.ones((3, 3), np.uint8))
        assert str(folder) in str(info.value)
    finally:
        folder.chmod(0o700)


def test_full_disk_message_names_folder_and_fix(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", no_space)
    with pytest.raises(OutputWriteError, match="disk is full") as info:
        write_labels(tmp_path / "l.tif", np.ones((3, 3), np.uint8))
    assert str(tmp_path) in str(info.value)
    assert _files(tmp_path) == []


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = write_labels(tmp_path / "l.tif", np.ones((8, 8), np.uint8))
    before = path.read_bytes()

    def partial_write(file, *args, **kwargs):
        Path(file).write_bytes(b"II*\x00" + b"\x00" * 100)
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(tifffile, "imwrite", partial_write)
    with pytest.raises(OutputWriteError, match="simulated crash"):
        write_labels(path, np.full((8, 8), 9, np.uint8), overwrite=True)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["l.tif"]


def test_inch_calibration_is_written_in_micrometres(tmp_path) -> None:
    path = write_labels(tmp_path / "inch.tif", np.ones((4, 4), np.uint8), axes="YX",
                        pixel_size=(0.001, 0.002), unit="inch")
    back = read_image(path)
    assert back.unit == "um"
    assert back.pixel_size == pytest.approx((25.4, 50.8))


def test_read_labels_rejects_non_labels(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(InvalidLabelsError, match="integer"):
        read_labels(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    with pytest.raises(InvalidLabelsError, match="channel"):
        read_labels(tmp_path / "rgb.tif")
