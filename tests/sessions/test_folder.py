"""Session folders without a viewer: write, read back, refuse damaged folders, and never
lose the previous save (or a file of the user's) when a write fails.

Uses a real crop of the bundled fluorescence sample and its ground-truth labels.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from _data import small_model
from _session_data import assert_same_session, make_session, rewrite_npz

import napari_unet
from napari_unet._widgets._state import CorrectionStore
from napari_unet.errors import NapariUnetError, SessionError
from napari_unet.sessions import INDEX, SessionFolder, check_save_target


def test_the_format_imports_neither_napari_nor_qt_nor_the_widgets():
    code = ("import sys; import napari_unet.sessions; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari'} "
            "or m.startswith('napari_unet._widgets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_session_file_names_no_absolute_path_of_this_machine(tmp_path, crop):
    """Image and model files are named relative to the session folder (so the session and
    its images can move together), and come back as this machine's paths when opened."""
    image = tmp_path / "images" / "nuclei.tif"
    saved = make_session(crop, image_path=str(image))
    model_file = tmp_path / "models" / "tiny.safetensors"
    saved.versions[0].source = model_file
    index_path = SessionFolder(tmp_path / "work.unet-session").save(saved)
    text = index_path.read_text()
    assert str(tmp_path) not in text and '"/' not in text
    index = json.loads(text)
    assert index["images"][0]["path"] == "../images/nuclei.tif"
    assert index["models"]["versions"][0]["source"] == "../models/tiny.safetensors"
    assert index["napari_unet"] == napari_unet.__version__
    back = SessionFolder(index_path).load()
    assert back.images[0].path == str(image) and back.versions[0].source == model_file


def test_round_trip_and_incremental_save(tmp_path, crop):
    saved = make_session(crop)
    folder = SessionFolder(tmp_path / "work.unet-session")
    index_path = folder.save(saved)
    assert index_path == tmp_path / "work.unet-session" / INDEX
    index = json.loads(index_path.read_text())
    assert index["format"] == "napari-unet-session" and index["format_version"] == 1
    assert index["images"][0]["path"].endswith("../data/nuclei.tif")  # relative to the folder
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



def test_integer_masks_of_zeros_and_ones_are_read_as_boolean(tmp_path, crop):
    folder = SessionFolder(tmp_path / "s.unet-session")
    index = json.loads(folder.save(make_session(crop)).read_text())
    labels = folder.path / index["labels"][0]["file"]
    rewrite_npz(labels, reviewed=np.load(labels)["reviewed"].astype(np.uint8))
    corrections = folder.path / index["corrections"]["file"]
    rewrite_npz(corrections, mask_0=np.load(corrections)["mask_0"].astype(np.int64))
    back = SessionFolder(folder.path).load()
    assert back.labels[0].reviewed.dtype == bool and back.corrections[0].mask.dtype == bool
    assert_same_session(back, make_session(crop))
