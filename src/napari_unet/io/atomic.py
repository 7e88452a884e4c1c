"""Atomic file output: write to a temporary file next to the target, then rename.

A crash, a full disk or a cancelled job must never leave a half-written result under the
final name, nor destroy the previous version of that file. ``os.replace`` within one folder
is atomic on POSIX and Windows, so readers see either the old file or the complete new one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Union

from ..errors import NapariUnetError, OutputWriteError

PathLike = Union[str, "os.PathLike[str]"]

_FIXES = {
    errno.EACCES: "the folder is read-only or you lack permission; choose another output folder "
    "or fix its permissions",
    errno.EPERM: "the folder is read-only or you lack permission; choose another output folder "
    "or fix its permissions",
    errno.EROFS: "the file system is read-only; choose an output folder on a writable disk",
    errno.ENOSPC: "the disk is full; free some space or choose an output folder on another disk",
    errno.EDQUOT: "your disk quota is used up; free some space or choose another output folder",
}
_DEFAULT_FIX = "check that the folder exists, is writable and has free space"


def _write_error(path: Path, exc: BaseException) -> OutputWriteError:
    """An OutputWriteError naming the folder, the cause and the fix."""
    fix = _FIXES.get(getattr(exc, "errno", None) or -1, _DEFAULT_FIX)
    return OutputWriteError(
        f"could not write {path.name!r} in folder {str(path.parent)!r}: {exc}; {fix}"
    )


def _check_target(path: Path, overwrite: bool, meanwhile: bool = False) -> None:
    what = f"{str(path)!r} " + ("appeared while this run worked (another run or program "
                                "wrote it) and " if meanwhile else "")
    if path.is_dir():
        raise OutputWriteError(f"{what}is a folder; give a file name inside it instead")
    if path.exists() and not overwrite:
        raise OutputWriteError(
            f"{what}exists; it was left as it is: pass overwrite=True (CLI: --overwrite) to "
            "replace it, or choose another name"
        )


def _set_mode(tmp: Path, target: Path, umask_mode: int) -> None:
    """Give ``tmp`` the mode of the file it replaces, else that of a new file (umask)."""
    try:
        st = os.lstat(target)
        # permission bits only: never carry a set-user-id bit over to new content
        mode = st.st_mode & 0o777 if stat.S_ISREG(st.st_mode) else umask_mode
    except OSError:
        mode = umask_mode
    with suppress(OSError):  # a file system without POSIX modes: keep what it gives
        os.chmod(tmp, mode)


@contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``path``.

    Missing parent folders are created. The temporary file is created empty with the
    permissions a normal ``open(path, "w")`` would give (the umask applies), and the result
    gets them back before the rename even when the writer recreated the file with other
    ones (safetensors writes 0600), so it is readable like any other output; a file it
    replaces keeps its own mode. On any failure the temporary file
    is deleted and the previous ``path`` (if any) is left untouched; ``OSError`` and other
    unexpected errors become :class:`OutputWriteError`, while the package's own errors
    (for example :class:`~napari_unet.errors.Cancelled`) pass through unchanged.
    """
    target = Path(path)
    _check_target(target, overwrite)
    # Hidden, unique, and ending in the target's own name, so that writers which pick the
    # format from the extension (imageio, tifffile's .ome.tif) still do the right thing.
    tmp = target.with_name(f".tmp-{secrets.token_hex(4)}-{target.name}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        umask_mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0666 & ~umask, read without umask()
    except OSError as exc:
        raise _write_error(target, exc) from exc
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _check_target(target, overwrite, meanwhile=True)  # another run may have written it
        _set_mode(tmp, target, umask_mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, NapariUnetError) or not isinstance(exc, Exception):
            raise  # our own errors, Ctrl+C and exit pass through unchanged
        raise _write_error(target, exc) from exc


def atomic_write(
    path: PathLike, write_fn: Callable[[Path], object], *, overwrite: bool = False
) -> Path:
    """Call ``write_fn(tmp_path)`` and atomically move the result to ``path``.

    ``write_fn`` must write the complete file to the path it is given (it may open it in
    any mode). Returns the final path. Errors are reported as in :func:`atomic_path`.
    """
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp:
        write_fn(tmp)
    return target


def _is_store(path: Path) -> bool:
    """Whether the folder ``path`` is a zarr store (v2 or v3), the only kind of folder an
    output may replace."""
    return any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zarray"))


def _check_folder_target(target: Path, overwrite: bool, meanwhile: bool = False) -> None:
    """Refuse to replace a file, an existing folder without ``overwrite``, or a folder that
    is not a zarr store (a user's folder that happens to have the output's name)."""
    if not os.path.lexists(target):
        return
    what = f"{str(target)!r} " + ("appeared while this run worked (another run or program "
                                  "wrote it) and " if meanwhile else "")
    if not target.is_dir():
        raise OutputWriteError(
            f"{what}is a file; give a folder name (e.g. ending in .zarr), or move the file away"
        )
    if not overwrite:
        raise OutputWriteError(
            f"{what}exists; it was left as it is: pass overwrite=True (CLI: --overwrite) to "
            "replace it, or choose another name"
        )
    if not _is_store(target):
        raise OutputWriteError(
            f"{what}is a folder but not a zarr store; overwrite replaces only an earlier zarr "
            "result, never another folder: move it away or choose another name"
        )


#: This machine, in the names of temporary folders: a process id means something only here
#: (a folder on a network disk may be written from several machines).
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (POSIX; a zombie counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by another user
        return True
    return True


def _remove_stale_folders(target: Path) -> None:
    """Remove temporary folders of ``target`` left by a write whose process is gone.

    Only names this module gives (``.tmp-<8 hex>-<pid>-<machine>-<target name>``), with this
    machine's tag and a process id that no longer runs, are removed: never another
    output's, another machine's, one of a running write, nor anything else. On Windows,
    where a process cannot be checked safely, nothing is removed.
    """
    if os.name != "posix":
        return
    pattern = re.compile(rf"\.tmp-[0-9a-f]{{8}}-(\d+)-{_HOST}-{re.escape(target.name)}")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _process_alive(int(match[1])):
            continue
        with suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


@contextmanager
def atomic_folder(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder output (a zarr store): yield a hidden
    temporary folder next to ``path``; on success it takes ``path``'s place (the previous
    folder is removed only once the new one is complete), on failure it is deleted.

    An existing ``path`` is replaced only with ``overwrite`` and only when it is a zarr
    store; both are checked before the work and again right before the rename, so a
    result another run wrote meanwhile is never lost without ``overwrite``.

    The temporary folder's name records the writing process (id and machine), so that a
    write killed half-way (``kill -9``, out of memory, power cut) leaves nothing for good:
    the next write to the same ``path`` removes those of its temporary folders whose
    process is gone (see :func:`_remove_stale_folders`).
    """
    target = Path(path)
    _check_folder_target(target, overwrite)
    _remove_stale_folders(target)
    tmp = target.with_name(f".tmp-{secrets.token_hex(4)}-{os.getpid()}-{_HOST}-{target.name}")
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    try:
        yield tmp
        _check_folder_target(target, overwrite, meanwhile=True)
        old = target.with_name(f".old-{secrets.token_hex(4)}-{target.name}")
        if os.path.lexists(target):
            os.replace(target, old)
        try:
            # rename, not replace: without overwrite, a folder that appears in this last
            # instant makes it fail (a non-empty folder is never replaced) instead of
            # being lost.
            os.rename(tmp, target)
        except OSError as exc:
            if os.path.lexists(old):
                os.replace(old, target)  # put the previous result back
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                _check_folder_target(target, overwrite, meanwhile=True)
            raise
        if old.is_symlink():
            old.unlink()  # a linked store: remove the link, not what it points to
        else:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, NapariUnetError) or not isinstance(exc, Exception):
            raise
        raise _write_error(target, exc) from exc
