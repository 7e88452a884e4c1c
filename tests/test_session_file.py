"""Session folders without a viewer: write, read back, refuse newer or damaged files, and
never lose the previous save when a write fails.

Uses a real crop of the bundled fluorescence sample and its ground-truth labels.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from _data import small_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_unet.errors import NapariUnetError, SessionError
from napari_unet.sample_data import load_sample
from napari_unet._widgets._jobs import SegmentSettings
from napari_unet._widgets._session_file import (
    INDEX,
    ImageRecord,
    LabelsRecord,
    SessionData,
    SessionFolder,
    check_save_target,
)
from napari_unet._widgets._state import CorrectionStore, ModelVersions
from napari_unet.corrections import Correction


@pytest.fixture(scope="module")
def crop():
    """A 96x96 crop of the nuclei sample and its instance labels."""
    image = np.asarray(load_sample("nuclei_fluo").data)[:96, :96]
    labels = np.asarray(load_sample("nuclei_fluo_labels").data)[:96, :96].astype(np.uint32)
    assert len(np.unique(labels)) > 3  # several real nuclei in the crop
    return image, labels


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
                         percentiles=np.array([[3.0, 180.5]]), axes="CYX"))  # a stack plane's stack percentiles
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


def test_round_trip_and_incremental_save(tmp_path, crop):
    saved = make_session(crop)
    folder = SessionFolder(tmp_path / "work.unet-session")
    index_path = folder.save(saved)
    assert index_path == tmp_path / "work.unet-session" / INDEX
    index = json.loads(index_path.read_text())
    assert index["format"] == "napari-unet-session" and index["format_version"] == 1
    assert index["images"][0]["path"] == "/data/nuclei.tif"
    assert index["models"]["versions"][1]["stats"]["agreement_before"] is None  # NaN

    back = SessionFolder(index_path).load()  # the session.json path works too
    assert_same_session(back, saved)
    assert back.versions[1].stats["steps"] == 12
    assert back.versions[1].stats["agreement_before"] is None
    store = CorrectionStore()
    for correction in back.corrections:
        store.add(correction)
    assert store.n_supervised == sum(c.n_supervised for c in saved.corrections)

    # Saving again (a later round) writes only what changed: the model files are kept,
    # the labels file of the earlier save is replaced and removed.
    models_before = {v["file"]: (folder.path / v["file"]).stat().st_mtime_ns
                     for v in index["models"]["versions"]}
    saved.labels[0].data[0:5, 0:5] = 5
    saved.labels[0].edited[0:5, 0:5] = True
    extra = small_model(seed=2, name="round2")
    saved.versions.append(type(saved.versions[0])("tiny · round 2", extra, parent=1, round=2))
    saved.active = 2
    folder.save(saved)
    index2 = json.loads(index_path.read_text())
    files2 = [v["file"] for v in index2["models"]["versions"]]
    assert files2[:2] == list(models_before)
    assert all((folder.path / f).stat().st_mtime_ns == t for f, t in models_before.items())
    names = sorted(p.name for p in folder.path.iterdir())
    assert names == sorted([INDEX, *files2, index2["labels"][0]["file"],
                            index2["corrections"]["file"]])
    assert_same_session(SessionFolder(folder.path).load(), saved)


def test_newer_format_is_refused(tmp_path, crop):
    folder = SessionFolder(tmp_path / "s.unet-session")
    path = folder.save(make_session(crop))
    index = json.loads(path.read_text())
    index["format_version"] = 7
    path.write_text(json.dumps(index))
    with pytest.raises(SessionError, match="newer napari-unet.*format 7.*upgrade napari-unet"):
        SessionFolder(folder.path).load()


def test_damaged_sessions_are_refused_with_the_fix(tmp_path, crop):
    folder = SessionFolder(tmp_path / "s.unet-session")
    path = folder.save(make_session(crop))
    good = path.read_text()
    index = json.loads(good)

    path.write_text(good[: len(good) // 2])  # cut short
    with pytest.raises(SessionError, match="damaged.*not valid JSON.*backup"):
        SessionFolder(folder.path).load()

    broken = json.loads(good)
    broken["labels"][0]["shape"] = [5, 5]
    path.write_text(json.dumps(broken))
    with pytest.raises(SessionError, match="saved shape.*damaged"):
        SessionFolder(folder.path).load()

    path.write_text(good)
    labels_file = folder.path / index["labels"][0]["file"]
    content = labels_file.read_bytes()
    labels_file.write_bytes(content[: len(content) // 2])
    with pytest.raises(SessionError, match="unreadable.*truncated"):
        SessionFolder(folder.path).load()
    labels_file.unlink()
    with pytest.raises(SessionError, match="incomplete.*missing"):
        SessionFolder(folder.path).load()

    model_file = folder.path / index["models"]["versions"][0]["file"]
    labels_file.write_bytes(content)
    model_file.write_bytes(b"garbage")
    with pytest.raises(SessionError, match="model of session.*cannot be read"):
        SessionFolder(folder.path).load()

    with pytest.raises(SessionError, match="no session.json"):
        SessionFolder(tmp_path).load()
    # Left-overs of an interrupted first save do not block saving there; no session.json
    # names them, so they are not the session's to remove.
    fresh = tmp_path / "fresh.unet-session"
    fresh.mkdir()
    (fresh / "labels-0badc0de-0.npz").write_bytes(b"half")
    SessionFolder(fresh).save(make_session(crop))
    assert (fresh / "labels-0badc0de-0.npz").read_bytes() == b"half"
    assert_same_session(SessionFolder(fresh).load(), make_session(crop))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SessionError, match="other files in it"):
        check_save_target(tmp_path)
    with pytest.raises(SessionError, match="other files in it"):
        SessionFolder(tmp_path).save(make_session(crop))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.unet-session", "notes.txt",
                                                         "s.unet-session"]


@pytest.mark.parametrize("fail_on", ["labels-", INDEX])
def test_failed_save_keeps_the_previous_session(tmp_path, crop, monkeypatch, fail_on):
    saved = make_session(crop)
    folder = SessionFolder(tmp_path / "s.unet-session")
    path = folder.save(saved)
    before = path.read_bytes()
    files_before = sorted(p.name for p in folder.path.iterdir())

    changed = make_session(crop)  # new model objects: their files must be written too
    changed.labels[0].data[:] = 0
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if os.path.basename(dst).startswith(fail_on):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(NapariUnetError, match="disk is full"):
        folder.save(changed)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in folder.path.iterdir()) == files_before  # nothing left over
    assert_same_session(SessionFolder(folder.path).load(), saved)
    # The folder still works for the next save.
    folder.save(changed)
    back = SessionFolder(folder.path).load()
    assert not back.labels[0].data.any()
    assert math.isnan(changed.versions[1].stats["agreement_before"])  # the input is untouched


def test_saving_removes_only_files_the_previous_save_wrote(tmp_path, crop):
    """Files named like a save's data files, which no session.json of this folder named,
    are the user's: saving there (first or again) never removes them."""
    mine = {"model-1.safetensors": b"my model", "labels-2024.npz": b"my labels",
            "corrections-0.npz": b"my corrections"}
    fresh = tmp_path / "fresh.unet-session"
    fresh.mkdir()
    for name, content in mine.items():
        (fresh / name).write_bytes(content)
    folder = SessionFolder(fresh)
    first = json.loads(folder.save(make_session(crop)).read_text())
    assert all((fresh / name).read_bytes() == content for name, content in mine.items())

    # A saved session, then the user's files appear next to it; the next save removes the
    # previous save's labels and corrections files, and nothing else.
    changed = make_session(crop)
    changed.labels[0].data[:] = 0
    second = json.loads(folder.save(changed).read_text())
    assert all((fresh / name).read_bytes() == content for name, content in mine.items())
    assert not (fresh / first["labels"][0]["file"]).exists()
    assert not (fresh / first["corrections"]["file"]).exists()
    names = {p.name for p in fresh.iterdir()}
    assert names == {INDEX, *mine, *(v["file"] for v in second["models"]["versions"]),
                     second["labels"][0]["file"], second["corrections"]["file"]}

    # A session.json naming files outside its folder (or not named like a save's data
    # file) cannot make a save remove them.
    outside = tmp_path / "labels-1.npz"
    outside.write_bytes(b"outside")
    (fresh / "notes.txt").write_bytes(b"notes")
    second["labels"][0]["file"] = "../labels-1.npz"
    second["corrections"]["file"] = "notes.txt"
    (fresh / INDEX).write_text(json.dumps(second))
    SessionFolder(fresh).save(make_session(crop))
    assert outside.read_bytes() == b"outside" and (fresh / "notes.txt").read_bytes() == b"notes"
    assert all((fresh / name).read_bytes() == content for name, content in mine.items())


