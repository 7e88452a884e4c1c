"""Tests for napari_unet.guidance: "where to correct" from the pass Segment already ran.

On real crops (tests/data) with the shipped ``nuclei`` model: errors planted in its own
labels (an erased object, a merged pair) must come out at the top of the ranking, with
the right reason; what the user corrected is left out; the probabilities come from the
same network pass as the labels, block by block.
"""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from _data import DSB_TRAIN, dsb_pair, intensity_model, membrane_model, qcanet_stack
from scipy import ndimage as ndi

import napari_unet
from napari_unet.blocks import BlockConfig
from napari_unet.errors import InvalidLabelsError, InvalidSettingError
from napari_unet.guidance import ProbabilityStore, guide, guide_planes
from napari_unet.metrics import iou_pairs
from napari_unet.postprocess import instance_labels
from napari_unet.segment import Predictor, prepare_image

TOP = 3  # "near the top": among the first three of 16-45 candidates


@pytest.fixture(scope="module")
def nuclei_model():
    return napari_unet.load_model("nuclei")


@pytest.fixture(scope="module")
def segmented(real_data, nuclei_model):
    """A 256x256 DSB image with 36 nuclei: (truth, the model's labels, its probabilities)."""
    image, truth = dsb_pair(real_data, DSB_TRAIN[0])
    store = ProbabilityStore()
    labels = napari_unet.segment(image, nuclei_model, on_probabilities=store)
    return truth, labels.astype(np.int64), store.plane(())


