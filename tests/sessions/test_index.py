"""session.json: a newer format, values JSON does not allow, and sizes and nesting beyond
what a save writes are refused with a SessionError naming the folder."""

from __future__ import annotations

import json

import pytest
from _session_data import assert_same_session, make_session

from napari_unet.errors import SessionError
from napari_unet.sessions import INDEX, SessionFolder


def test_newer_format_is_refused(tmp_path, crop):
    folder = SessionFolder(tmp_path / "s.unet-session")
    path = folder.save(make_session(crop))
    index = json.loads(path.read_text())
    index["format_version"] = 7
    path.write_text(json.dumps(index))
    with pytest.raises(SessionError, match="newer napari-unet.*format 7.*upgrade napari-unet"):
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


def test_segment_settings_are_stored_flat_and_checked_by_the_options_rules(tmp_path, crop):
    """The labels' settings stay the flat dict sessions have always held, read back into
    the widget's SegmentSettings (SegmentOptions plus scope); a value outside a
    SegmentOptions rule is refused at load, naming the setting."""
    from napari_unet.sessions import SegmentSettings

    folder = SessionFolder(tmp_path / "s.unet-session")
    index = json.loads(folder.save(make_session(crop)).read_text())
    stored = {"device": "cpu", "tile_size": 64, "seed_threshold": 0.5, "min_size": 3,
              "object_size": 25, "scope": "plane", "stitch_3d": True, "compile": False,
              "rgb": "optical-density", "tta": True}
    assert set(index["labels"][0]["settings"]) == set(stored)
    index["labels"][0]["settings"] = stored
    (folder.path / INDEX).write_text(json.dumps(index))
    assert SessionFolder(folder.path).load().labels[0].settings == SegmentSettings(**stored)
    older = {k: v for k, v in stored.items() if k not in ("rgb", "tta")}  # before they existed
    index["labels"][0]["settings"] = older
    (folder.path / INDEX).write_text(json.dumps(index))
    assert SessionFolder(folder.path).load().labels[0].settings == SegmentSettings(**older)
    for key, bad in [("seed_threshold", 1.5), ("scope", "everything"), ("device", "tpu"),
                     ("rgb", "hsv")]:
        index["labels"][0]["settings"] = {**stored, key: bad}
        (folder.path / INDEX).write_text(json.dumps(index))
        with pytest.raises(SessionError, match=f"{key} is {bad!r}"):
            SessionFolder(folder.path).load()


def test_the_settings_summary_names_what_changes_the_result():
    """The status line's "made by" names every choice that changes the labels."""
    from napari_unet.sessions import SegmentSettings

    text = SegmentSettings(device="cpu", stitch_3d=True, voxel_size=(2.18, 1, 1),
                           rgb="hematoxylin", tta=True).summary()
    assert text == ("objects built in 3D (voxel 2.18 x 1 x 1), colour hematoxylin, "
                    "mirrored predictions averaged, device cpu")
    assert SegmentSettings(device="cpu").summary() == "device cpu"
