"""Tests for napari_unet.calibrate: the seed threshold with the best accuracy is chosen."""

from __future__ import annotations

import numpy as np
import pytest
from _data import DSB_TRAIN, dsb_crop, intensity_model

from napari_unet.calibrate import SEED_GRID, calibrate_seed_threshold
from napari_unet.data import make_sample
from napari_unet.metrics import match_instances
from napari_unet.segment import segment


def test_calibration_picks_the_best_grid_value(real_data) -> None:
    model = intensity_model()
    model.config.postprocess.seed_threshold = 0.95
    pairs = [dsb_crop(real_data, stem, 128) for stem in DSB_TRAIN[:2]]
    samples = [make_sample(str(i), image, mask, model.config) for i, (image, mask) in enumerate(pairs)]
    threshold, accuracy = calibrate_seed_threshold(model, samples, "cpu")

    # Independently, end to end: segment the raw images at every grid value and score.
    scores = []
    for t in SEED_GRID:
        tp = fp = fn = 0
        for image, mask in pairs:
            labels = segment(image, model, device="cpu", seed_threshold=t)
            c = match_instances(mask, labels, thresholds=(0.5,))[0]
            tp, fp, fn = tp + c.tp, fp + c.fp, fn + c.fn
        scores.append(tp / (tp + fp + fn))
    assert len(set(scores)) > 1  # the choice matters (measured 0.35 .. 0.68)
    assert threshold == SEED_GRID[int(np.argmax(scores))]
    assert accuracy == pytest.approx(max(scores))
    assert model.config.postprocess.seed_threshold == threshold