def _well_drawn(truth: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Predicted ids matching a true nucleus at IoU > 0.8 (objects the model got right)."""
    _, p_ids, _, j, iou = iou_pairs(truth, labels)
    return np.unique(p_ids[j[iou > 0.8]])


def _touching_pair(labels: np.ndarray, among: np.ndarray) -> tuple[int, int]:
    """Two objects of ``among`` that touch each other."""
    grown = ndi.grey_dilation(labels, size=3)
    edge = (grown != labels) & (labels > 0)
    pairs = sorted({(int(a), int(b)) for a, b in zip(labels[edge], grown[edge])
                    if a != b and a in among and b in among})
    assert pairs, "the crop has touching, well-drawn nuclei"
    return pairs[0]


def test_the_probabilities_come_from_the_pass_that_made_the_labels(real_data, nuclei_model,
                                                                    segmented):
    truth, labels, probs = segmented
    image, _ = dsb_pair(real_data, DSB_TRAIN[0])
    # the default output is unchanged by the hook
    np.testing.assert_array_equal(napari_unet.segment(image, nuclei_model), labels)
    assert probs.shape == (3,) + labels.shape and probs.dtype == np.float32
    # the labels follow from the probabilities kept (uint8 steps flip a handful of pixels)
    again = instance_labels(probs, nuclei_model.config.postprocess)
    assert np.mean((again > 0) == (labels > 0)) > 0.999


def test_blocks_fill_the_whole_plane_with_the_networks_probabilities(real_data):
    image, _ = dsb_pair(real_data, DSB_TRAIN[1])
    model = intensity_model()  # pixel-wise, so blocks see what a whole-plane pass sees
    store = ProbabilityStore()
    napari_unet.segment(image, model, blocks=BlockConfig(block=96, halo=16), fast=False,
                        on_probabilities=store)
    kept = store.plane(())
    whole = Predictor(model, "cpu", fast=False).probabilities(
        prepare_image(image, model).plane(()))
    assert kept.shape == whole.shape
    assert np.abs(kept - whole).max() <= 1 / 255  # every block core, once, quantised


def test_an_erased_object_is_found_as_a_missed_region_near_the_top(nuclei_model, segmented):
    truth, labels, probs = segmented
    areas = np.bincount(labels.ravel())
    good = _well_drawn(truth, labels)
    erased = int(next(p for p in good if areas[p] >= np.median(areas[1:])))
    shown = np.where(labels == erased, 0, labels)
    result = guide(shown, probs, "instance", nuclei_model.config.postprocess)
    cy, cx = ndi.center_of_mass(labels == erased)
    found = [k for k, c in enumerate(result.candidates) if c.kind == "region"
             and c.bbox[0] <= cy < c.bbox[2] and c.bbox[1] <= cx < c.bbox[3]]
    assert found and found[0] < TOP, [(c.kind, c.reason) for c in result.candidates[:5]]
    candidate = result.candidates[found[0]]
    assert "missed" in candidate.reason and candidate.label == 0
    assert abs(candidate.centre[0] - cy) < 5 and abs(candidate.centre[1] - cx) < 5


def test_a_merged_pair_is_near_the_top(nuclei_model, segmented):
    truth, labels, probs = segmented
    a, b = _touching_pair(labels, _well_drawn(truth, labels))
    shown = np.where(labels == b, a, labels)
    result = guide(shown, probs, "instance", nuclei_model.config.postprocess)
    ranks = [k for k, c in enumerate(result.candidates) if c.label == a]
    assert ranks and ranks[0] < TOP, [(c.label, c.reason) for c in result.candidates[:5]]
    assert "joined" in result.candidates[ranks[0]].reason
    # without the planted merge, neither nucleus is at the top
    plain = guide(labels, probs, "instance", nuclei_model.config.postprocess)
    assert all(c.label not in (a, b) for c in plain.candidates[:TOP])


def test_what_the_user_corrected_is_left_out(nuclei_model, segmented):
    truth, labels, probs = segmented
    a, b = _touching_pair(labels, _well_drawn(truth, labels))
    shown = np.where(labels == b, a, labels)
    exclude = shown == a  # the user reviewed (or redrew) the merged object
    result = guide(shown, probs, "instance", nuclei_model.config.postprocess, exclude=exclude)
    assert all(c.label != a for c in result.candidates)


def test_an_object_the_previous_version_drew_differently_is_flagged(nuclei_model, segmented):
    truth, labels, probs = segmented
    obj = int(_well_drawn(truth, labels)[0])
    previous = labels.copy()
    ys, xs = np.nonzero(labels == obj)
    previous[labels == obj] = 0
    previous[ys[: len(ys) // 3], xs[: len(xs) // 3]] = obj  # a third of it, before
    with_previous = guide(labels, probs, "instance", nuclei_model.config.postprocess,
                          previous=previous)
    found = next(c for c in with_previous.candidates if c.label == obj)
    assert "previous model version" in found.reason
    alone = guide(labels, probs, "instance", nuclei_model.config.postprocess)
    assert all(c.score < found.score for c in alone.candidates if c.label == obj)


def test_the_map_is_high_where_the_model_hesitates(segmented):
    _, labels, probs = segmented
    result = guide(labels, probs)
    p_object = 1.0 - probs[0]
    sure = (p_object < 0.05) | (p_object > 0.95)
    unsure = np.abs(p_object - 0.5) < 0.05
    assert result.uncertainty.shape == labels.shape
    assert result.uncertainty[sure].max() < 0.15 and result.uncertainty[unsure].min() > 0.85


def test_stack_planes_are_ranked_together(real_data, nuclei_model):
    stack = qcanet_stack(real_data)[20:23, 28:92, 29:93]
    store = ProbabilityStore()
    labels = napari_unet.segment(stack, nuclei_model, axes="ZYX", on_probabilities=store)
    assert store.planes == [(0,), (1,), (2,)]
    maps, candidates = guide_planes(labels, store, "instance",
                                    nuclei_model.config.postprocess)
    assert sorted(maps) == [(0,), (1,), (2,)] and maps[(1,)].shape == labels.shape[1:]
    assert candidates and {c.plane for c in candidates} <= {(0,), (1,), (2,)}
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    for c in candidates:
        if c.kind == "object":  # each candidate names an object of its own plane
            assert (labels[c.plane] == c.label).any()


def test_a_semantic_model_gets_the_map_and_regions_only(real_data):
    image = np.asarray(iio.imread(real_data / "isbi2012_em_membrane" / "train" / "images"
                                  / "0.png"))[:128, :128]
    model = membrane_model()
    store = ProbabilityStore()
    labels = napari_unet.segment(image, model, on_probabilities=store)
    result = guide(labels, store.plane(()), "semantic", model.config.postprocess)
    assert all(c.kind == "region" for c in result.candidates)
    assert result.uncertainty.min() >= 0.0 and result.uncertainty.max() <= 1.0


def test_labels_and_probabilities_of_different_planes_are_refused(segmented):
    _, labels, probs = segmented
    with pytest.raises(InvalidLabelsError, match="pass the plane"):
        guide(labels[:100], probs)
    with pytest.raises(InvalidLabelsError, match="exclude"):
        guide(labels, probs, exclude=np.zeros((3, 3), bool))
    with pytest.raises(InvalidLabelsError, match="integers"):
        guide(labels.astype(float), probs)
    with pytest.raises(InvalidLabelsError, match="task='semantic'"):
        guide(labels, probs[:1])
    with pytest.raises(InvalidSettingError, match="instance"):
        guide(labels, probs, "instances")


def test_a_reason_names_every_doubt_that_counts(nuclei_model, segmented):
    """A merged pair that the previous version also drew otherwise: both doubts are named
    (the widget showed only the first, so a user could not tell a changed object)."""
    truth, labels, probs = segmented
    a, b = _touching_pair(labels, _well_drawn(truth, labels))
    merged = np.where(labels == b, a, labels)
    result = guide(merged, probs, "instance", nuclei_model.config.postprocess, previous=labels)
    found = next(c for c in result.candidates if c.label == a)
    assert "joined" in found.reason and "; also the previous model version" in found.reason
