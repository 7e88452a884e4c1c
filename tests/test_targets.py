"""Tests for napari_unet.targets: instance and semantic training targets."""

from __future__ import annotations

import numpy as np

from napari_unet.targets import BACKGROUND, BOUNDARY, INTERIOR, labels_to_target, semantic_target


def test_instance_target_has_an_inner_boundary_between_touching_objects() -> None:
    labels = np.zeros((8, 10), np.uint16)
    labels[1:7, 1:5] = 1
    labels[1:7, 5:9] = 2  # touches object 1 along a column
    target = labels_to_target(labels, "instance", 3)
    assert target.dtype == np.int64 and target.shape == labels.shape
    assert (target[labels == 0] == BACKGROUND).all()
    assert (target[3, 4:6] == BOUNDARY).all()  # both sides of the contact line
    assert (target[3, 2:4] == INTERIOR).all() and (target[3, 6:8] == INTERIOR).all()
    assert (target[1, 1:9] == BOUNDARY).all()  # outer rim is boundary too, inside the object


def test_semantic_targets() -> None:
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    np.testing.assert_array_equal(semantic_target(mask, 1)[0], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(semantic_target(mask, 1, invert=True)[0], [[1, 0], [0, 1]])
    classes = np.array([[0, 1, 2]])
    target = labels_to_target(classes, "semantic", 2)
    assert target.shape == (2, 1, 3) and target.dtype == np.float32
    np.testing.assert_array_equal(target[:, 0], [[0, 1, 0], [0, 0, 1]])
