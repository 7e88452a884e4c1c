"""The guardrail after a fine-tuning round (napari_unet.round_check) on the bundled sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.round_check import check_round, fixes_held
from napari_unet.sample_data import load_sample


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return np.asarray(load_sample("nuclei_fluo_labels").data)[:256, :256].astype(np.uint32)


def _three_fixes(truth):
    """A previous prediction with three errors, and the user's corrections of them."""
    ids = np.unique(truth)[1:]
    previous = truth.copy()
    previous[truth == ids[0]] = 0                     # missed
    previous[truth == ids[1]] = 0                     # missed
    previous[240:250, 240:250] = 999                  # a false object
    previous[previous == 999] = 999 if not truth[240:250, 240:250].any() else 0
    corrected = truth.copy()
    mask = corrected != previous
    return previous, corrected, mask


def test_fixes_are_objects_and_erased_regions(truth):
    previous, corrected, mask = _three_fixes(truth)
    assert fixes_held(previous, corrected, mask).held == 0
    count = fixes_held(corrected, corrected, mask)
    assert count.held == count.fixes >= 2


def test_a_round_that_learns_the_fixes_is_accepted(truth):
    previous, corrected, mask = _three_fixes(truth)
    check = check_round([previous], [truth], [corrected], [mask])
    assert check.accepted and check.held_after > check.held_before
    assert check.changed == 0.0


def test_a_round_that_labels_everything_is_refused(truth):
    previous, corrected, mask = _three_fixes(truth)
    everything = np.ones_like(truth)
    check = check_round([previous], [everything], [corrected], [mask])
    assert not check.accepted
    assert check.grown > 0.9 and "background you did not correct into objects" in check.reason


def test_a_round_that_clears_a_background_the_previous_version_labelled_is_accepted(truth):
    """In a new domain the previous version may label the background (histology with a
    fluorescence model); a round that clears it changes most of the image, rightly."""
    # (and dense tissue, where objects rightly grow over most of the image: next test)
    everything = np.ones_like(truth)
    ids = np.unique(truth)[1:4]
    mask = np.isin(truth, ids)
    better = np.where(truth == ids[0], 0, truth)  # not every fix learnt yet
    check = check_round([everything], [better], [truth], [mask])
    assert check.changed > 0.5 and check.grown == 0.0
    assert check.accepted and check.held_before < check.held_after < check.fixes


def test_a_round_that_undoes_fixes_is_refused(truth):
    previous, corrected, mask = _three_fixes(truth)
    # the previous version had learnt the fixes; the new one loses them
    check = check_round([truth], [previous], [corrected], [mask])
    assert not check.accepted and check.held_after < check.held_before
    assert "previous version got" in check.reason


def test_one_lost_object_among_many_reviewed_ones_is_not_worse(truth):
    """A fully reviewed crop has dozens of fixes: losing one of them is noise (5% slack);
    with fewer than 20 fixes every lost one counts."""
    mask = np.ones(truth.shape, bool)
    ids = np.unique(truth)[1:]
    assert len(ids) >= 20
    one_lost = np.where(truth == ids[0], 0, truth)
    assert check_round([truth], [one_lost], [truth], [mask]).accepted
    few = np.isin(truth, ids[:5])
    check = check_round([truth], [np.where(truth == ids[0], 0, truth)], [truth], [few])
    assert not check.accepted


def test_objects_growing_over_most_of_the_image_with_the_fixes_right_is_accepted(truth):
    """Dense tissue: the new version labels most of what the previous one left empty, and
    gets the user's fixes right; that is learning, not a collapse (histology seed 1 was
    refused at test accuracy 0.265 against 0.001 under a rule that ignored the fixes)."""
    ids = np.unique(truth)[1:]
    mask = np.isin(truth, ids[:4])
    nothing = np.zeros_like(truth)
    dense = np.where(truth == ids[0], 0, truth)  # one fix not learnt yet
    dense[(truth == 0) & ~mask] = truth.max() + 1  # the rest of the background as one object
    check = check_round([nothing], [dense], [truth], [mask])
    assert check.grown > 0.5 and check.held_after == check.fixes - 1 == 3
    assert check.accepted
