"""Tests for napari_unet.blocks: block-wise segmentation gives the objects of a whole-plane
run, each written once with one id, into numpy or zarr output.

Uses the intensity stand-in network (see ``_data.IntensityNet``) on a real DSB image with
82 nuclei, cut into blocks much smaller than the image so many nuclei cross block edges.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from _data import DSB_TRAIN, dsb_pair, intensity_model
from scipy import ndimage as ndi

from napari_unet.blocks import BlockConfig, block_boxes, owned_ids, split
from napari_unet.errors import InvalidLabelsError
from napari_unet.metrics import match_instances
from napari_unet.segment import segment

SMALL = BlockConfig(block=80, halo=32)


@pytest.fixture(scope="module")
def image(real_data) -> np.ndarray:
    return dsb_pair(real_data, DSB_TRAIN[2])[0]


@pytest.fixture(scope="module")
def model():
    return intensity_model()


@pytest.fixture(scope="module")
def whole(image, model) -> np.ndarray:
    return segment(image, model, device="cpu")


@pytest.mark.parametrize("length, block", [(256, 80), (100, 100), (101, 100), (7, 3)])
def test_split_partitions_the_axis_into_near_equal_ranges(length, block):
    ranges = split(length, block)
    assert ranges[0][0] == 0 and ranges[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) <= block and max(sizes) - min(sizes) <= 1


def test_block_cores_cover_every_pixel_once():
    cover = np.zeros((250, 333), dtype=int)
    for box in block_boxes(cover.shape, 64):
        cover[box] += 1
    assert (cover == 1).all()


def test_an_object_across_a_core_edge_belongs_to_the_core_holding_its_centroid():
    labels = np.zeros((20, 40), dtype=np.int32)
    labels[5:10, 8:16] = 1  # centroid x = 11.5: left core
    labels[5:10, 18:30] = 2  # centroid x = 23.5: right core
    left = (slice(0, 20), slice(0, 20))
    right = (slice(0, 20), slice(20, 40))
    assert owned_ids(labels, (0, 0), left).tolist() == [False, True, False]
    assert owned_ids(labels, (0, 0), right).tolist() == [False, False, True]
    # an origin shifts the labels into plane coordinates
    assert owned_ids(labels, (0, 20), right).tolist() == [False, True, False]  # x 31.5, 43.5


def test_blocks_find_the_objects_of_a_whole_plane_run(image, model, whole):
    blocked = segment(image, model, device="cpu", blocks=SMALL)
    matched = match_instances(whole, blocked, [0.5])[0]
    n_whole = int(whole.max())
    assert n_whole > 50
    assert matched.tp >= 0.95 * n_whole and matched.fp <= 0.05 * n_whole


def test_each_object_gets_one_id_in_one_piece(image, model):
    blocked = segment(image, model, device="cpu", blocks=SMALL)
    ids = np.unique(blocked)[1:]
    assert ids.size > 50
    pieces = [ndi.label(blocked == i)[1] for i in ids]
    assert max(pieces) == 1


def test_a_plane_within_one_block_is_segmented_as_a_whole(image, model, whole):
    assert np.array_equal(segment(image, model, device="cpu", blocks=BlockConfig(256, 32)), whole)


def test_lazy_input_into_zarr_output_equals_the_numpy_result(image, model):
    expected = segment(image, model, device="cpu", blocks=SMALL)
    out = zarr.zeros(shape=image.shape, dtype="uint32", chunks=(64, 64))
    lazy = da.from_array(image, chunks=(100, 100))
    returned = segment(lazy, model, axes="YX", device="cpu", blocks=SMALL, out=out)
    assert returned is out
    assert np.array_equal(out[:], expected)


def test_zarr_output_of_a_stitched_stack_equals_the_numpy_result(image, model):
    stack = np.stack([image, image[:, ::-1], image])
    expected = segment(stack, model, axes="ZYX", device="cpu", stitch_3d=True, blocks=SMALL)
    out = zarr.zeros(shape=stack.shape, dtype="uint32", chunks=(1, 128, 128))
    segment(stack, model, axes="ZYX", device="cpu", stitch_3d=True, blocks=SMALL, out=out)
    assert np.array_equal(out[:], expected)
    assert expected.max() > 30  # 42 objects built in 3D (planes 1 and 3 are equal)


def test_output_of_the_wrong_shape_or_dtype_is_refused_before_any_work(image, model):
    with pytest.raises(InvalidLabelsError, match="shape"):
        segment(image, model, device="cpu", out=np.zeros((10, 10), np.uint32))
    with pytest.raises(InvalidLabelsError, match="uint32"):
        segment(image, model, device="cpu", out=np.zeros(image.shape, np.uint8))
