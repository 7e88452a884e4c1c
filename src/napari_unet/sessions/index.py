"""``session.json``, the index of a session folder: what it names and how it is read.

A session.json is untrusted: it is read only within limits far above what a save writes
and far below what parsing could not bear (size, nesting), with no NaN, infinity or
integer beyond any count, and each value converted to the type its record declares (a
ValueError, KeyError or TypeError here means a damaged index; the folder turns it into a
:class:`~napari_unet.errors.SessionError`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .._version import __version__
from ..errors import SessionError
from ..model import Model
from .arrays import unpack
from .records import ImageRecord, LabelsRecord, ModelVersion, SegmentSettings, SessionData

FORMAT_NAME = "napari-unet-session"
FORMAT_VERSION = 1
SESSION_SUFFIX = ".unet-session"
INDEX = "session.json"
#: Limits of a session.json: far above what a save writes (a few kB per labels layer), far
#: below what parsing could not bear (memory; Python's recursion, for nesting).
MAX_INDEX_MIB = 16
MAX_INDEX_DEPTH = 64


# --------------------------------------------------------------------------- values


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: NaN and infinities become None, unknown objects strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _index(value: Any, size: int, what: str) -> int:
    """``value`` as an index below ``size``; a ValueError names ``what``."""
    index = _opt_index(value, size, what)
    if index is None:
        raise ValueError(f"{what} is missing")
    return index


def _opt_index(value: Any, size: int, what: str) -> Optional[int]:
    """``value`` as an index below ``size``, or None; a ValueError names ``what``."""
    if value is None:
        return None
    if not 0 <= int(value) < size:
        raise ValueError(f"{what} {value} does not exist")
    return int(value)


# --------------------------------------------------------------------------- writing


def portable_path(path: Optional[str | Path], folder: Path) -> Optional[str]:
    """``path`` as session.json holds it: relative to the session ``folder``, so the file
    names no absolute path of the machine that saved it (and still finds its files when
    the session and its images move together). URLs and relative paths stay as they are;
    an absolute path stays only where no relative one exists (another drive on Windows)."""
    if path is None:
        return None
    text = str(path)
    if "://" in text or not os.path.isabs(text):
        return text
    try:
        return os.path.relpath(text, folder.absolute())
    except ValueError:
        return text


def version_entry(version: ModelVersion, file: str, folder: Path) -> dict:
    """A model version as session.json in ``folder`` holds it (its weights are in
    ``file``)."""
    return {
        "label": version.label, "file": file, "parent": version.parent,
        "round": version.round, "saved_as": version.saved_as,
        "source": portable_path(version.source, folder),
        "stats": jsonable(version.stats),
    }


def labels_entry(record: LabelsRecord, file: str, pending: list[str]) -> dict:
    """A labels layer as session.json holds it (its arrays, and its ``pending``
    corrections by name, are in ``file``)."""
    return {
        "name": record.name, "image": record.image, "file": file,
        "shape": list(record.data.shape), "settings": record.settings.to_dict(),
        "version": record.version, "scale": record.scale,
        "translate": record.translate, "units": record.units,
        "metadata": jsonable(record.metadata), "pending": pending,
    }


def document(data: SessionData, versions: list[dict], labels: list[dict],
             corrections: str, names: list[str], folder: Path) -> dict:
    """The whole session.json of ``data`` in ``folder``, given the entries of its versions
    and labels and the file (and names) of its stored corrections."""
    images = [dataclasses.replace(image, path=portable_path(image.path, folder))
              for image in data.images]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "napari_unet": __version__,
        "images": [jsonable(dataclasses.asdict(image)) for image in images],
        "labels": labels,
        "corrections": {"file": corrections, "names": names},
        "models": {"active": data.active, "versions": versions},
    }


def data_files(index: dict) -> list:
    """The data file names a session index holds (models, labels, corrections)."""
    names = [v["file"] for v in index["models"]["versions"]]
    names.extend(record["file"] for record in index["labels"])
    names.append(index["corrections"]["file"])
    return names


# --------------------------------------------------------------------------- reading


def _refuse_constant(name: str) -> float:
    raise ValueError(f"holds {name}, which JSON does not allow (napari-unet writes null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"holds the number {text}, beyond the range of a float")
    return value


def _int64(text: str) -> int:
    if len(text.lstrip("-")) > 19:  # before int(), which refuses only past 4300 digits
        raise ValueError(f"holds the integer {text[:24]}..., beyond any count or size")
    return int(text)


def _nesting(text: str) -> int:
    """How deeply the arrays and objects of the JSON ``text`` nest (brackets inside strings
    do not count), measured without parsing it."""
    outside = re.sub(r'"[^"\\]*(?:\\.[^"\\]*)*"', '""', text).encode("utf-8")
    codes = np.frombuffer(outside, np.uint8)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(codes, (ord("]"), ord("}"))))
    return int(np.cumsum(steps).max(initial=0))


def read_json(path: Path) -> Any:
    """The JSON of the session.json at ``path``. A ValueError says why it is not one a save
    writes: larger than :data:`MAX_INDEX_MIB`, nesting deeper than :data:`MAX_INDEX_DEPTH`
    (checked before parsing, where Python would run out of recursion), NaN, Infinity, a
    number beyond float range or an integer of over 19 digits (which ``json.loads`` would
    accept), or not valid JSON."""
    with open(path, "rb") as fh:
        data = fh.read((MAX_INDEX_MIB << 20) + 1)
    if len(data) > MAX_INDEX_MIB << 20:
        raise ValueError(f"is larger than {MAX_INDEX_MIB} MiB, far more than a session.json "
                         "napari-unet writes")
    text = data.decode("utf-8")
    if _nesting(text) > MAX_INDEX_DEPTH:
        raise ValueError(f"nests arrays and objects more than {MAX_INDEX_DEPTH} deep")
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                      parse_int=_int64)


def damaged(folder: Path, detail: str) -> SessionError:
    return SessionError(
        f"session {folder} is damaged ({detail}); it cannot be opened: restore the "
        f"folder from a backup, or open the image and segment it again"
    )


def read_index(folder: Path) -> dict:
    """The session.json of ``folder``, refused (:class:`SessionError`, naming the fix) when
    missing, unreadable, beyond :func:`read_json`'s limits, not a session's, or written by
    a newer napari-unet."""
    path = folder / INDEX
    if not path.is_file():
        raise SessionError(
            f"{folder} is not a napari-unet session: it has no {INDEX}; choose the "
            f"folder 'Save session...' made (a '{SESSION_SUFFIX}' folder)"
        )
    try:
        index = read_json(path)
    except OSError as exc:
        raise SessionError(f"cannot read {path} ({exc}); check that the folder is "
                           "readable") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(folder, f"{INDEX} is not valid JSON: {exc}") from None
    except ValueError as exc:  # beyond what a save writes
        raise damaged(folder, f"{INDEX} {exc}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        raise SessionError(
            f"{path} is not a napari-unet session file (no '{FORMAT_NAME}' format); "
            "choose a folder that 'Save session...' made"
        )
    version = index.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise damaged(folder, f"unreadable format version {version!r}")
    if version > FORMAT_VERSION:
        raise SessionError(
            f"{folder} was saved by a newer napari-unet "
            f"({index.get('napari_unet', '?')}, session format {version}; this "
            f"napari-unet {__version__} reads format {FORMAT_VERSION}); upgrade "
            "napari-unet (pip install -U napari-unet) to open it"
        )
    return index


def local_path(text: str, folder: Path) -> str:
    """A path of session.json in ``folder`` as this machine finds it: a relative one (as
    :func:`portable_path` writes them) joined to ``folder``; URLs and absolute paths as
    they are."""
    if "://" in text or os.path.isabs(text):
        return text
    return os.path.normpath(folder.absolute() / text)


def image_record(d: dict, folder: Path) -> ImageRecord:
    """An image of the session.json in ``folder`` as its record (values converted, not yet
    checked; a relative path joined to ``folder``)."""
    sample = d.get("sample")
    path = opt_str(d.get("path"))
    return ImageRecord(
        name=str(d["name"]), axes=str(d["axes"]), rgb=bool(d["rgb"]),
        shape=ints(d["shape"]), scale=floats(d["scale"]),
        translate=floats(d["translate"]),
        path=None if path is None else local_path(path, folder),
        reader=opt_str(d.get("reader")),
        sample=None if sample is None else (str(sample[0]), str(sample[1])),
    )


def model_version(d: dict, position: int, load: Callable[[str], Model],
                  folder: Path) -> ModelVersion:
    """The model version at ``position`` of the session.json in ``folder``, its model read
    by ``load`` from the file it names (a parent must come before it); a relative source
    is relative to ``folder``."""
    source = d.get("source")
    return ModelVersion(
        label=str(d["label"]), model=load(str(d["file"])),
        parent=_opt_index(d.get("parent"), position, "parent model version"),
        source=None if source is None else Path(local_path(str(source), folder)),
        round=int(d.get("round", 0)), saved_as=opt_str(d.get("saved_as")),
        stats=dict(d.get("stats") or {}),
    )


def active_version(models: dict, n_versions: int) -> Optional[int]:
    return _opt_index(models.get("active"), n_versions, "active model version")


def labels_record(d: dict, n_images: int, n_versions: int, arrays: dict[str, Any]
                  ) -> LabelsRecord:
    """The labels layer ``d`` of a session.json with the ``arrays`` of its file (read, or
    as declared)."""
    return LabelsRecord(
        name=str(d["name"]), image=_index(d["image"], n_images, "image"),
        data=arrays["data"], baseline=arrays["baseline"], edited=arrays["edited"],
        reviewed=arrays["reviewed"], settings=SegmentSettings.from_dict(dict(d.get("settings") or {})),
        scale=floats(d["scale"]), translate=floats(d["translate"]),
        version=_opt_index(d.get("version"), n_versions, "model version"),
        units=None if d.get("units") is None else [str(u) for u in d["units"]],
        metadata=dict(d.get("metadata") or {}),
        pending=unpack(arrays, list(d.get("pending") or []), "pending_"),
    )
