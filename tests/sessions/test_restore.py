"""Restoring a session folder into a viewer's session (``_widgets/_session_file.restore``)
with a stand-in viewer: an untrusted folder never hands a script or other file to a viewer
nor opens an image outside it unasked, and a session that cannot be restored whole is
refused before the open one changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _session_data import make_session, rewrite_npz, write_members
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_unet._package import PLUGIN
from napari_unet._widgets._session import Session
from napari_unet._widgets._session_file import restore
from napari_unet.errors import SessionError
from napari_unet.sessions import INDEX, SessionFolder


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
        assert viewer.opened == [(str(inside), {"plugin": PLUGIN})] and asked == []


def test_an_image_outside_the_session_folder_is_opened_only_when_the_user_agrees(tmp_path, crop):
    outside = tmp_path / "nuclei.tif"
    outside.write_bytes(b"II*\0")
    viewer, problems, asked = _restore_with_image(tmp_path, crop, str(outside), answer=False)
    assert asked == [outside] and viewer.opened == []
    assert len(problems) == 1 and "outside the session folder" in problems[0]
    viewer, problems, asked = _restore_with_image(tmp_path, crop, str(outside), answer=True)
    assert asked == [outside]
    assert viewer.opened == [(str(outside), {"plugin": PLUGIN})]
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
                                              sample=[PLUGIN, "nuclei_fluo"])
    assert viewer.samples == [(PLUGIN, "nuclei_fluo")]
    # A session saved before the plugin's rename names its samples with the old name.
    viewer, problems, _ = _restore_with_image(tmp_path, crop, None,
                                              sample=["napari-unet", "nuclei_fluo"])
    assert viewer.samples == [(PLUGIN, "nuclei_fluo")]



def _float_labels(labels, corrections, index):
    rewrite_npz(labels, data=np.load(labels)["data"].astype(np.float64))


def _zero_d_labels(labels, corrections, index):
    rewrite_npz(labels, data=np.array(3), baseline=np.array(3), edited=np.array(True),
                 reviewed=np.array(False))
    index["labels"][0]["shape"] = []


def _string_labels(labels, corrections, index):
    rewrite_npz(labels, data=np.load(labels)["data"].astype(str))


def _negative_labels(labels, corrections, index):
    data = np.load(labels)["data"].astype(np.int32)
    data[0, 0] = -4
    rewrite_npz(labels, data=data)


def _mask_not_boolean(labels, corrections, index):
    edited = np.load(labels)["edited"].astype(np.uint8)
    edited[0, 0] = 2
    rewrite_npz(labels, edited=edited)


def _labels_not_the_image_shape(labels, corrections, index):
    arrays = np.load(labels)
    rewrite_npz(labels, **{k: arrays[k][:50] for k in ("data", "baseline", "edited",
                                                         "reviewed")})
    index["labels"][0]["shape"] = [50, 96]


def _pending_plane_of_another_shape(labels, corrections, index):
    arrays = np.load(labels)
    rewrite_npz(labels, **{f"pending_{k}_0": arrays[f"pending_{k}_0"][..., :50]
                            for k in ("image", "labels", "mask")})


def _stored_float_labels(labels, corrections, index):
    rewrite_npz(corrections, labels_0=np.load(corrections)["labels_0"] + 0.5)


def _stored_string_image(labels, corrections, index):
    rewrite_npz(corrections, image_0=np.load(corrections)["image_0"].astype(str))


def _stored_zero_d_mask(labels, corrections, index):
    rewrite_npz(corrections, mask_0=np.array(True))


def _stored_nan_percentiles(labels, corrections, index):
    rewrite_npz(corrections, percentiles_0=np.array([[np.nan, 1.0]]))


def _stored_same_plane_two_shapes(labels, corrections, index):
    arrays = np.load(corrections)
    rewrite_npz(corrections, **{f"{k}_1": arrays[f"{k}_1"][..., :50]
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

    viewer, session = _Viewer(), Session()
    data = make_session(crop)
    data.labels[0].data = data.labels[0].data.astype(np.float32)
    with pytest.raises(SessionError, match="float32.*integer"):
        restore(viewer, session, data, confirm=lambda path: False)
    assert not viewer.layers and not len(session.store) and not len(session.versions)



def test_units_napari_does_not_know_are_dropped_not_fatal(tmp_path, crop):
    """Units are the one part of a labels record only napari can check: one it refuses
    loses its units, with a message, instead of failing a restore half done."""

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
    write_members(path, arrays, declared, zeros=data.draw(st.sampled_from([0, 16, 96 * 96])))


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


def test_a_session_is_replaced_whole_or_not_at_all(crop):
    """Session.replace_with (what restore opens a session with) refuses an active version
    the versions lack before anything changes, and otherwise keeps only what it is given."""
    data = make_session(crop)
    viewer, session = _Viewer(), Session()
    restore(viewer, session, data, confirm=lambda path: False)
    before = _state(session, viewer)
    with pytest.raises(ValueError, match="active model version 2 is not one of the 2"):
        session.replace_with(data.versions, 2, [])
    assert _state(session, viewer) == before
    session.replace_with(data.versions[:1], 0, data.corrections[:1])
    assert list(session.store) == data.corrections[:1]
    assert session.versions.versions == data.versions[:1] and session.versions.active == 0