# --------------------------------------------------------------------------- untrusted files


class _Image:
    """A stand-in napari Image layer (restore recognises layers by class name)."""

    def __init__(self, data):
        self.data, self.name, self.rgb, self.metadata = data, "opened", False, {}
        self.scale = self.translate = (1.0, 1.0)


class _Labels:
    def __init__(self, data, name, **kwargs):
        self.data, self.name, self.metadata = data, name, kwargs.get("metadata", {})


class _Viewer:
    """Records what restore asks a viewer to open (nothing is opened)."""

    def __init__(self):
        self.layers, self.opened, self.samples = {}, [], []

    def open(self, path, **kwargs):
        self.opened.append((str(path), kwargs))
        return [_Image(np.zeros((3, 3), np.uint8))]

    def open_sample(self, plugin, sample):
        self.samples.append((plugin, sample))
        return [_Image(np.zeros((3, 3), np.uint8))]

    def add_labels(self, data, name, **kwargs):
        self.layers[name] = _Labels(data, name, **kwargs)
        return self.layers[name]


def _restore_with_image(tmp_path, crop, image_path, reader="napari", sample=None, answer=False):
    """Save a session naming ``image_path`` (read by ``reader``), open it in a recording
    viewer; returns (viewer, problems, the paths the user was asked about)."""
    from napari_unet._widgets._session import Session
    from napari_unet._widgets._session_file import restore

    folder = tmp_path / "s.unet-session"
    if not (folder / INDEX).is_file():
        SessionFolder(folder).save(make_session(crop))
    index = json.loads((folder / INDEX).read_text())
    index["images"][0].update(path=image_path, reader=reader, sample=sample)
    (folder / INDEX).write_text(json.dumps(index))
    viewer, asked = _Viewer(), []

    def confirm(path):
        asked.append(Path(path))
        return answer

    problems = restore(viewer, Session(), SessionFolder(folder).load(), confirm=confirm)
    return viewer, problems, asked


