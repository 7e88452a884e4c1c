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
