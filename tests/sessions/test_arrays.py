"""The .npz files of a session: arrays whose .npy headers declare more than they hold,
more than session.json promises or more than the memory available are refused before any
of their data is decompressed."""

from __future__ import annotations

import numpy as np
import pytest
from _session_data import labels_arrays, make_session, write_members

from napari_unet.errors import SessionError
from napari_unet.sessions import SessionFolder


def test_a_small_npz_that_would_expand_to_gigabytes_is_refused_before_it_is_read(tmp_path, crop):
    """A labels member compressed 1000:1 (here 256 MiB of zeros in a file of a few hundred
    kB) is refused from its .npy header, against the shape session.json promises, before
    any of it is decompressed."""
    import tracemalloc

    folder = SessionFolder(tmp_path / "s.unet-session")
    folder.save(make_session(crop))
    path, arrays = labels_arrays(folder)
    del arrays["data"]
    side = 16384
    write_members(path, arrays, {"data": ((side, side), np.uint8)}, zeros=side * side)
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
    path, arrays = labels_arrays(folder)
    del arrays["baseline"]
    write_members(path, arrays, {"baseline": declared}, zeros=10)
    with pytest.raises(SessionError, match=f"{path.name}.*baseline.*declares.*bytes"):
        SessionFolder(folder.path).load()


def test_arrays_larger_than_this_machines_memory_are_refused_before_they_are_read(
        tmp_path, crop, monkeypatch):
    from napari_unet.sessions import arrays

    folder = SessionFolder(tmp_path / "s.unet-session")
    folder.save(make_session(crop))
    monkeypatch.setattr(arrays, "available_memory", lambda: 50_000)
    with pytest.raises(SessionError, match="of memory available"):
        SessionFolder(folder.path).load()
    monkeypatch.setattr(arrays, "available_memory", lambda: None)  # not known: no bound
    SessionFolder(folder.path).load()
