"""Fixtures of the session tests: a real crop of the bundled fluorescence sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.sample_data import load_sample


@pytest.fixture(scope="module")
def crop():
    """A 96x96 crop of the nuclei sample and its instance labels."""
    image = np.asarray(load_sample("nuclei_fluo").data)[:96, :96]
    labels = np.asarray(load_sample("nuclei_fluo_labels").data)[:96, :96].astype(np.uint32)
    assert len(np.unique(labels)) > 3  # several real nuclei in the crop
    return image, labels
