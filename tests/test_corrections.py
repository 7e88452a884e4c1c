"""Pasting corrections over a prediction, and the training target of a fine-tuning round."""

from __future__ import annotations

import numpy as np

from napari_unet.corrections import TargetOptions, correction_target, paste_corrections


def _labels() -> np.ndarray:
    pred = np.zeros((40, 40), np.uint16)
    pred[2:10, 2:10] = 1     # kept
    pred[20:30, 20:30] = 2   # the user redraws it
    pred[2:8, 30:36] = 3     # the user erases it
    return pred


def test_paste_keeps_the_users_objects_and_erasures():
    pred = _labels()
    corrected = pred.copy()
    corrected[2:8, 30:36] = 0            # erased
    corrected[20:30, 20:30] = 0
    corrected[22:32, 22:32] = 7          # redrawn, shifted
    corrected[34:38, 2:6] = 9            # a missed object painted
    mask = corrected != pred
    new = pred.copy()
    new[2:8, 30:36] = 4                  # the new prediction brings the erased one back
    out = paste_corrections(new, corrected, mask)
    assert out.dtype == np.uint32
    assert not out[2:8, 30:36].any()                       # still erased
    assert len(np.unique(out[22:32, 22:32])) == 1 and out[25, 25] > 0
    assert not out[20:22, 20:30].any() and not out[20:30, 20:22].any()  # the original is gone
    assert out[35, 3] > 0 and out[35, 3] != out[25, 25]
    assert (out[2:10, 2:10] == 1).all()                     # untouched object kept as is
    ids = np.unique(out)[1:]
    assert len(ids) == 3                                    # 1, the redrawn, the painted


def test_paste_keeps_the_users_ids_where_they_are_free():
    """So the objects a user painted keep their colour after a round re-segments."""
    pred = _labels()
    corrected = pred.copy()
    corrected[20:30, 20:30] = 0
    corrected[22:32, 22:32] = 7  # redrawn with a new id
    mask = corrected != pred
    out = paste_corrections(pred, corrected, mask)
    assert out[25, 25] == 7
    clash = pred.copy()
    clash[34:38, 30:34] = 7  # the new prediction uses 7 elsewhere: fresh ids, no merge
    out = paste_corrections(clash, corrected, mask)
    assert out[25, 25] > 7 and out[35, 31] == 7


def test_paste_pastes_whole_objects_the_edit_touched():
    pred = _labels()
    corrected = pred.copy()
    corrected[10:12, 2:10] = 1  # the user extended object 1 by two rows
    mask = corrected != pred
    new = np.zeros_like(pred)   # the new model lost it
    out = paste_corrections(new, corrected, mask)
    assert (out[2:12, 2:10] > 0).all() and len(np.unique(out[2:12, 2:10])) == 1


def test_nothing_to_paste_returns_the_prediction():
    pred = _labels()
    out = paste_corrections(pred, pred, np.zeros(pred.shape, bool))
    np.testing.assert_array_equal(out, pred)


def test_target_counts_corrections_and_a_background_ring_around_them():
    pred = _labels()
    corrected = pred.copy()
    corrected[34:38, 2:6] = 9  # one painted object
    mask = corrected != pred
    labels, weight = correction_target(pred, corrected, mask, diameter=8.0,
                                       options=TargetOptions(context=0.5))
    assert labels[35, 3] > 0 and (labels[2:10, 2:10] > 0).all()
    assert (weight[mask] == 1).all() and set(np.unique(weight)) == {0.0, 1.0}
    # a background ring of 0.5 * diameter = 4 px around the painted object counts
    assert weight[33, 3] == weight[30, 3] == 1 and labels[30, 3] == 0
    assert weight[25, 3] == 0
    # accepted objects are left to the soft target (weight 0), even inside the ring
    near = pred.copy()
    near[30:33, 2:6] = 5
    labels, weight = correction_target(near, corrected, mask, 8.0, TargetOptions(context=0.5))
    assert labels[31, 3] > 0 and weight[31, 3] == 0


def test_semantic_target_pastes_pixels_not_objects():
    anchor = np.zeros((10, 10), np.uint8)
    corrected = anchor.copy()
    corrected[2:4, 2:4] = 2
    mask = corrected != anchor
    labels, _weight = correction_target(anchor, corrected, mask, None, instances=False)
    np.testing.assert_array_equal(labels, corrected)
