"""Tests for napari_unet.atomic.atomic_folder: a folder output (a zarr store) appears
whole or not at all, and a failed rewrite leaves the previous folder as it was."""

from __future__ import annotations

import pytest

from napari_unet.atomic import atomic_folder
from napari_unet.errors import OutputWriteError


def _write(folder, text: str) -> None:
    (folder / "chunk").write_text(text)


def test_a_folder_appears_complete_and_is_not_replaced_without_overwrite(tmp_path):
    target = tmp_path / "labels.zarr"
    with atomic_folder(target) as tmp:
        _write(tmp, "first")
        assert not target.exists()  # nothing under the final name while writing
    assert (target / "chunk").read_text() == "first"
    with pytest.raises(OutputWriteError, match="exists"):
        with atomic_folder(target):
            pass
    with atomic_folder(target, overwrite=True) as tmp:
        _write(tmp, "second")
    assert (target / "chunk").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_a_failed_rewrite_leaves_the_previous_folder_and_no_leftovers(tmp_path):
    target = tmp_path / "labels.zarr"
    with atomic_folder(target) as tmp:
        _write(tmp, "kept")
    with pytest.raises(OutputWriteError, match="disk is full"):
        with atomic_folder(target, overwrite=True) as tmp:
            _write(tmp, "half")
            raise OSError(28, "No space left on device")
    assert (target / "chunk").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_a_file_in_the_way_is_named_in_the_error(tmp_path):
    (tmp_path / "labels.zarr").write_text("not a folder")
    with pytest.raises(OutputWriteError, match="is a file"):
        with atomic_folder(tmp_path / "labels.zarr", overwrite=True):
            pass