def test_a_session_never_hands_a_script_or_other_file_to_a_viewer(tmp_path, crop):
    folder = tmp_path / "s.unet-session"
    SessionFolder(folder).save(make_session(crop))
    (folder / "readme.py").write_text("open('ran', 'w')\n")
    for image_path in [str(folder / "readme.py"), "readme.py", "/etc/passwd", str(folder)]:
        viewer, problems, asked = _restore_with_image(tmp_path, crop, image_path)
        assert viewer.opened == [] and asked == [], image_path
        assert len(problems) == 1 and "not an image file" in problems[0], problems
    # A FIFO named like a TIFF is not opened either (reading it would wait forever).
    os.mkfifo(folder / "pipe.tif")
    viewer, problems, _ = _restore_with_image(tmp_path, crop, "pipe.tif")
    assert viewer.opened == [] and "not a regular file" in problems[0], problems


def test_a_session_image_opens_only_with_this_plugins_reader(tmp_path, crop):
    folder = tmp_path / "s.unet-session"
    SessionFolder(folder).save(make_session(crop))
    inside = folder / "image.tif"
    inside.write_bytes(b"II*\0")  # only its name and kind matter here
    # Inside the folder (relative paths are relative to the folder, not the working one):
    # opened without asking, with napari-unet's reader whatever the file says.
    for image_path in ["image.tif", str(inside)]:
        viewer, _, asked = _restore_with_image(tmp_path, crop, image_path, reader="evil")
        assert viewer.opened == [(str(inside), {"plugin": "napari-unet"})] and asked == []


