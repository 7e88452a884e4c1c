"""Tests for napari_unet.finetune: a new model from corrections, the base left alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from _data import (
    DSB_TRAIN,
    TickingClock,
    dsb_crop,
    outlines_painted_back,
    qcanet_stack,
    small_model,
)

from napari_unet.corrections import Correction
from napari_unet.errors import DatasetError, InvalidLabelsError
from napari_unet.finetune import FINE_TUNE_CONFIG, correction_samples, fine_tune
from napari_unet.metrics import foreground_iou
from napari_unet.segment import Predictor, prepare_image


def _fix(image, labels, mask=None) -> Correction:
    """One corrected image (all pixels supervised unless ``mask``)."""
    return Correction(image=image, labels=labels, mask=mask)

# The interactive defaults (frozen batch norm, short warm-up), made small and exact.
CONFIG = replace(FINE_TUNE_CONFIG, batch_size=2, device="cpu", fast=False, lr=5e-3)


@pytest.fixture(scope="module")
def pair(real_data) -> tuple[np.ndarray, np.ndarray]:
    """A 96x96 DSB crop with 81 annotated nuclei."""
    return dsb_crop(real_data, DSB_TRAIN[2], 96)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.network.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_returns_a_new_model_and_leaves_the_base_alone(pair) -> None:
    base = small_model(seed=0, name="base")
    base.config.provenance = {"data": "somewhere"}
    before = _state(base)
    tuned = fine_tune(base, _fix(*pair), steps=3, time_budget=None, config=CONFIG)
    assert tuned is not base and tuned.network is not base.network
    assert tuned.name == "base-tuned"
    assert _same_weights(_state(base), before)
    assert not _same_weights(_state(tuned), before)
    assert base.config.provenance == {"data": "somewhere"}
    rounds = tuned.config.provenance["fine_tune_rounds"]
    assert tuned.config.provenance["data"] == "somewhere"  # earlier provenance is kept
    assert len(rounds) == 1
    assert {k: rounds[0][k] for k in ("base_model", "images", "planes", "supervised_pixels",
                                      "steps", "steps_requested", "steps_planned", "short")} == {
        "base_model": "base", "images": 1, "planes": 1, "supervised_pixels": 96 * 96,
        "steps": 3, "steps_requested": 3, "steps_planned": 3, "short": False}
    again = fine_tune(tuned, _fix(*pair), steps=1, time_budget=None, config=CONFIG, name="v3")
    assert again.name == "v3" and len(again.config.provenance["fine_tune_rounds"]) == 2


def test_partial_mask_counts_only_marked_pixels(pair) -> None:
    image, labels = pair
    mask = np.zeros(labels.shape, bool)
    mask[10:50, 20:70] = True
    tuned = fine_tune(small_model(), _fix(image, labels, mask), steps=2, time_budget=None, config=CONFIG)
    assert tuned.config.provenance["fine_tune_rounds"][0]["supervised_pixels"] == 40 * 50


def test_labels_outside_the_mask_are_ignored(pair) -> None:
    """Untouched pixels teach nothing: changing the labels there changes no weight."""
    image, labels = pair
    mask = np.zeros(labels.shape, bool)
    mask[:48, :] = True
    other = labels.copy()
    other[60:, :] = 0  # erase every object well away from the marked rows
    other[80:90, 10:30] = 999  # and invent one
    runs = [fine_tune(small_model(seed=4), _fix(image, lab, mask), steps=4, time_budget=None,
                      config=CONFIG) for lab in (labels, other)]
    assert _same_weights(_state(runs[0]), _state(runs[1]))
    # control: the same change inside the mask does change the result
    inside = labels.copy()
    inside[:20, :] = 0
    changed = fine_tune(small_model(seed=4), _fix(image, inside, mask), steps=4, time_budget=None,
                        config=CONFIG)
    assert not _same_weights(_state(runs[0]), _state(changed))


def test_no_supervised_pixels_is_a_dataset_error(pair) -> None:
    image, labels = pair
    with pytest.raises(DatasetError, match="no corrections"):
        fine_tune(small_model(), _fix(image, labels, np.zeros(labels.shape, bool)), steps=1,
                  config=CONFIG)


def test_wrong_label_shapes_and_types(pair) -> None:
    image, labels = pair
    model = small_model()
    with pytest.raises(InvalidLabelsError, match="shape"):
        fine_tune(model, _fix(image, labels[:-1]), steps=1, config=CONFIG)
    with pytest.raises(InvalidLabelsError):
        fine_tune(model, _fix(image, labels, np.ones((5, 5), bool)), steps=1, config=CONFIG)
    negative = labels.astype(np.int32)
    negative[0, 0] = -1
    with pytest.raises(InvalidLabelsError, match="non-negative"):
        fine_tune(model, _fix(image, negative), steps=1, config=CONFIG)
    with pytest.raises(InvalidLabelsError):
        fine_tune(model, _fix(image, labels.astype(np.float32)), steps=1, config=CONFIG)


def test_stack_uses_only_planes_with_marked_pixels(real_data) -> None:
    stack = qcanet_stack(real_data)[20:24, 28:92, 29:93]  # (4, 64, 64) ZYX
    labels = (stack > np.percentile(stack, 80)).astype(np.uint16)
    mask = np.zeros(labels.shape, bool)
    mask[1, 10:30, 10:30] = True
    mask[3] = True
    model = small_model()
    emb = Correction(image=stack, labels=labels, mask=mask, name="emb")
    names = [s.name for s in correction_samples(model, emb)]
    assert names == ["emb[1]", "emb[3]"]
    tuned = fine_tune(model, _fix(stack, labels, mask), steps=2, time_budget=None, config=CONFIG)
    rounds = tuned.config.provenance["fine_tune_rounds"]
    assert rounds[0]["planes"] == 2
    assert rounds[0]["supervised_pixels"] == 20 * 20 + 64 * 64


def test_stack_planes_share_the_stack_normalisation(real_data) -> None:
    stack = qcanet_stack(real_data)[20:24, 28:92, 29:93]
    labels = np.zeros(stack.shape, np.uint16)
    mask = np.zeros(stack.shape, bool)
    mask[0] = True
    model = small_model()
    (sample,) = correction_samples(model, _fix(stack, labels, mask))
    alone = correction_samples(model, _fix(stack[0], labels[0], mask[0]))[0]
    whole = prepare_image(stack, model, "ZYX")
    np.testing.assert_allclose(sample.image, whole.plane((0,)), rtol=1e-6)
    assert not np.allclose(sample.image, alone.image)  # the plane's own percentiles differ
    # a plane cut out of the stack (as the widgets keep it) with the stack's percentiles
    cut = correction_samples(model, Correction(image=stack[0][np.newaxis], labels=labels[0],
                                               mask=mask[0], axes="CYX",
                                               percentiles=whole.percentiles))[0]
    np.testing.assert_allclose(cut.image, whole.plane((0,)), rtol=1e-6)


def test_several_images_in_one_round(pair) -> None:
    image, labels = pair
    tuned = fine_tune(small_model(), [_fix(image, labels), _fix(image[:64, :80], labels[:64, :80])],
                      steps=2, time_budget=None, config=CONFIG)
    assert tuned.config.provenance["fine_tune_rounds"][0]["images"] == 2


def test_fine_tuning_learns_the_corrections(pair) -> None:
    """40 steps on one image's ground truth: the foreground agrees with it far better.
    Measured: foreground IoU 0.12 (a random model calls everything foreground) -> 0.78."""
    image, labels = pair
    base = small_model(seed=0)

    def foreground(model) -> np.ndarray:
        predictor = Predictor(model, "cpu", fast=False)
        probs = predictor.probabilities(prepare_image(image, model).plane(()))
        return probs[0] < 0.5

    before = foreground_iou(labels > 0, foreground(base))
    # a random model has no knowledge to keep: no pull towards its starting weights
    tuned = fine_tune(base, _fix(image, labels), steps=40, time_budget=None,
                      config=replace(CONFIG, stay_close=0.0))
    after = foreground_iou(labels > 0, foreground(tuned))
    assert after > before + 0.3
    assert after > 0.5


def test_a_round_cut_short_by_the_time_limit_says_so(pair, monkeypatch) -> None:
    """On a slow machine (a fake clock: 2 s a step) a 20 s limit holds fewer than half of the
    100 steps asked for: the round plans what fits, records it, and its report says so."""
    from napari_unet import training
    from napari_unet.finetune import describe_round

    monkeypatch.setattr(training, "time", TickingClock())
    image, labels = pair
    tuned = fine_tune(small_model(), _fix(image, labels), steps=100, time_budget=20.0, config=CONFIG)
    rnd = tuned.config.provenance["fine_tune_rounds"][-1]
    assert rnd["steps_requested"] == 100 and rnd["steps"] <= rnd["steps_planned"] < 50
    assert rnd["short"] and "cut short by the time limit" in describe_round(rnd)
    fine = {**rnd, "steps": 100, "steps_planned": 100, "short": False}
    assert "cut short" not in describe_round(fine)


def test_dark_objects_invert_the_input_of_the_tuned_model(pair) -> None:
    """Corrections on an inverted image (dark nuclei on a light background) make the round
    invert its input, so the tuned version sees bright nuclei as the model learnt them."""
    image, labels = pair
    base = small_model()
    base.config.object_polarity = "bright"
    tuned = fine_tune(base, _fix(image, labels), steps=1, config=CONFIG)
    assert not tuned.config.normalization.invert
    dark = fine_tune(base, _fix(255 - image, labels), steps=1, config=CONFIG)
    assert dark.config.normalization.invert
    assert dark.config.provenance["fine_tune_rounds"][-1]["polarity_found"] == "dark"
    # the inverted input of the tuned copy is the bright image the base knows (up to the
    # 1/99.8 percentiles, which are not symmetric)
    seen = prepare_image(255 - image, dark).plane(()).ravel()
    known = prepare_image(image, base).plane(()).ravel()
    assert np.corrcoef(seen, known)[0, 1] > 0.999


def test_larger_objects_resize_the_input_of_the_tuned_model(pair) -> None:
    image, labels = pair
    base = small_model()
    base.config.object_diameter = 5.0  # the crop's nuclei are about twice that
    tuned = fine_tune(base, _fix(image, labels), steps=1, config=CONFIG)
    assert tuned.config.input_scale == pytest.approx(
        5.0 / tuned.config.provenance["fine_tune_rounds"][-1]["object_diameter_found"], rel=0.01)
    assert tuned.config.input_scale < 0.77
    pred = napari_unet_segment(image, tuned)
    assert pred.shape == labels.shape  # resized for the network, back for the labels


def test_outlines_painted_back_with_new_labels_do_not_resize(pair) -> None:
    """A user who paints the missing outline of nuclei the model drew too thin, with the
    brush's new label, leaves rings of a few pixels: a round must not take them for the
    objects' size (it once resized images x4 and the tuned model drew nothing right)."""
    image, labels = pair
    base = small_model()
    base.config.object_diameter = 10.0  # about the crop's nuclei: nothing to resize
    fixed, painted = outlines_painted_back(labels, width=1)
    tuned = fine_tune(base, _fix(image, fixed, painted), steps=1, config=CONFIG)
    assert tuned.config.input_scale == 1.0
    assert tuned.config.provenance["fine_tune_rounds"][-1]["object_diameter_found"] is None


def test_what_a_round_learnt_travels_with_the_model_file(pair, tmp_path) -> None:
    """Inversion and input scale are part of the saved config: the file alone predicts as
    the tuned version in the session did."""
    from napari_unet.model import load_model_file

    image, labels = pair
    base = small_model()
    base.config.object_polarity, base.config.object_diameter = "bright", 5.0
    tuned = fine_tune(base, _fix(255 - image, labels), steps=1, config=CONFIG)
    assert tuned.config.normalization.invert and tuned.config.input_scale < 0.77
    again = load_model_file(tuned.save(tmp_path / "tuned.safetensors"))
    assert again.config.normalization.invert
    assert again.config.input_scale == pytest.approx(tuned.config.input_scale)
    np.testing.assert_array_equal(napari_unet_segment(255 - image, again),
                                  napari_unet_segment(255 - image, tuned))


def napari_unet_segment(image, model):
    from napari_unet.segment import segment

    return segment(image, model, device="cpu", fast=False)
