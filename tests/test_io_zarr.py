"""Tests for napari_unet.io.zarr: OME-Zarr labels written and read back with their axes
and pixel size, plain zarr arrays read lazily, and unreadable stores named clearly."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet.errors import CalibrationWarning, ImageReadError, InvalidLabelsError
from napari_unet.io import create_labels, is_zarr, read_image, read_zarr
from napari_unet.io.zarr import MAX_DASK_CHUNKS


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


# --------------------------------------------------------------------------- untrusted stores


def _edit_ome(store, change) -> None:
    """Apply ``change`` to the first multiscale of the store's OME metadata (as a foreign
    or damaged writer would have left it)."""
    group = zarr.open_group(str(store), mode="a")
    ome = dict(group.attrs["ome"])
    change(ome, ome["multiscales"][0])
    group.attrs["ome"] = ome


def _labels_store(path):
    labels = create_labels(path, (2, 30, 40), "ZYX", pixel_size=(2.0, 0.5, 0.5))
    labels[:] = 3
    return path


BAD_METADATA = {
    "multiscales an object": (lambda ome, ms: ome.update(multiscales=ms), "multiscales"),
    "multiscale a list": (lambda ome, ms: ome.update(multiscales=[[ms]]), r"multiscales\[0\]"),
    "no axes": (lambda ome, ms: ms.pop("axes"), "axes"),
    "axes an object": (lambda ome, ms: ms.update(axes={"name": "z"}), "axes"),
    "axis without a name": (lambda ome, ms: ms["axes"][0].pop("name"), r"axes\[0\]"),
    "axis name a number": (lambda ome, ms: ms["axes"][0].update(name=3), r"axes\[0\]"),
    "an axis too few": (lambda ome, ms: ms["axes"].pop(0), "axes"),
    "repeated axis": (lambda ome, ms: ms["axes"][0].update(name="y"), "axes"),
    "no datasets": (lambda ome, ms: ms.pop("datasets"), "datasets"),
    "no dataset": (lambda ome, ms: ms.update(datasets=[]), "datasets"),
    "datasets an object": (lambda ome, ms: ms.update(datasets=ms["datasets"][0]), "datasets"),
    "dataset without a path": (lambda ome, ms: ms["datasets"][0].pop("path"), "path"),
    "path to nothing": (lambda ome, ms: ms["datasets"][0].update(path="9"), "path"),
    "path a number": (lambda ome, ms: ms["datasets"][0].update(path=0), "path"),
    "path outside the store": (lambda ome, ms: ms["datasets"][0].update(path="../x"), "path"),
    "path to a group": (lambda ome, ms: ms["datasets"][0].update(path=""), "path"),
}


@pytest.mark.parametrize("bad", list(BAD_METADATA))
def test_ome_zarr_metadata_that_cannot_describe_the_image_is_refused_naming_the_key(tmp_path,
                                                                                     bad):
    store = _labels_store(tmp_path / "l.zarr")
    change, key = BAD_METADATA[bad]
    _edit_ome(store, change)
    with pytest.raises(ImageReadError, match=f"l.zarr.*{key}.*open the array folder") as info:
        read_image(store)
    assert str(store / "0") in str(info.value)


def test_unreadable_ome_zarr_calibration_is_dropped_with_a_warning_not_refused(tmp_path):
    """Transformations only carry the pixel size, which never refuses an image."""
    for i, change in enumerate([
            lambda ome, ms: ms["datasets"][0].update(coordinateTransformations={"scale": 1}),
            lambda ome, ms: ms["datasets"][0].update(coordinateTransformations=["scale"]),
            lambda ome, ms: ms["datasets"][0]["coordinateTransformations"][0].update(
                scale="2,0.5,0.5")]):
        store = _labels_store(tmp_path / f"{i}.zarr")
        _edit_ome(store, change)
        with pytest.warns(CalibrationWarning, match="calibration is ignored"):
            image = read_image(store)
        assert image.pixel_size is None and image.axes == "ZYX"
        assert int(np.asarray(image.data).max()) == 3


def _chunk_files(array_folder):
    return sorted(p for p in array_folder.rglob("*") if p.is_file() and p.name != "zarr.json")


def test_a_damaged_chunk_is_named_when_it_is_read_and_an_absent_one_reads_as_zero(tmp_path):
    store = _labels_store(tmp_path / "l.zarr")  # chunks of one plane: two chunk files
    first, second = _chunk_files(store / "0")
    first.write_bytes(b"not zstd")
    image = read_image(store)  # lazy: nothing is decoded yet
    np.testing.assert_array_equal(np.asarray(image.data[1]), 3)
    with pytest.raises(ImageReadError, match=r"l.zarr.*\[0:1, 0:30, 0:40\].*damaged"):
        np.asarray(image.data)
    # An absent chunk is zarr's way of storing a chunk of fill values (writers leave out
    # chunks that hold only the fill value), so it reads as 0, as napari and zarr read it.
    first.unlink()
    np.testing.assert_array_equal(np.asarray(read_image(store).data[0]), 0)


def test_a_damaged_chunk_through_the_cli_is_one_error_line(tmp_path, capsys):
    from _data import small_model

    from napari_unet.cli import main

    store = _labels_store(tmp_path / "in.zarr")
    _chunk_files(store / "0")[0].write_bytes(b"not zstd")
    model = small_model().save(tmp_path / "m.safetensors")
    code = main(["segment", str(store), "--model", str(model), "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "in.zarr" in err and "damaged" in err


def test_millions_of_small_chunks_are_read_in_whole_multiples_of_them(tmp_path):
    """100,000 x 100,000 pixels in chunks of 64 x 64 are 2.4 million chunks: one dask task
    each would take gigabytes before a pixel is read."""
    zarr.create_array(str(tmp_path / "big.zarr"), shape=(100_000, 100_000), chunks=(64, 64),
                      dtype="u2", fill_value=0)
    image = read_zarr(tmp_path / "big.zarr")
    assert image.data.npartitions <= MAX_DASK_CHUNKS
    assert all(c % 64 == 0 for c in image.data.chunksize)
    assert int(image.data[50_000:50_010, 7:19].max().compute()) == 0
    small = tmp_path / "small.zarr"  # few chunks: the store's own
    zarr.create_array(str(small), shape=(300, 200), chunks=(64, 64), dtype="u2")
    assert read_zarr(small).data.chunksize == (64, 64)


def test_a_store_too_large_to_read_in_pieces_is_refused_before_any_work(tmp_path):
    zarr.create_array(str(tmp_path / "huge.zarr"), shape=(10**7, 10**7), chunks=(64, 64),
                      dtype="u2")
    with pytest.raises(ImageReadError, match="huge.zarr.*chunks.*crop"):
        read_zarr(tmp_path / "huge.zarr")