def test_an_image_outside_the_session_folder_is_opened_only_when_the_user_agrees(tmp_path, crop):
    outside = tmp_path / "nuclei.tif"
    outside.write_bytes(b"II*\0")
    viewer, problems, asked = _restore_with_image(tmp_path, crop, str(outside), answer=False)
    assert asked == [outside] and viewer.opened == []
    assert len(problems) == 1 and "outside the session folder" in problems[0]
    viewer, problems, asked = _restore_with_image(tmp_path, crop, str(outside), answer=True)
    assert asked == [outside]
    assert viewer.opened == [(str(outside), {"plugin": "napari-unet"})]
    # A link in the folder to an image outside it is outside too.
    link = tmp_path / "s.unet-session" / "link.tif"
    link.symlink_to(outside)
    viewer, _, asked = _restore_with_image(tmp_path, crop, "link.tif", answer=False)
    assert asked == [link] and viewer.opened == []


def test_only_this_plugins_samples_are_opened(tmp_path, crop):
    viewer, problems, _ = _restore_with_image(tmp_path, crop, None,
                                              sample=["other-plugin", "x"])
    assert viewer.samples == [] and "sample of plugin 'other-plugin'" in problems[0]
    viewer, problems, _ = _restore_with_image(tmp_path, crop, None,
                                              sample=["napari-unet", "nuclei_fluo"])
    assert viewer.samples == [("napari-unet", "nuclei_fluo")]


@pytest.mark.parametrize("kind", ["labels", "model"])
def test_data_files_linked_from_outside_the_folder_are_refused(tmp_path, crop, kind):
    folder = SessionFolder(tmp_path / "s.unet-session")
    index = json.loads(folder.save(make_session(crop)).read_text())
    name = (index["labels"][0]["file"] if kind == "labels"
            else index["models"]["versions"][0]["file"])
    outside = tmp_path / f"outside-{name}"
    os.replace(folder.path / name, outside)
    (folder.path / name).symlink_to(outside)
    with pytest.raises(SessionError, match="outside the session folder"):
        SessionFolder(folder.path).load()
    # A link to a file inside the folder is fine.
    os.replace(outside, folder.path / "real")
    (folder.path / name).unlink()
    (folder.path / name).symlink_to("real")
    SessionFolder(folder.path).load()


# --------------------------------------------------------------------------- bad arrays


def _rewrite_npz(path: Path, **changes) -> None:
    """Replace arrays of the .npz at ``path`` (a session file changed by hand or damaged)."""
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    arrays.update(changes)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _float_labels(labels, corrections, index):
    _rewrite_npz(labels, data=np.load(labels)["data"].astype(np.float64))


def _zero_d_labels(labels, corrections, index):
    _rewrite_npz(labels, data=np.array(3), baseline=np.array(3), edited=np.array(True),
                 reviewed=np.array(False))
    index["labels"][0]["shape"] = []


def _string_labels(labels, corrections, index):
    _rewrite_npz(labels, data=np.load(labels)["data"].astype(str))


def _negative_labels(labels, corrections, index):
    data = np.load(labels)["data"].astype(np.int32)
    data[0, 0] = -4
    _rewrite_npz(labels, data=data)


