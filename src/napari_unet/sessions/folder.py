"""A session folder on disk: written atomically, read back only when it can be restored.

A session folder (``<name>.unet-session``) holds ``session.json`` and the files it names:

- one ``.safetensors`` model file per model version (the package's own format, no pickle);
- one ``.npz`` per tracked labels layer: its labels, the last segmentation (baseline), the
  edited and reviewed masks, and its supervised planes with their image (used when the
  image cannot be opened again, so its corrections still teach the model);
- one ``.npz`` with the corrections kept from earlier fine-tuning rounds.

Every file is written through :mod:`napari_unet.io.atomic`. Data files carry a token unique to
one save in their names and ``session.json`` is written last, so a save that fails midway
leaves the previous ``session.json`` and every file it names as they were; files the
previous ``session.json`` named and the new one does not are removed once it is in place
(nothing else in the folder is ever removed: a file named like a data file that no index
named is the user's). A model already saved in the folder is not written again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import weakref
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, Optional, TypeVar

from ..errors import ModelFileError, SessionError
from ..io import atomic_write
from ..model import SUFFIX, Model, load_model_file
from . import index as idx
from .arrays import as_mask, pack, read_npz, unpack, write_npz
from .checks import (
    check,
    check_labels,
    image_record_problem,
    refused,
    saved_labels_problem,
    stored_problem,
)
from .index import INDEX, SESSION_SUFFIX
from .records import SessionData

_T = TypeVar("_T")
#: Names of the data files a save writes (removed when the next save no longer names them).
_DATA_FILE = re.compile(r"^(model|labels|corrections)-[0-9a-f]+(-\d+)?\.(npz|safetensors)$")


def is_session(path: str | Path) -> bool:
    """Whether ``path`` is a session folder (it holds a ``session.json``)."""
    return (Path(path) / INDEX).is_file()


def check_save_target(path: str | Path) -> None:
    """Refuse to save a session over a file, or into a folder that holds other things
    (left-overs of an interrupted first save are not "other things")."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SessionError(f"{path} is a file, not a session folder; choose another name")
    if path.is_dir() and not is_session(path) and any(
            not (_DATA_FILE.match(p.name) or p.name.startswith(".tmp-"))
            for p in path.iterdir()):
        raise SessionError(
            f"{path} is a folder with other files in it, not a napari-unet session; choose a "
            f"new name (a '{SESSION_SUFFIX}' folder is created) or an empty folder"
        )


