"""Tests for napari_unet.io.atomic: a folder output (a zarr store) appears whole or not at all,
a failed rewrite leaves the previous folder as it was, and a file gets the umask's mode."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from napari_unet.errors import Cancelled, OutputWriteError
from napari_unet.io import atomic_folder, atomic_write, read_image


def _write(folder, text: str) -> None:
    (folder / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
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


def test_a_folder_written_meanwhile_by_another_run_is_not_replaced(tmp_path):
    # Issue 10 item 4: two runs writing the same zarr both succeeded, the first result lost.
    target = tmp_path / "labels.zarr"
    with pytest.raises(OutputWriteError, match="while this run worked"):
        with atomic_folder(target) as tmp:
            _write(tmp, "ours")
            target.mkdir()  # another run finished first
            _write(target, "theirs")
    assert (target / "chunk").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_overwrite_never_deletes_a_folder_that_is_not_a_zarr_store(tmp_path):
    target = tmp_path / "labels.zarr"
    target.mkdir()
    (target / "thesis.docx").write_text("years of work")
    with pytest.raises(OutputWriteError, match="not a zarr store"):
        with atomic_folder(target, overwrite=True) as tmp:
            _write(tmp, "new")
    assert (target / "thesis.docx").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_overwrite_rechecks_a_folder_put_there_meanwhile(tmp_path):
    target = tmp_path / "labels.zarr"
    with pytest.raises(OutputWriteError, match="not a zarr store"):
        with atomic_folder(target, overwrite=True) as tmp:
            _write(tmp, "new")
            target.mkdir()
            (target / "notes.txt").write_text("keep me")
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_overwrite_of_a_linked_store_leaves_no_link_behind(tmp_path):
    real = tmp_path / "real.zarr"
    real.mkdir()
    _write(real, "old")
    target = tmp_path / "labels.zarr"
    target.symlink_to(real)
    with atomic_folder(target, overwrite=True) as tmp:
        _write(tmp, "new")
    assert not target.is_symlink() and (target / "chunk").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr", "real.zarr"]


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _private_writer(tmp) -> None:
    """Write like safetensors does: replace the file with one created mode 0600."""
    os.unlink(tmp)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027], ids=oct)
def test_a_new_file_gets_the_mode_the_umask_gives(tmp_path, umask, mask):
    # Issue 10 item 12: model files were always written 0600, whatever the umask.
    umask(mask)
    path = atomic_write(tmp_path / "model.safetensors", _private_writer)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "model.safetensors"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write(path, _private_writer, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_saved_model_is_readable_like_any_other_output(tmp_path, umask):
    from _data import small_model

    umask(0o022)
    path = small_model().save(tmp_path / "m.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from napari_unet.io import atomic_folder
with atomic_folder(Path(sys.argv[1])) as tmp:
    (tmp / "zarr.json").write_text("{}")
    os.kill(os.getpid(), signal.SIGKILL)  # killed half-way, as by the OOM killer or kill -9
"""


@pytest.mark.skipif(os.name != "posix", reason="process ids are checked on POSIX only")
def test_temporary_folders_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    # Issue 10 item 12: a killed zarr write left .tmp-*.zarr folders nothing cleaned up.
    target = tmp_path / "labels.zarr"
    seen = set()
    for _ in range(2):  # the second killed write already removes the first one's folder
        done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert done.returncode == -signal.SIGKILL
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
        assert len(leftovers) == 1 and leftovers[0].name not in seen and not target.exists()
        seen.add(leftovers[0].name)
    # What is not a dead write's temporary folder of this output is never touched:
    others = [
        tmp_path / leftovers[0].name.replace("labels.zarr", "other.zarr"),  # another output
        tmp_path / ".tmp-labels.zarr",  # a user's folder
        tmp_path / ".tmp-0123abcd-labels.zarr",  # no process id recorded
    ]
    for folder in others:
        folder.mkdir()
    with atomic_folder(target, overwrite=True) as tmp:
        live = tmp  # this (running) write's own temporary folder
        with atomic_folder(tmp_path / "labels.zarr", overwrite=True) as inner:
            _write(inner, "inner")  # a write meanwhile must not take the live one for stale
        assert live.is_dir()
        _write(tmp, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["labels.zarr"] + [p.name for p in others])


def test_atomic_write_keeps_the_extension_for_format_guessing(tmp_path):
    def write_png(tmp: Path) -> None:
        iio.imwrite(tmp, np.zeros((4, 4), np.uint8))  # imageio picks PNG from the name

    path = atomic_write(tmp_path / "overlay.png", write_png)
    assert read_image(path).axes == "YX"


def test_atomic_write_lets_cancellation_through(tmp_path):
    def cancelled(tmp: Path) -> None:
        tmp.write_text("half")
        raise Cancelled("cancelled by the user; nothing was changed")

    with pytest.raises(Cancelled):
        atomic_write(tmp_path / "x.csv", cancelled)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    atomic_write(tmp_path / "x.csv", lambda tmp: tmp.write_text("a,b\n"))
    assert (tmp_path / "x.csv").read_text() == "a,b\n"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.csv").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