def _mask_not_boolean(labels, corrections, index):
    edited = np.load(labels)["edited"].astype(np.uint8)
    edited[0, 0] = 2
    _rewrite_npz(labels, edited=edited)


def _labels_not_the_image_shape(labels, corrections, index):
    arrays = np.load(labels)
    _rewrite_npz(labels, **{k: arrays[k][:50] for k in ("data", "baseline", "edited",
                                                         "reviewed")})
    index["labels"][0]["shape"] = [50, 96]


def _pending_plane_of_another_shape(labels, corrections, index):
    arrays = np.load(labels)
    _rewrite_npz(labels, **{f"pending_{k}_0": arrays[f"pending_{k}_0"][..., :50]
                            for k in ("image", "labels", "mask")})


def _stored_float_labels(labels, corrections, index):
    _rewrite_npz(corrections, labels_0=np.load(corrections)["labels_0"] + 0.5)


def _stored_string_image(labels, corrections, index):
    _rewrite_npz(corrections, image_0=np.load(corrections)["image_0"].astype(str))


def _stored_zero_d_mask(labels, corrections, index):
    _rewrite_npz(corrections, mask_0=np.array(True))


def _stored_nan_percentiles(labels, corrections, index):
    _rewrite_npz(corrections, percentiles_0=np.array([[np.nan, 1.0]]))


def _stored_same_plane_two_shapes(labels, corrections, index):
    arrays = np.load(corrections)
    _rewrite_npz(corrections, **{f"{k}_1": arrays[f"{k}_1"][..., :50]
                                 for k in ("image", "labels", "mask")})


BAD_SESSIONS = {
    "float labels": (_float_labels, "labels-.*float64.*integer"),
    "0-d labels": (_zero_d_labels, "labels-.*0 dimension"),
    "string labels": (_string_labels, "labels-.*<U.*integer"),
    "negative labels": (_negative_labels, "labels-.*negative"),
    "mask not boolean": (_mask_not_boolean, "labels-.*edited.*True/False"),
    "labels not the image's shape": (_labels_not_the_image_shape, "labels-.*image 'nuclei'"),
    "pending plane of another shape": (_pending_plane_of_another_shape,
                                       "labels-.*correction 'nuclei'.*plane"),
    "stored float labels": (_stored_float_labels, "corrections-.*float64.*integer"),
    "stored string image": (_stored_string_image, "corrections-.*image.*<U"),
    "stored 0-d mask": (_stored_zero_d_mask, "corrections-.*0 dimension"),
    "stored NaN percentiles": (_stored_nan_percentiles, "corrections-.*percentiles.*finite"),
    "stored plane of two shapes": (_stored_same_plane_two_shapes, "corrections-.*'other'"),
}


def _state(session, viewer):
    """What an open session holds (objects by identity, so a replacement shows)."""
    return ([id(link) for link in session.links], [id(c) for c in session.store],
            [id(v) for v in session.versions.versions], session.versions.active,
            {name: (id(layer), id(layer.data)) for name, layer in viewer.layers.items()})


@pytest.mark.parametrize("bad", list(BAD_SESSIONS))
def test_a_bad_session_is_refused_before_the_open_one_changes(tmp_path, crop, bad):
    """Every array of a session is checked when it is read, so a session that cannot be
    restored is refused with the file and the fix, and the open session stays as it was."""
    from napari_unet._widgets._session import Session
    from napari_unet._widgets._session_file import restore

    good = SessionFolder(tmp_path / "good.unet-session")
    good.save(make_session(crop))
    viewer, session = _Viewer(), Session()
    restore(viewer, session, SessionFolder(good.path).load(), confirm=lambda path: False)
    assert len(session.store) and len(session.versions) == 2 and viewer.layers
    before = _state(session, viewer)

    folder = SessionFolder(tmp_path / "bad.unet-session")
    index = json.loads(folder.save(make_session(crop)).read_text())
    change, message = BAD_SESSIONS[bad]
    change(folder.path / index["labels"][0]["file"],
           folder.path / index["corrections"]["file"], index)
    (folder.path / INDEX).write_text(json.dumps(index))
    with pytest.raises(SessionError, match=message) as info:
        restore(viewer, session, SessionFolder(folder.path).load(), confirm=lambda path: False)
    assert str(folder.path) in str(info.value) and "backup" in str(info.value)
    assert _state(session, viewer) == before