class SessionFolder:
    """A session's folder: writes and reads it, and remembers which model versions
    already have a file there (a version's weights never change, so it is written once)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path.parent if path.name == INDEX else path
        self._models: dict[int, tuple[weakref.ref, str]] = {}

    def _model_file(self, model: Model) -> Optional[str]:
        held = self._models.get(id(model))
        if held is None or held[0]() is not model or not (self.path / held[1]).is_file():
            return None
        return held[1]

    def _remember(self, model: Model, name: str) -> None:
        self._models[id(model)] = (weakref.ref(model), name)

    # ------------------------------------------------------------------ save
    def save(self, data: SessionData) -> Path:
        """Write ``data`` and return the path of ``session.json``.

        Raises :class:`SessionError` or :class:`~napari_unet.errors.OutputWriteError`; the
        previous session in the folder is then left as it was.
        """
        check_save_target(self.path)
        for record in data.labels:
            check_labels(record)
        previous = self._previous_files()
        token = secrets.token_hex(4)
        written: list[Path] = []
        try:
            index = self._write_data(data, token, written)
            text = json.dumps(index, indent=1, allow_nan=False)
            atomic_write(self.path / INDEX, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                         overwrite=True)
        except BaseException:
            for path in written:
                with suppress(OSError):
                    path.unlink()
            raise
        self._remove_unused(previous, index)
        return self.path / INDEX

    def _write_data(self, data: SessionData, token: str, written: list[Path]) -> dict:
        """Write the data files (names with ``token``); returns the index naming them."""

        def write(name: str, write_fn: Callable[[Path], object]) -> str:
            written.append(atomic_write(self.path / name, write_fn, overwrite=True))
            return name

        versions = []
        for i, version in enumerate(data.versions):
            name = self._model_file(version.model)
            if name is None:
                name = f"model-{token}-{i}{SUFFIX}"
                written.append(version.model.save(self.path / name, overwrite=True))
                self._remember(version.model, name)
            versions.append(idx.version_entry(version, name, self.path))
        labels = []
        for k, record in enumerate(data.labels):
            arrays, pending = pack(record.pending, "pending_")
            arrays.update(data=record.data, baseline=record.baseline, edited=record.edited,
                          reviewed=record.reviewed)
            name = write(f"labels-{token}-{k}.npz", partial(write_npz, arrays=arrays))
            labels.append(idx.labels_entry(record, name, pending))
        arrays, names = pack(data.corrections, "")
        corrections = write(f"corrections-{token}.npz", lambda tmp: write_npz(tmp, arrays))
        return idx.document(data, versions, labels, corrections, names, self.path)

    def _previous_files(self) -> set[str]:
        """The data files the folder's current ``session.json`` names (the only files a save
        may remove): plain names of this folder, named like a save's data files. Empty when
        there is no readable index."""
        try:
            names = idx.data_files(idx.read_json(self.path / INDEX))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return set()
        return {n for n in names
                if isinstance(n, str) and Path(n).name == n and _DATA_FILE.match(n)}

    def _remove_unused(self, previous: set[str], index: dict) -> None:
        """Delete the files of the previous save (``previous``) that ``index`` no longer
        names; files the previous session.json did not name are never touched."""
        for name in previous - set(idx.data_files(index)):
            with suppress(OSError):
                (self.path / name).unlink()

    # ------------------------------------------------------------------ load
    def load(self) -> SessionData:
        """Read the session; every problem raises a :class:`SessionError` naming it and
        the fix."""
        index = idx.read_index(self.path)
        try:
            return self._parse(index)
        except SessionError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise idx.damaged(self.path, f"{type(exc).__name__}: {exc}") from None

    def _file(self, name: str) -> Path:
        """A data file the index names: a plain name of a regular file inside the folder
        (a link is followed only when it stays inside the folder)."""
        if not name or Path(name).name != name:
            raise ValueError(f"{name!r} is not a file name in the session folder")
        path = self.path / name
        real = path.resolve()
        if real.parent != self.path.resolve():
            raise SessionError(
                f"{name} in session {self.path} is a link to {real}, outside the session "
                "folder; a session only reads its own files: copy that file into the folder "
                "in place of the link if you trust it"
            )
        try:
            mode = os.stat(real).st_mode
        except OSError:
            mode = None
        if mode is None or not stat.S_ISREG(mode):
            what = "missing" if mode is None else "not a regular file"
            raise SessionError(
                f"session {self.path} is incomplete: {name} is {what}; copy the whole "
                f"'{SESSION_SUFFIX}' folder, not only {INDEX}, or restore it from a backup"
            )
        return path

    def _read_npz(self, name: str, build: Callable[[dict[str, Any]], _T],
                  problem: Callable[[_T], Optional[str]]) -> _T:
        """:func:`~.arrays.read_npz` of the data file ``name``."""
        return read_npz(self._file(name), f"{name} in session {self.path}", build, problem)

    def _load_model(self, name: str) -> Model:
        try:
            model = load_model_file(self._file(name))
        except ModelFileError as exc:
            raise SessionError(f"a model of session {self.path} cannot be read: {exc}") from None
        self._remember(model, name)
        return model

    def _parse(self, index: dict) -> SessionData:
        images = []
        for d in index["images"]:
            images.append(idx.image_record(d, self.path))
            problem = image_record_problem(images[-1])
            if problem:
                raise refused(f"{INDEX} in session {self.path}", problem)
        models = index["models"]
        versions = [idx.model_version(d, i, self._load_model, self.path)
                    for i, d in enumerate(models["versions"])]
        active = idx.active_version(models, len(versions))
        corrections = index["corrections"]
        names = list(corrections["names"])
        stored = self._read_npz(str(corrections["file"]),
                                lambda arrays: unpack(arrays, names, ""), stored_problem)
        for c in stored:
            if c.mask is not None:
                c.mask = as_mask(c.mask)
        labels = []
        for d in index["labels"]:
            record = self._read_npz(
                str(d["file"]), partial(idx.labels_record, d, len(images), len(versions)),
                partial(saved_labels_problem, shape=idx.ints(d["shape"]), images=images,
                        stored=stored))
            record.edited, record.reviewed = as_mask(record.edited), as_mask(record.reviewed)
            for c in record.pending:
                c.mask = as_mask(c.mask)
            labels.append(record)
        data = SessionData(images, labels, stored, versions, active, self.path)
        check(data)  # what no single file shows (pending planes of two labels layers)
        return data
