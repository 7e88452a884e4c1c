"""Shared helpers of the session tests: a session as the widgets would capture it, a check
that one read back is the same, and ways to change a saved folder's files by hand."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
from _data import small_model

from napari_unet._widgets._state import CorrectionStore, ModelVersions
from napari_unet.corrections import Correction
from napari_unet.sessions import (
    INDEX,
    ImageRecord,
    LabelsRecord,
    SegmentSettings,
    SessionData,
    SessionFolder,
)


def make_session(crop, image_path="/data/nuclei.tif") -> SessionData:
    """A session as the widgets would capture it: one corrected labels layer, two stored
    rounds of corrections of another plane, a base model and one fine-tuned round."""
    image, truth = crop
    baseline = truth.copy()
    data = truth.copy()
    first = int(np.unique(truth)[1])
    data[truth == first] = 0  # an object erased
    data[70:80, 70:80] = 77  # a missed one painted
    edited = data != baseline
    reviewed = np.zeros_like(edited)
    reviewed[:20, :40] = True
    pending = [Correction(name="nuclei", image=image[np.newaxis], labels=data.copy(),
                          mask=edited | reviewed, axes="CYX")]
    store = CorrectionStore()
    left = np.zeros(truth.shape, bool)
    left[:, :30] = True
    store.add(Correction(name="other", image=image[np.newaxis], labels=truth.copy(), mask=left,
                         percentiles=np.array([[3.0, 180.5]]),  # a stack plane's: the stack's
                         axes="CYX"))
    store.add(Correction(name="other", image=image[np.newaxis], labels=data.copy(),
                         mask=np.roll(left, 20, axis=1), axes="CYX"))
    versions = ModelVersions()
    base = versions.add_base(small_model(name="tiny"), label="tiny")
    versions.add_round(small_model(seed=1, name="tiny-tuned"), base,
                       {"steps": 12, "agreement_before": float("nan"), "final_loss": 0.25})
    return SessionData(
        images=[ImageRecord("nuclei", "YX", False, image.shape, [0.5, 0.5], [10.0, 20.0],
                            path=image_path, reader="napari-unet")],
        labels=[LabelsRecord("nuclei labels", 0, data, baseline, edited, reviewed,
                             SegmentSettings(seed_threshold=0.5), [0.5, 0.5], [10.0, 20.0],
                             version=1, units=["micrometer", "micrometer"],
                             metadata={"model": "tiny · round 1"}, pending=pending)],
        corrections=list(store), versions=list(versions.versions), active=1,
    )


def assert_same_weights(a, b):
    for (ka, va), (kb, vb) in zip(a.network.state_dict().items(),
                                  b.network.state_dict().items(), strict=True):
        assert ka == kb
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def assert_same_session(back: SessionData, saved: SessionData) -> None:
    assert back.images == saved.images
    (got,), (want,) = back.labels, saved.labels
    for key in ("data", "baseline", "edited", "reviewed"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
        assert getattr(got, key).dtype == getattr(want, key).dtype
    assert (got.name, got.image, got.settings, got.version, got.scale, got.translate,
            got.units, got.metadata) == (want.name, want.image, want.settings, want.version,
                                         want.scale, want.translate, want.units, want.metadata)
    pairs = (list(zip(got.pending, want.pending, strict=True))
             + list(zip(back.corrections, saved.corrections, strict=True)))
    assert len(pairs) == 3
    for a, b in pairs:
        assert a.name == b.name
        for key in ("image", "labels", "mask", "percentiles"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert any(c.percentiles is not None for c in back.corrections)
    assert back.active == saved.active
    assert [(v.label, v.parent, v.round) for v in back.versions] == \
        [(v.label, v.parent, v.round) for v in saved.versions]
    for a, b in zip(back.versions, saved.versions, strict=True):
        assert_same_weights(a.model, b.model)


def rewrite_npz(path: Path, **changes) -> None:
    """Replace arrays of the .npz at ``path`` (a session file changed by hand or damaged)."""
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    arrays.update(changes)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def write_members(path: Path, arrays: dict, declared: Optional[dict] = None,
                  zeros: int = 0) -> None:
    """Write an .npz by hand: ``arrays`` as numpy would, and for each key of ``declared`` a
    member whose .npy header declares that (shape, dtype) followed by ``zeros`` zero bytes,
    streamed through the compressor (no large array is ever made here)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
        for key, (shape, dtype) in (declared or {}).items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_1_0(fh, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False, "shape": shape})
                block = bytes(1 << 20)
                for start in range(0, zeros, len(block)):
                    fh.write(block[: zeros - start])


def labels_arrays(folder: SessionFolder) -> tuple[Path, dict]:
    index = json.loads((folder.path / INDEX).read_text())
    path = folder.path / index["labels"][0]["file"]
    with np.load(path) as f:
        return path, {key: f[key] for key in f.files}