def test_restore_checks_data_it_did_not_read(crop):
    """Data made otherwise (not read by SessionFolder.load) is checked by restore too."""
    from napari_unet._widgets._session import Session
    from napari_unet._widgets._session_file import restore

    viewer, session = _Viewer(), Session()
    data = make_session(crop)
    data.labels[0].data = data.labels[0].data.astype(np.float32)
    with pytest.raises(SessionError, match="float32.*integer"):
        restore(viewer, session, data, confirm=lambda path: False)
    assert not viewer.layers and not len(session.store) and not len(session.versions)


def test_integer_masks_of_zeros_and_ones_are_read_as_boolean(tmp_path, crop):
    folder = SessionFolder(tmp_path / "s.unet-session")
    index = json.loads(folder.save(make_session(crop)).read_text())
    labels = folder.path / index["labels"][0]["file"]
    _rewrite_npz(labels, reviewed=np.load(labels)["reviewed"].astype(np.uint8))
    corrections = folder.path / index["corrections"]["file"]
    _rewrite_npz(corrections, mask_0=np.load(corrections)["mask_0"].astype(np.int64))
    back = SessionFolder(folder.path).load()
    assert back.labels[0].reviewed.dtype == bool and back.corrections[0].mask.dtype == bool
    assert_same_session(back, make_session(crop))


def test_units_napari_does_not_know_are_dropped_not_fatal(tmp_path, crop):
    """Units are the one part of a labels record only napari can check: one it refuses
    loses its units, with a message, instead of failing a restore half done."""
    from napari_unet._widgets._session import Session
    from napari_unet._widgets._session_file import restore

    class StrictViewer(_Viewer):
        def add_labels(self, data, name, **kwargs):
            if "units" in kwargs and "furlong" in kwargs["units"]:
                raise ValueError("Could not find unit furlong")
            return super().add_labels(data, name, **kwargs)

    data = make_session(crop)
    data.labels[0].units = ["furlong", "furlong"]
    viewer, session = StrictViewer(), Session()
    problems = restore(viewer, session, data, confirm=lambda path: False)
    assert "nuclei labels" in viewer.layers and len(session.versions) == 2
    assert any("without its units" in p and "furlong" in p for p in problems), problems


# --------------------------------------------------------------------------- hostile files


def _write_members(path: Path, arrays: dict, declared: Optional[dict] = None,
                   zeros: int = 0) -> None:
    """Write an .npz by hand: ``arrays`` as numpy would, and for each key of ``declared`` a
    member whose .npy header declares that (shape, dtype) followed by ``zeros`` zero bytes,
    streamed through the compressor (no large array is ever made here)."""
    import zipfile

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


def _labels_arrays(folder: SessionFolder) -> tuple[Path, dict]:
    index = json.loads((folder.path / INDEX).read_text())
    path = folder.path / index["labels"][0]["file"]
    with np.load(path) as f:
        return path, {key: f[key] for key in f.files}


def test_a_small_npz_that_would_expand_to_gigabytes_is_refused_before_it_is_read(tmp_path, crop):
    """A labels member compressed 1000:1 (here 256 MiB of zeros in a file of a few hundred
    kB) is refused from its .npy header, against the shape session.json promises, before
    any of it is decompressed."""
    import tracemalloc

    folder = SessionFolder(tmp_path / "s.unet-session")
    folder.save(make_session(crop))
    path, arrays = _labels_arrays(folder)
    del arrays["data"]
    side = 16384
    _write_members(path, arrays, {"data": ((side, side), np.uint8)}, zeros=side * side)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(SessionError, match=rf"{path.name}.*\({side}, {side}\).*saved shape"
                           ) as info:
            SessionFolder(folder.path).load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak  # nothing near the 256 MiB the member expands to
    assert str(folder.path) in str(info.value) and "backup" in str(info.value)


