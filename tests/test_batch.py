"""Tests for napari_unet.batch: files in memory or out of core, TIFF or OME-Zarr output,
failures that do not stop a batch, and the same results on a 2-worker dask LocalCluster.

Uses the shipped ``nuclei`` model (workers load it by name) on real DSB 2018 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from _data import DSB_TEST, DSB_TRAIN, dsb_pair

import napari_unet.batch as batch
from napari_unet.batch import segment_file, segment_files
from napari_unet.blocks import BlockConfig
from napari_unet.errors import OutputWriteError
from napari_unet.io import read_image
from napari_unet.options import SegmentOptions
from napari_unet.registry import load_model
from napari_unet.segment import segment

CPU = SegmentOptions(device="cpu", blocks=BlockConfig(block=160, halo=32))


@pytest.fixture(scope="module")
def model():
    return load_model("nuclei")


@pytest.fixture(scope="module")
def images(real_data, tmp_path_factory) -> list[Path]:
    """Three real 256x256 nuclei images as TIFF files."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = []
    for stem in (DSB_TRAIN[1], DSB_TRAIN[2], DSB_TEST[1]):
        split = "test" if stem in DSB_TEST else "train"
        path = folder / f"{stem[:8]}.tif"
        tifffile.imwrite(path, dsb_pair(real_data, stem, split)[0])
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory) -> Path:
    """A 4-plane ZYX stack of real images."""
    planes = [tifffile.imread(p) for p in images] + [tifffile.imread(images[0])[::-1]]
    path = tmp_path_factory.mktemp("stack") / "stack.tif"
    tifffile.imwrite(path, np.stack(planes), imagej=True, metadata={"axes": "ZYX"})
    return path


def _expected(path: Path, model, **kwargs) -> np.ndarray:
    return segment(tifffile.imread(path), model, options=CPU, **kwargs)


def test_a_file_is_segmented_in_memory_into_a_tiff(images, model, tmp_path):
    result = segment_file(images[0], tmp_path / "a.tif", model, CPU)
    labels = tifffile.imread(result.labels)
    assert not result.out_of_core and result.error is None
    assert np.array_equal(labels, _expected(images[0], model))
    assert result.n_objects == len(np.unique(labels)) - 1 > 10


def test_zarr_output_is_an_ome_zarr_that_reads_back_with_axes(stack, model, tmp_path):
    result = segment_file(stack, tmp_path / "s.zarr", model, CPU, fmt="zarr")
    back = read_image(result.labels)
    assert result.out_of_core and back.axes == "ZYX"
    assert np.array_equal(np.asarray(back.data), _expected(stack, model, axes="ZYX"))
    assert back.metadata["model"] == "nuclei"


def test_large_labels_go_through_zarr_into_a_streamed_tiff(images, model, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(batch, "LAZY_THRESHOLD_BYTES", 0)  # every image counts as large
    result = segment_file(images[1], tmp_path / "b.tif", model, CPU)
    assert result.out_of_core
    assert np.array_equal(tifffile.imread(result.labels), _expected(images[1], model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tif"]  # scratch removed


def test_a_failing_file_does_not_stop_the_batch(images, tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 20)
    results = segment_files([images[0], broken, images[1]], tmp_path / "out", "nuclei", CPU)
    assert [r.error is None for r in results] == [True, False, True]
    assert "broken.tif" in results[1].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{images[0].stem}_labels.tif", f"{images[1].stem}_labels.tif"]


def test_existing_outputs_are_refused_before_any_work(images, tmp_path):
    (tmp_path / f"{images[1].stem}_labels.tif").write_bytes(b"keep")
    with pytest.raises(OutputWriteError, match="exists"):
        segment_files(images, tmp_path, "nuclei", CPU)
    assert not (tmp_path / f"{images[0].stem}_labels.tif").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
def test_a_local_cluster_gives_the_same_labels_as_one_process(images, stack, model, tmp_path):
    here = segment_files(images, tmp_path / "here", "nuclei", CPU)
    there = segment_files(images, tmp_path / "there", "nuclei", CPU, scheduler="local",
                          workers=2)
    assert [r.error for r in there] == [None] * 3
    for a, b in zip(here, there):
        assert np.array_equal(tifffile.imread(a.labels), tifffile.imread(b.labels))
    # one stack: its planes are split over the workers; ids are unique across planes
    [volume] = segment_files([stack], tmp_path / "vol", "nuclei", CPU, scheduler="local",
                             workers=2, overlay=True)
    assert volume.error is None and volume.out_of_core
    assert volume.overlay is not None and volume.overlay.read_bytes()[:4] == b"\x89PNG"
    assert np.array_equal(tifffile.imread(volume.labels), _expected(stack, model, axes="ZYX"))


def test_the_overlay_of_a_large_plane_is_a_strided_preview(images, model, tmp_path):
    from napari_unet.batch import preview_plane

    image = tifffile.imread(images[0])
    labels = segment(image, model, device="cpu")
    plane, small = preview_plane(image, "YX", labels, side=100)
    assert plane.shape == small.shape == (86, 86)  # every 3rd pixel of 256
    np.testing.assert_array_equal(small, labels[::3, ::3])


def test_an_unreachable_scheduler_is_one_clear_error():
    from napari_unet.batch import cluster
    from napari_unet.errors import NapariUnetError

    with pytest.raises(NapariUnetError, match="could not reach the dask scheduler"):
        with cluster("tcp://127.0.0.1:1", timeout="1s"):
            pass
