"""The .npz files of a session folder: corrections packed into named arrays, and arrays
read back only after their .npy headers say they fit (no pickle, bounded memory)."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np

from ..corrections import Correction
from ..errors import SessionError
from ..io.memory import available_memory, byte_size
from .checks import Declared, refused

_T = TypeVar("_T")
#: Readers of the .npy header versions numpy writes for plain arrays.
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def pack(corrections: list[Correction], prefix: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Arrays (``<prefix>image_<i>``, ``labels_<i>``, ``mask_<i>``) and names, in order."""
    arrays: dict[str, np.ndarray] = {}
    for i, c in enumerate(corrections):
        arrays[f"{prefix}image_{i}"] = np.asarray(c.image)
        arrays[f"{prefix}labels_{i}"] = np.asarray(c.labels)
        arrays[f"{prefix}mask_{i}"] = np.asarray(c.mask, dtype=bool)
        if c.percentiles is not None:
            arrays[f"{prefix}percentiles_{i}"] = np.asarray(c.percentiles, dtype=np.float64)
    return arrays, [c.name for c in corrections]


def unpack(arrays: dict[str, Any], names: list, prefix: str) -> list[Correction]:
    """The corrections :func:`pack` stored (arrays read, or as declared; checked by
    :func:`~.checks.correction_problem`)."""
    out = []
    for i, name in enumerate(names):
        image, labels, mask = (arrays[f"{prefix}{key}_{i}"] for key in ("image", "labels", "mask"))
        out.append(Correction(name=str(name), image=image, labels=labels, mask=mask,
                              percentiles=arrays.get(f"{prefix}percentiles_{i}"), axes="CYX"))
    return out


def as_mask(array: np.ndarray) -> np.ndarray:
    """A checked mask (bool, or integers all 0 or 1) as bool."""
    return array if array.dtype == bool else array.astype(bool)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **arrays)


def _declared_arrays(zf: zipfile.ZipFile) -> dict[str, Declared]:
    """Every array of an open .npz as its .npy header declares it, read without the data
    that follows. A ValueError names a member whose header is not that of a plain array,
    or declares other than the bytes its zip entry says it holds (so reading it later
    decompresses no more than the header declares)."""
    out = {}
    for info in zf.infolist():
        key = info.filename.removesuffix(".npy")
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version not in _NPY_HEADERS:
                raise ValueError(f"array {key} is in .npy format {version}, which numpy "
                                 "writes for no plain array")
            shape, _, dtype = _NPY_HEADERS[version](fh)
            held = info.file_size - fh.tell()
        declared = out[key] = Declared(tuple(shape), dtype)
        if declared.nbytes != held:
            raise ValueError(f"array {key} declares {declared.nbytes} bytes (shape {shape}, "
                             f"type {dtype}), its zip entry holds {held}")
    return out


def _read_arrays(zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """Every array of an open .npz (checked by :func:`_declared_arrays` first)."""
    out = {}
    for info in zf.infolist():
        with zf.open(info) as fh:
            out[info.filename.removesuffix(".npy")] = np.lib.format.read_array(
                fh, allow_pickle=False)
    return out


def _unzip(path: Path, where: str, read: Callable[[zipfile.ZipFile], _T]) -> _T:
    """``read`` applied to the .npz at ``path`` (``where`` names it) opened as a zip file."""
    try:
        with zipfile.ZipFile(path) as zf:
            return read(zf)
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile,
            zlib.error) as exc:  # RuntimeError: encrypted or unknown compression
        raise SessionError(
            f"{where} is unreadable ({exc}); it may be truncated: restore the folder from a "
            "backup"
        ) from None


def read_npz(path: Path, where: str, build: Callable[[dict[str, Any]], _T],
             problem: Callable[[_T], Optional[str]]) -> _T:
    """What ``build`` makes of the arrays in the .npz at ``path``, refused (a
    :class:`SessionError` naming ``where``) when ``problem`` names one: first as the arrays'
    headers declare them, before any data is decompressed (so a small file that would
    expand to gigabytes is refused before it does; so are arrays larger than the memory
    available), then once they are read, with their values."""
    declared = _unzip(path, where, _declared_arrays)
    found = problem(build(declared))
    if found:
        raise refused(where, found)
    total, memory = sum(a.nbytes for a in declared.values()), available_memory()
    if memory is not None and total > memory:
        raise SessionError(
            f"{where} holds {byte_size(total)} of arrays, more than the {byte_size(memory)} of "
            "memory available; close other programs or open the session on a machine with more "
            "memory")
    result = build(_unzip(path, where, _read_arrays))
    found = problem(result)
    if found:
        raise refused(where, found)
    return result