@pytest.mark.parametrize("declared", [((200_000, 200_000), np.uint32),  # 149 GiB
                                      ((96, 96), np.uint32)])  # only 10 of its bytes stored
def test_an_array_header_declaring_more_data_than_its_zip_entry_holds_is_refused(
        tmp_path, crop, declared):
    folder = SessionFolder(tmp_path / "s.unet-session")
    folder.save(make_session(crop))
    path, arrays = _labels_arrays(folder)
    del arrays["baseline"]
    _write_members(path, arrays, {"baseline": declared}, zeros=10)
    with pytest.raises(SessionError, match=f"{path.name}.*baseline.*declares.*bytes"):
        SessionFolder(folder.path).load()


def test_arrays_larger_than_this_machines_memory_are_refused_before_they_are_read(
        tmp_path, crop, monkeypatch):
    from napari_unet._widgets import _session_file

    folder = SessionFolder(tmp_path / "s.unet-session")
    folder.save(make_session(crop))
    monkeypatch.setattr(_session_file, "_memory_bytes", lambda: 50_000)
    with pytest.raises(SessionError, match="more than this machine's memory"):
        SessionFolder(folder.path).load()
    monkeypatch.setattr(_session_file, "_memory_bytes", lambda: None)  # not known: no bound
    SessionFolder(folder.path).load()


def _set_raw(index: dict, where: list, raw: str) -> str:
    """``index`` as JSON text with the value at ``where`` replaced by the text ``raw``."""
    parent = index
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = "\0raw"
    return json.dumps(index).replace('"\\u0000raw"', raw)


@pytest.mark.parametrize("where, raw, message", [
    (["models", "versions", 1, "stats", "final_loss"], "NaN", "NaN"),
    (["labels", 0, "scale", 0], "-Infinity", "Infinity"),
    (["models", "versions", 1, "round"], "1e400", "1e400"),
    (["labels", 0, "shape", 0], "9" * 30, "integer 9{24}"),
    (["labels", 0, "metadata", "deep"], "[" * 100_000 + "]" * 100_000, "nest"),
    (["labels", 0, "settings", "tile_size"], '"large"', "tile_size"),
    (["labels", 0, "settings", "stitch_3d"], "3", "stitch_3d"),
])
def test_session_json_with_values_json_does_not_allow_is_refused(tmp_path, crop, where, raw,
                                                                 message):
    folder = SessionFolder(tmp_path / "s.unet-session")
    index = json.loads(folder.save(make_session(crop)).read_text())
    (folder.path / INDEX).write_text(_set_raw(index, where, raw))
    with pytest.raises(SessionError, match=message) as info:
        SessionFolder(folder.path).load()
    assert str(folder.path) in str(info.value)


def test_an_oversized_or_deeply_nested_session_json_neither_opens_nor_blocks_a_save(tmp_path,
                                                                                    crop):
    folder = SessionFolder(tmp_path / "s.unet-session")
    index = json.loads(folder.save(make_session(crop)).read_text())
    (folder.path / INDEX).write_text(_set_raw(index, ["deep"], "[" * 100_000 + "]" * 100_000))
    SessionFolder(folder.path).save(make_session(crop))  # the unreadable index is replaced
    assert_same_session(SessionFolder(folder.path).load(), make_session(crop))
    with open(folder.path / INDEX, "a") as fh:
        fh.write(" " * (17 << 20))
    with pytest.raises(SessionError, match="damaged.*larger than 16 MiB"):
        SessionFolder(folder.path).load()


