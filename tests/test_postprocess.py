"""Tests for napari_unet.postprocess: seeded watershed, size filters, stitching, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.axes import make_layout
from napari_unet.config import PostprocessConfig
from napari_unet.postprocess import count_objects, instance_labels, keep_ids, semantic_labels
from napari_unet.segment import stitch_along_z
from napari_unet.targets import instance_target

CONFIG = PostprocessConfig()


def _disc(shape, centre, radius) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _probs_from_target(target: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    """Soft one-hot (background, interior, boundary) probabilities from a class map."""
    rest = (1 - confidence) / 2
    probs = np.full((3,) + target.shape, rest, np.float32)
    for k in range(3):
        probs[k][target == k] = confidence
    return probs


@pytest.fixture
def touching() -> np.ndarray:
    """Two discs of radius 10 whose centres are 18 px apart: they share a contact line."""
    labels = np.zeros((48, 64), np.int32)
    labels[_disc(labels.shape, (24, 22), 10)] = 1
    labels[_disc(labels.shape, (24, 40), 10) & (labels == 0)] = 2
    return labels


def _best_iou(a: np.ndarray, labels: np.ndarray) -> float:
    return max(((a & (labels == i)).sum() / (a | (labels == i)).sum())
               for i in np.unique(labels) if i)


def test_touching_discs_are_split_by_the_boundary_ring(touching) -> None:
    probs = _probs_from_target(instance_target(touching))
    out = instance_labels(probs, CONFIG)
    assert out.dtype == np.uint32
    assert sorted(np.unique(out)) == [0, 1, 2]
    for i in (1, 2):
        assert _best_iou(touching == i, out) > 0.9
    # control: without the boundary class the same foreground is one object
    merged = _probs_from_target(np.where(touching > 0, 1, 0))
    assert sorted(np.unique(instance_labels(merged, CONFIG))) == [0, 1]


def test_labels_are_sequential_and_cover_the_foreground(touching) -> None:
    out = instance_labels(_probs_from_target(instance_target(touching)), CONFIG)
    np.testing.assert_array_equal(out > 0, touching > 0)  # boundary pixels are given back


def test_min_size_removes_small_objects() -> None:
    labels = np.zeros((40, 40), np.int32)
    labels[_disc(labels.shape, (20, 20), 8)] = 1  # ~200 px
    labels[2:5, 2:5] = 2  # 9 px
    labels[34:38, 34:38] = 3  # 16 px
    probs = _probs_from_target(np.where(labels > 0, 1, 0))
    config = PostprocessConfig(min_size=10, min_seed_size=1)
    out = instance_labels(probs, config)
    assert len(np.unique(out)) == 3  # background + disc + 16-px square
    assert out[3, 3] == 0 and out[20, 20] > 0 and out[36, 36] > 0
    assert out.max() == 2  # relabelled sequentially after the removal
    out = instance_labels(probs, PostprocessConfig(min_size=1, min_seed_size=1))
    assert out.max() == 3


def test_min_seed_size_drops_specks_of_confidence() -> None:
    probs = np.zeros((3, 30, 30), np.float32)
    probs[0] = 0.9
    probs[0, 5:25, 5:25] = 0.2  # foreground block
    probs[1] = 0.1
    probs[1, 10:20, 10:20] = 0.9  # a real seed
    probs[1, 6, 6] = 0.95  # a one-pixel speck
    out = instance_labels(probs, PostprocessConfig(min_seed_size=3, min_size=1))
    assert out.max() == 1
    out = instance_labels(probs, PostprocessConfig(min_seed_size=1, min_size=1))
    assert out.max() == 2


def test_seed_threshold_controls_splitting() -> None:
    """Two interior peaks joined by a saddle: one object or two, by the seed threshold."""
    probs = np.zeros((3, 20, 40), np.float32)
    probs[0] = 0.95
    probs[0, 4:16, 4:36] = 0.05
    interior = np.zeros((20, 40), np.float32)
    interior[4:16, 4:36] = 0.75
    interior[6:14, 8:16] = 0.95
    interior[6:14, 24:32] = 0.95
    probs[1] = interior
    assert instance_labels(probs, PostprocessConfig(seed_threshold=0.9, min_size=1)).max() == 2
    assert instance_labels(probs, PostprocessConfig(seed_threshold=0.7, min_size=1)).max() == 1


def test_nothing_confident_gives_no_objects() -> None:
    probs = np.full((3, 16, 16), 1 / 3, np.float32)  # what an untrained net says
    out = instance_labels(probs, CONFIG)
    assert out.shape == (16, 16) and not out.any()


def stitch_planes(stack: np.ndarray) -> np.ndarray:
    """A ZYX stack stitched as segment() stitches it (a copy; the stitching is in place)."""
    out = stack.astype(np.uint32)
    stitch_along_z(out, make_layout(out, "ZYX"))
    return out


def _cylinder_stack(centres, n_planes=5, shape=(40, 60), radius=6, ids_per_plane=True):
    stack = np.zeros((n_planes,) + shape, np.uint32)
    next_id = 1
    for z in range(n_planes):
        for c in centres:
            stack[z][_disc(shape, (c[0], c[1] + (z % 2)), radius)] = next_id  # a slight wobble
            next_id += 1
    return stack


def test_stitch_joins_a_cylinder() -> None:
    stack = _cylinder_stack([(20, 20)])
    assert len(np.unique(stack)) - 1 == 5  # one id per plane, as segment() gives
    out = stitch_planes(stack)
    assert list(np.unique(out)) == [0, 1]
    np.testing.assert_array_equal(out > 0, stack > 0)


def test_stitch_keeps_two_cylinders_apart() -> None:
    out = stitch_planes(_cylinder_stack([(20, 15), (20, 45)]))
    assert list(np.unique(out)) == [0, 1, 2]
    assert len(np.unique(out[:, :, :30])) == 2 and len(np.unique(out[:, :, 30:])) == 2
    assert np.unique(out[:, :, :30]).max() != np.unique(out[:, :, 30:]).max()


def test_stitch_starts_new_objects_after_gaps_and_for_small_overlap() -> None:
    stack = _cylinder_stack([(20, 20)], n_planes=4)
    stack[2] = 0  # gap: the object above and below are different objects
    assert len(np.unique(stitch_planes(stack))) - 1 == 2
    shifted = np.zeros((2, 40, 60), np.uint32)
    shifted[0][_disc((40, 60), (20, 20), 6)] = 1
    shifted[1][_disc((40, 60), (20, 30), 6)] = 2  # overlap IoU < 0.25
    assert len(np.unique(stitch_planes(shifted))) - 1 == 2


def test_stitch_gives_a_split_object_one_continuation() -> None:
    """An object that splits in two below keeps its id for the better match only."""
    stack = np.zeros((2, 30, 30), np.uint32)
    stack[0, 5:25, 5:25] = 1
    stack[1, 5:25, 5:16] = 2
    stack[1, 5:25, 17:25] = 3
    out = stitch_planes(stack)
    assert out[1, 10, 10] == out[0, 10, 10]
    assert out[1, 10, 20] not in (0, out[0, 10, 10])


def test_semantic_labels_threshold() -> None:
    probs = np.array([[[0.2, 0.49, 0.51, 0.99]]], np.float32)  # (1, 1, 4)
    out = semantic_labels(probs, PostprocessConfig(semantic_threshold=0.5))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 1, 1]])
    out = semantic_labels(probs, PostprocessConfig(semantic_threshold=0.9))
    np.testing.assert_array_equal(out, [[0, 0, 0, 1]])


def test_semantic_labels_multi_class_takes_the_most_probable() -> None:
    probs = np.array([
        [[0.8, 0.6, 0.1]],
        [[0.7, 0.9, 0.2]],
    ], np.float32)
    np.testing.assert_array_equal(semantic_labels(probs, CONFIG), [[1, 2, 0]])


def test_count_objects_counts_distinct_ids_across_blocks_and_planes() -> None:
    labels = np.zeros((2, 5000, 30), np.uint32)  # planes taller than one 4096 block
    labels[0, :10, :10] = 7
    labels[0, 4500:, :5] = 7  # the same id in another block counts once
    labels[1, 100, 3] = 70_000
    assert count_objects(labels) == 2
    assert count_objects(np.zeros((3, 4), np.uint16)) == 0


@pytest.mark.parametrize("offset", [0, 70_000])  # small ids, and ids past uint16
def test_keep_ids_gives_overlapping_objects_the_reference_ids(offset):
    reference = np.zeros((12, 12), np.int64)
    reference[1:5, 1:5], reference[7:11, 7:11] = offset + 7, offset + 3
    plane = np.zeros((12, 12), np.int64)
    plane[1:5, 2:6], plane[7:11, 7:11], plane[0, 11] = offset + 1, offset + 2, offset + 5
    kept, next_id = keep_ids(plane, reference, 100)  # shifted, the same, and a new object
    assert kept[2, 3] == offset + 7 and kept[8, 8] == offset + 3 and kept[0, 11] == 100
    assert next_id == 101