# --------------------------------------------------------------------------- property test

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)
#: JSON text that no Python value dumps to (or only with allow_nan).
_RAW = st.sampled_from(["NaN", "-Infinity", "1e400", "-1e999", "1" + "0" * 5000,
                        "[" * 5000 + "]" * 5000, '{"a":' * 2000 + "0" + "}" * 2000])
_DTYPES = st.sampled_from(["<f8", "<f4", "|i1", "<i8", "|u1", "<u4", "|b1", "<c8", "<U3",
                           ">u2", "|V4"])
_SHAPES = st.lists(st.integers(0, 130), max_size=4).map(tuple)
_HUGE = st.lists(st.sampled_from([1, 96, 10**5, 2**40, -1]), min_size=1, max_size=4).map(tuple)


def _paths(value, where=()):
    """Every place in a JSON tree, as key/index paths."""
    yield list(where)
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, child in items:
        yield from _paths(child, (*where, key))


def _mutate_index(data, folder: Path) -> None:
    index = json.loads((folder / INDEX).read_text())
    raw = None
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(list(_paths(index))[1:]))
        parent = index
        for key in where[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["value", "delete", "raw"]))
        if action == "delete":
            del parent[where[-1]]
        elif action == "raw" and raw is None:
            raw = data.draw(_RAW)
            parent[where[-1]] = "\0raw"
        else:
            parent[where[-1]] = data.draw(_JSON)
        if not isinstance(index, dict):
            break
    text = json.dumps(index)
    (folder / INDEX).write_text(text if raw is None else text.replace('"\\u0000raw"', raw))


def _mutate_npz(data, path: Path) -> None:
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    declared = {}
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(sorted(arrays) + ["pending_image_1", "mask_9"]))
        arrays.pop(key, None)
        action = data.draw(st.sampled_from(["array", "delete", "huge", "0-d"]))
        if action == "array":
            arrays[key] = np.zeros(data.draw(_SHAPES), data.draw(_DTYPES))
        elif action == "0-d":
            arrays[key] = np.zeros((), data.draw(_DTYPES))
        elif action == "huge":
            declared[key] = (data.draw(_HUGE), np.dtype(data.draw(_DTYPES)))
    _write_members(path, arrays, declared, zeros=data.draw(st.sampled_from([0, 16, 96 * 96])))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, crop):
    """A real saved session folder, and its data restored into an open session."""
    folder = SessionFolder(tmp_path_factory.mktemp("saved") / "s.unet-session")
    folder.save(make_session(crop))
    return folder.path, SessionFolder(folder.path).load()


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_changed_session_opens_or_is_refused_and_never_touches_the_open_one(saved, data):
    """session.json values of random types, NaN, huge numbers, strings, missing keys and
    nesting, and .npz members of other types and shapes, 0-d, or declaring huge shapes:
    opening the session (reading it, then restoring it) either works or raises
    SessionError, never another exception, and the open session is unchanged on failure."""
    import shutil
    import tempfile

    from napari_unet._widgets._session import Session
    from napari_unet._widgets._session_file import restore

    good_path, good = saved
    viewer, session = _Viewer(), Session()
    restore(viewer, session, good, confirm=lambda path: False)
    before = _state(session, viewer)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "s.unet-session"
        shutil.copytree(good_path, folder)
        index = json.loads((folder / INDEX).read_text())
        targets = data.draw(st.sets(st.sampled_from(["index", "labels", "corrections"]),
                                    min_size=1))
        if "labels" in targets:
            _mutate_npz(data, folder / index["labels"][0]["file"])
        if "corrections" in targets:
            _mutate_npz(data, folder / index["corrections"]["file"])
        if "index" in targets:
            _mutate_index(data, folder)
        try:
            restore(viewer, session, SessionFolder(folder).load(), confirm=lambda path: False)
        except SessionError:
            assert _state(session, viewer) == before
