"""Save an interactive session to a folder and open it again (no Qt, no napari import).

A session folder (``<name>.unet-session``) holds ``session.json`` and the files it names:

- one ``.safetensors`` model file per model version (the package's own format, no pickle);
- one ``.npz`` per tracked labels layer: its labels, the last segmentation (baseline), the
  edited and reviewed masks, and its supervised planes with their image (used when the
  image cannot be opened again, so its corrections still teach the model);
- one ``.npz`` with the corrections kept from earlier fine-tuning rounds.

Every file is written through :mod:`napari_unet.atomic`. Data files carry a token unique to
one save in their names and ``session.json`` is written last, so a save that fails midway
leaves the previous ``session.json`` and every file it names as they were; files the
previous ``session.json`` named and the new one does not are removed once it is in place
(nothing else in the folder is ever removed: a file named like a data file that no index
named is the user's). A model already saved in the folder is not written again.

:func:`capture` copies what a :class:`~._session.Session` holds (GUI thread), a
:class:`SessionFolder` writes and reads it (worker thread), and :func:`restore` puts it
back into a viewer (GUI thread). napari layers are plain Python objects here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets
import stat
import weakref
import zipfile
import zlib
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, get_args, get_type_hints

import numpy as np

from .._version import __version__
from .._reader import META_KEY, SUFFIXES
from ..io import atomic_write, is_zarr
from ..axes import Layout, validate_axes
from ..errors import ModelFileError, NapariUnetError, SessionError
from ..model import SUFFIX, Model, load_model_file
from ._image import layer_image
from ._jobs import SegmentSettings
from ._session import LabelsLink, Session
from ._state import Correction, CorrectionStore, EditTracker, ModelVersion

#: The only reader a session opens images with (never the plugin its file names).
PLUGIN = "napari-unet"
FORMAT_NAME = "napari-unet-session"
FORMAT_VERSION = 1
SESSION_SUFFIX = ".unet-session"
INDEX = "session.json"
#: Names of the data files a save writes (removed when the next save no longer names them).
_DATA_FILE = re.compile(r"^(model|labels|corrections)-[0-9a-f]+(-\d+)?\.(npz|safetensors)$")
#: Limits of a session.json: far above what a save writes (a few kB per labels layer), far
#: below what parsing could not bear (memory; Python's recursion, for nesting).
MAX_INDEX_MIB = 16
MAX_INDEX_DEPTH = 64
_T = TypeVar("_T")
#: Readers of the .npy header versions numpy writes for plain arrays.
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


@dataclass
class ImageRecord:
    """An image layer by reference: where it came from and where it was placed."""

    name: str
    axes: str
    rgb: bool
    shape: tuple[int, ...]
    scale: list[float]
    translate: list[float]
    path: Optional[str] = None  # the file it was read from (absolute when saved)
    reader: Optional[str] = None  # the reader plugin that read it (kept for information
    # only: an image is opened again with napari-unet's reader, whatever this says)
    sample: Optional[tuple[str, str]] = None  # (plugin, sample) of a napari sample


@dataclass
class LabelsRecord:
    """A tracked labels layer: its data, its edit tracker's arrays and what made it."""

    name: str
    image: int  # index into SessionData.images
    data: np.ndarray
    baseline: np.ndarray
    edited: np.ndarray
    reviewed: np.ndarray
    settings: SegmentSettings
    scale: list[float]
    translate: list[float]
    version: Optional[int] = None
    units: Optional[list[str]] = None
    metadata: dict = field(default_factory=dict)
    pending: list[Correction] = field(default_factory=list)  # supervised planes + image


@dataclass
class SessionData:
    """Everything a session folder holds, in memory."""

    images: list[ImageRecord]
    labels: list[LabelsRecord]
    corrections: list[Correction]
    versions: list[ModelVersion]
    active: Optional[int]
    folder: Optional[Path] = None  # the session folder it was read from


# --------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON: NaN and infinities become None, unknown objects strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


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


def _read_index_json(path: Path) -> Any:
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


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _opt_index(value: Any, size: int, what: str) -> Optional[int]:
    """``value`` as an index below ``size``, or None; a ValueError names ``what``."""
    if value is None:
        return None
    if not 0 <= int(value) < size:
        raise ValueError(f"{what} {value} does not exist")
    return int(value)


def _setting_fits(value: Any, kinds: tuple[type, ...]) -> bool:
    """Whether the JSON ``value`` is one of ``kinds`` (an int fits a float, and only a
    bool fits a bool)."""
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, tuple(k for k in kinds if k is not bool))


def _settings(values: dict) -> SegmentSettings:
    """Segment settings from JSON, each of the type its field declares (a string where a
    number goes would fail only later, in a segmentation); keys this version does not know
    are ignored."""
    hints = get_type_hints(SegmentSettings)
    known = {k: v for k, v in values.items() if k in hints}
    for key, value in known.items():
        kinds = get_args(hints[key]) or (hints[key],)  # Optional[int]: (int, NoneType)
        if not _setting_fits(value, kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise ValueError(f"the segment setting {key} is {value!r}, not {names}")
    settings = SegmentSettings(**known)
    size = settings.object_size
    if size is not None and not 0 < size < float("inf"):
        raise ValueError(f"the object size {size!r} is not a positive number of pixels")
    return settings


def _pack(corrections: list[Correction], prefix: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Arrays (``<prefix>image_<i>``, ``labels_<i>``, ``mask_<i>``) and names, in order."""
    arrays: dict[str, np.ndarray] = {}
    for i, c in enumerate(corrections):
        arrays[f"{prefix}image_{i}"] = np.asarray(c.image)
        arrays[f"{prefix}labels_{i}"] = np.asarray(c.labels)
        arrays[f"{prefix}mask_{i}"] = np.asarray(c.mask, dtype=bool)
        if c.percentiles is not None:
            arrays[f"{prefix}percentiles_{i}"] = np.asarray(c.percentiles, dtype=np.float64)
    return arrays, [c.name for c in corrections]


def _unpack(arrays: dict[str, np.ndarray], names: list, prefix: str) -> list[Correction]:
    """The corrections :func:`_pack` stored (checked by :func:`_correction_problem`)."""
    out = []
    for i, name in enumerate(names):
        image, labels, mask = (arrays[f"{prefix}{key}_{i}"] for key in ("image", "labels", "mask"))
        out.append(Correction(name=str(name), image=image, labels=labels, mask=mask,
                              percentiles=arrays.get(f"{prefix}percentiles_{i}"), axes="CYX"))
    return out


# --------------------------------------------------------------------------- checks
# A session file is untrusted: every array is checked twice when it is read, first as its
# .npy header declares it (before any data is decompressed, so a small file cannot expand
# to gigabytes), then with its values (and again by restore), so a session that cannot
# be restored is refused before the open one changes.


@dataclass(frozen=True)
class _Declared:
    """An array as its .npy header declares it, not yet read: the checks below take it in
    place of an array and check its shape and type (values wait until it is read)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _shape_problem(array: Any, what: str) -> Optional[str]:
    """Why ``array`` is not an array of at least one dimension (None when it is one)."""
    if not isinstance(array, (np.ndarray, _Declared)):
        return f"{what} is a {type(array).__name__}, not an array"
    if array.ndim == 0:
        return f"{what} has 0 dimensions (a single value, not an array)"
    return None


def _labels_problem(array: Any, what: str, shape: Optional[tuple[int, ...]] = None
                    ) -> Optional[str]:
    """Why ``array`` is not a labels array (non-negative integers, of ``shape``)."""
    problem = _shape_problem(array, what)
    if problem:
        return problem
    if array.dtype.kind not in "iu":
        return f"{what} are of type {array.dtype}, not integer labels"
    if shape is not None and array.shape != shape:
        return f"{what} have shape {array.shape}, not {shape}"
    if (isinstance(array, np.ndarray) and array.dtype.kind == "i" and array.size
            and int(array.min()) < 0):
        return f"{what} hold negative values (labels are 0 for background, else positive)"
    return None


def _mask_problem(array: Any, what: str, shape: tuple[int, ...]) -> Optional[str]:
    """Why ``array`` is not a mask of ``shape``: bool, or integers that are all 0 or 1."""
    problem = _shape_problem(array, what)
    if problem:
        return problem
    if array.shape != shape:
        return f"{what} has shape {array.shape}, not {shape}"
    if array.dtype == bool:
        return None
    if array.dtype.kind not in "iu" or (isinstance(array, np.ndarray) and array.size
                                        and (array.min() < 0 or array.max() > 1)):
        return f"{what} is of type {array.dtype}, not a mask of True/False (or 0/1) values"
    return None


def _mask(array: np.ndarray) -> np.ndarray:
    return array if array.dtype == bool else array.astype(bool)


def _finite_problem(values: Any, what: str, positive: bool = False) -> Optional[str]:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive)
               for v in values):
        kind = "positive finite numbers" if positive else "finite numbers"
        return f"{what} {list(values)} are not all {kind}"
    return None


def _correction_problem(c: Correction, what: str,
                        image_shape: Optional[tuple[int, ...]] = None) -> Optional[str]:
    """Why correction ``c`` cannot be kept: a (C, Y, X) numeric image (of ``image_shape``
    when given: a plane of the layer's image), (Y, X) labels and mask, and finite (C, 2)
    percentiles or none; ``what`` names it in the answer."""
    problem = _shape_problem(c.image, f"the image of {what}")
    if problem:
        return problem
    if c.image.ndim != 3 or 0 in c.image.shape or c.image.dtype.kind not in "biuf":
        return (f"the image of {what} has shape {c.image.shape} and type {c.image.dtype}, "
                "not a (channels, Y, X) array of numbers")
    if image_shape is not None and c.image.shape != image_shape:
        return (f"the image of {what} has shape {c.image.shape}, not the (channels, Y, X) "
                f"shape {image_shape} of a plane of the layer's image")
    want = c.image.shape[1:]
    problem = (_labels_problem(c.labels, f"the labels of {what}", want)
               or _mask_problem(c.mask, f"the mask of {what}", want))
    if problem:
        return problem
    pct = c.percentiles
    if pct is not None:
        problem = _shape_problem(pct, f"the percentiles of {what}")
        if problem:
            return problem
        if pct.shape != (c.image.shape[0], 2) or pct.dtype.kind not in "iuf":
            return (f"the percentiles of {what} have shape {pct.shape} and type {pct.dtype}, "
                    f"not ({c.image.shape[0]}, 2) numbers")
        if isinstance(pct, np.ndarray) and not np.isfinite(pct).all():
            return f"the percentiles of {what} are not all finite"
    return None


def _image_record_problem(record: ImageRecord) -> Optional[str]:
    shape = record.shape
    if len(shape) < 2 or any(s <= 0 for s in shape):
        return f"image {record.name!r} has shape {shape}"
    try:
        validate_axes(record.axes, len(shape))
    except NapariUnetError as exc:
        return f"image {record.name!r}: {exc}"
    if len(record.scale) != len(record.translate):
        return f"image {record.name!r} has {len(record.scale)} scales and " \
               f"{len(record.translate)} translations"
    return (_finite_problem(record.scale, f"the scale of image {record.name!r}", True)
            or _finite_problem(record.translate, f"the translation of image {record.name!r}"))


def _labels_record_problem(record: LabelsRecord, image: ImageRecord) -> Optional[str]:
    """Why ``record`` cannot be restored (its arrays, its place, its corrections)."""
    name = f"labels {record.name!r}"
    layout = Layout(validate_axes(image.axes, len(image.shape)), image.shape)
    shape = layout.label_shape
    problem = (_labels_problem(record.data, f"the {name}", shape)
               or _labels_problem(record.baseline, f"the last segmentation of {name}", shape)
               or _mask_problem(record.edited, f"the edited mask of {name}", shape)
               or _mask_problem(record.reviewed, f"the reviewed mask of {name}", shape))
    if problem:
        return problem + f" (its image {image.name!r} has labels of shape {shape})"
    ndim = len(shape)
    if len(record.scale) != ndim or len(record.translate) != ndim:
        return f"{name} have {len(record.scale)} scales and {len(record.translate)} " \
               f"translations for {ndim} dimensions"
    if record.units is not None and len(record.units) != ndim:
        return f"{name} have {len(record.units)} units for {ndim} dimensions"
    problem = (_finite_problem(record.scale, f"the scale of {name}", True)
               or _finite_problem(record.translate, f"the translation of {name}"))
    if problem:
        return problem
    plane = (layout.n_channels, *shape[-2:])
    for c in record.pending:
        problem = _correction_problem(c, f"correction {c.name!r} of {name}", plane)
        if problem:
            return problem
    return None


def _clash_problem(corrections: list[Correction]) -> Optional[str]:
    """Why these corrections cannot share one store: one plane (name) of two shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for c in corrections:
        if shapes.setdefault(c.name, c.labels.shape) != c.labels.shape:
            return (f"the corrections of plane {c.name!r} have shapes {shapes[c.name]} and "
                    f"{c.labels.shape}; one plane has one shape")
    return None


def _refused(where: str, problem: str) -> SessionError:
    return SessionError(
        f"{where} cannot be restored: {problem}. It was not written like this by napari-unet "
        "(changed or damaged since): restore the session folder from a backup, or open the "
        "image and segment it again. The open session is unchanged"
    )


def check(data: SessionData) -> None:
    """Refuse (:class:`SessionError`) data that :func:`restore` could not put back whole."""
    where = f"session {data.folder}" if data.folder else "the session"
    problems = [_image_record_problem(image) for image in data.images]
    for record in data.labels:
        if not 0 <= record.image < len(data.images):
            problems.append(f"labels {record.name!r} name image {record.image}, which does "
                            "not exist")
        elif not _image_record_problem(data.images[record.image]):
            problems.append(_labels_record_problem(record, data.images[record.image]))
    problems.extend(_correction_problem(c, f"stored correction {c.name!r}") for c in data.corrections)
    problems.append(_clash_problem(
        [*data.corrections, *(c for record in data.labels for c in record.pending)]))
    problem = next((p for p in problems if p), None)
    if problem:
        raise _refused(where, problem)


def _check_labels(record: LabelsRecord) -> None:
    """Refuse labels whose arrays do not describe one layer (so no save is unreadable)."""
    arrays = (record.data, record.baseline, record.edited, record.reviewed)
    if (any(a.shape != record.data.shape for a in arrays) or record.edited.dtype != bool
            or record.reviewed.dtype != bool):
        raise ValueError(f"the arrays of labels {record.name!r} do not fit together")


def _index_files(index: dict) -> list:
    """The data file names a session index holds (models, labels, corrections)."""
    names = [v["file"] for v in index["models"]["versions"]]
    names.extend(record["file"] for record in index["labels"])
    names.append(index["corrections"]["file"])
    return names


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **arrays)


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


def _declared_arrays(zf: zipfile.ZipFile) -> dict[str, _Declared]:
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
        declared = out[key] = _Declared(tuple(shape), dtype)
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


def _memory_bytes() -> Optional[int]:
    """This machine's physical memory; None where the system does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _labels_record(d: dict, n_images: int, n_versions: int, arrays: dict[str, Any]
                   ) -> LabelsRecord:
    """The labels layer ``d`` of a session.json with the ``arrays`` of its file (read, or
    as declared)."""
    return LabelsRecord(
        name=str(d["name"]), image=int(_opt_index(d["image"], n_images, "image")),
        data=arrays["data"], baseline=arrays["baseline"], edited=arrays["edited"],
        reviewed=arrays["reviewed"], settings=_settings(dict(d.get("settings") or {})),
        scale=_floats(d["scale"]), translate=_floats(d["translate"]),
        version=_opt_index(d.get("version"), n_versions, "model version"),
        units=None if d.get("units") is None else [str(u) for u in d["units"]],
        metadata=dict(d.get("metadata") or {}),
        pending=_unpack(arrays, list(d.get("pending") or []), "pending_"),
    )


def _saved_labels_problem(record: LabelsRecord, shape: tuple[int, ...],
                          images: list[ImageRecord], stored: list[Correction]) -> Optional[str]:
    """Why ``record`` cannot be restored: not of the ``shape`` session.json gives it, not
    fitting its image, or planes clashing with the ``stored`` corrections."""
    if record.data.shape != shape:
        return f"labels {record.name!r} have shape {record.data.shape}, not the saved shape {shape}"
    return (_labels_record_problem(record, images[record.image])
            or _clash_problem([*stored, *record.pending]))


def _stored_problem(stored: list[Correction]) -> Optional[str]:
    """Why the corrections kept from earlier rounds cannot be restored."""
    problems = (_correction_problem(c, f"stored correction {c.name!r}") for c in stored)
    return next((p for p in problems if p), None) or _clash_problem(stored)


# --------------------------------------------------------------------------- folder


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
            _check_labels(record)
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
            versions.append({
                "label": version.label, "file": name, "parent": version.parent,
                "round": version.round, "saved_as": version.saved_as,
                "source": None if version.source is None else str(version.source),
                "stats": _jsonable(version.stats),
            })
        labels = []
        for k, record in enumerate(data.labels):
            arrays, pending = _pack(record.pending, "pending_")
            arrays.update(data=record.data, baseline=record.baseline, edited=record.edited,
                          reviewed=record.reviewed)
            name = write(f"labels-{token}-{k}.npz", lambda tmp, a=arrays: _write_npz(tmp, a))
            labels.append({
                "name": record.name, "image": record.image, "file": name,
                "shape": list(record.data.shape), "settings": record.settings.to_dict(),
                "version": record.version, "scale": record.scale,
                "translate": record.translate, "units": record.units,
                "metadata": _jsonable(record.metadata), "pending": pending,
            })
        arrays, names = _pack(data.corrections, "")
        corrections = write(f"corrections-{token}.npz", lambda tmp: _write_npz(tmp, arrays))
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "napari_unet": __version__,
            "images": [_jsonable(dataclasses.asdict(image)) for image in data.images],
            "labels": labels,
            "corrections": {"file": corrections, "names": names},
            "models": {"active": data.active, "versions": versions},
        }

    def _previous_files(self) -> set[str]:
        """The data files the folder's current ``session.json`` names (the only files a save
        may remove): plain names of this folder, named like a save's data files. Empty when
        there is no readable index."""
        try:
            names = _index_files(_read_index_json(self.path / INDEX))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return set()
        return {n for n in names
                if isinstance(n, str) and Path(n).name == n and _DATA_FILE.match(n)}

    def _remove_unused(self, previous: set[str], index: dict) -> None:
        """Delete the files of the previous save (``previous``) that ``index`` no longer
        names; files the previous session.json did not name are never touched."""
        for name in previous - set(_index_files(index)):
            with suppress(OSError):
                (self.path / name).unlink()

    # ------------------------------------------------------------------ load
    def load(self) -> SessionData:
        """Read the session; every problem raises a :class:`SessionError` naming it and
        the fix."""
        index = self._read_index()
        try:
            return self._parse(index)
        except SessionError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise self._damaged(f"{type(exc).__name__}: {exc}") from None

    def _damaged(self, detail: str) -> SessionError:
        return SessionError(
            f"session {self.path} is damaged ({detail}); it cannot be opened: restore the "
            f"folder from a backup, or open the image and segment it again"
        )

    def _read_index(self) -> dict:
        path = self.path / INDEX
        if not path.is_file():
            raise SessionError(
                f"{self.path} is not a napari-unet session: it has no {INDEX}; choose the "
                f"folder 'Save session...' made (a '{SESSION_SUFFIX}' folder)"
            )
        try:
            index = _read_index_json(path)
        except OSError as exc:
            raise SessionError(f"cannot read {path} ({exc}); check that the folder is "
                               "readable") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._damaged(f"{INDEX} is not valid JSON: {exc}") from None
        except ValueError as exc:  # beyond what a save writes
            raise self._damaged(f"{INDEX} {exc}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
            raise SessionError(
                f"{path} is not a napari-unet session file (no '{FORMAT_NAME}' format); "
                "choose a folder that 'Save session...' made"
            )
        version = index.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise self._damaged(f"unreadable format version {version!r}")
        if version > FORMAT_VERSION:
            raise SessionError(
                f"{self.path} was saved by a newer napari-unet "
                f"({index.get('napari_unet', '?')}, session format {version}; this "
                f"napari-unet {__version__} reads format {FORMAT_VERSION}); upgrade "
                "napari-unet (pip install -U napari-unet) to open it"
            )
        return index

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
        """What ``build`` makes of the arrays in the .npz ``name``, refused when ``problem``
        names one: first as the arrays' headers declare them, before any data is
        decompressed (so a small file that would expand to gigabytes is refused before it
        does; so are arrays larger than this machine's memory), then once they are read,
        with their values."""
        path = self._file(name)
        declared = self._unzip(name, path, _declared_arrays)
        found = problem(build(declared))
        if found:
            raise self._refused(name, found)
        total, memory = sum(a.nbytes for a in declared.values()), _memory_bytes()
        if memory is not None and total > memory:
            raise SessionError(
                f"{name} in session {self.path} holds {total / 2**30:.1f} GiB of arrays, more "
                f"than this machine's memory ({memory / 2**30:.1f} GiB); open the session on "
                "a machine with more memory")
        result = build(self._unzip(name, path, _read_arrays))
        found = problem(result)
        if found:
            raise self._refused(name, found)
        return result

    def _unzip(self, name: str, path: Path, read: Callable[[zipfile.ZipFile], _T]) -> _T:
        """``read`` applied to the .npz ``name`` (at ``path``) opened as a zip file."""
        try:
            with zipfile.ZipFile(path) as zf:
                return read(zf)
        except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile,
                zlib.error) as exc:  # RuntimeError: encrypted or unknown compression
            raise SessionError(
                f"{name} in session {self.path} is unreadable ({exc}); it may be truncated: "
                "restore the folder from a backup"
            ) from None

    def _load_model(self, name: str) -> Model:
        try:
            model = load_model_file(self._file(name))
        except ModelFileError as exc:
            raise SessionError(f"a model of session {self.path} cannot be read: {exc}") from None
        self._remember(model, name)
        return model

    def _refused(self, name: str, problem: str) -> SessionError:
        return _refused(f"{name} in session {self.path}", problem)

    def _parse(self, index: dict) -> SessionData:
        images = []
        for d in index["images"]:
            sample = d.get("sample")
            images.append(ImageRecord(
                name=str(d["name"]), axes=str(d["axes"]), rgb=bool(d["rgb"]),
                shape=_ints(d["shape"]), scale=_floats(d["scale"]),
                translate=_floats(d["translate"]), path=_opt_str(d.get("path")),
                reader=_opt_str(d.get("reader")),
                sample=None if sample is None else (str(sample[0]), str(sample[1])),
            ))
            problem = _image_record_problem(images[-1])
            if problem:
                raise self._refused(INDEX, problem)
        models = index["models"]
        versions = []
        for i, d in enumerate(models["versions"]):
            versions.append(ModelVersion(
                label=str(d["label"]), model=self._load_model(str(d["file"])),
                parent=_opt_index(d.get("parent"), i, "parent model version"),
                source=None if d.get("source") is None else Path(d["source"]),
                round=int(d.get("round", 0)), saved_as=_opt_str(d.get("saved_as")),
                stats=dict(d.get("stats") or {}),
            ))
        active = _opt_index(models.get("active"), len(versions), "active model version")
        corrections = index["corrections"]
        names = list(corrections["names"])
        stored = self._read_npz(str(corrections["file"]),
                                lambda arrays: _unpack(arrays, names, ""), _stored_problem)
        for c in stored:
            c.mask = _mask(c.mask)
        labels = []
        for d in index["labels"]:
            record = self._read_npz(
                str(d["file"]), partial(_labels_record, d, len(images), len(versions)),
                partial(_saved_labels_problem, shape=_ints(d["shape"]), images=images,
                        stored=stored))
            record.edited, record.reviewed = _mask(record.edited), _mask(record.reviewed)
            for c in record.pending:
                c.mask = _mask(c.mask)
            labels.append(record)
        data = SessionData(images, labels, stored, versions, active, self.path)
        check(data)  # what no single file shows (pending planes of two labels layers)
        return data


# --------------------------------------------------------------------------- session <-> data


def _image_record(layer: Any, axes: str) -> ImageRecord:
    source = getattr(layer, "source", None)
    sample = getattr(source, "sample", None)
    path = _opt_str(getattr(source, "path", None))
    if path is not None and "://" not in path:
        path = str(Path(path).absolute())  # a session opens relative paths from its folder
    return ImageRecord(
        name=layer.name, axes=axes, rgb=bool(getattr(layer, "rgb", False)),
        shape=_ints(layer.data.shape), scale=_floats(layer.scale),
        translate=_floats(layer.translate), path=path,
        reader=_opt_str(getattr(source, "reader_plugin", None)),
        sample=None if sample is None else (str(sample[0]), str(sample[1])),
    )


def capture(session: Session) -> SessionData:
    """A copy of what ``session`` holds now, which a worker thread can then write.

    Call it on the GUI thread: it reads the layers, the edit masks and the image planes of
    supervised pixels. Models are shared, not copied: a version's weights never change.
    """
    images: list[ImageRecord] = []
    seen: dict[int, int] = {}
    labels = []
    for link in session.links:
        if id(link.image_layer) not in seen:
            seen[id(link.image_layer)] = len(images)
            images.append(_image_record(link.image_layer, link.image.axes))
        tracker = link.current_tracker()
        layer = link.labels_layer
        meta = (layer.metadata or {}).get(META_KEY)
        units = getattr(layer, "units", None)
        labels.append(LabelsRecord(
            name=layer.name, image=seen[id(link.image_layer)],
            data=np.array(layer.data, copy=True), baseline=tracker.baseline.copy(),
            edited=tracker.edited.copy(), reviewed=tracker.reviewed.copy(),
            settings=link.settings, scale=_floats(layer.scale),
            translate=_floats(layer.translate), version=link.version,
            units=[str(u) for u in units] if units else None,
            metadata=_jsonable(meta) if isinstance(meta, dict) else {},
            pending=link.corrections(),
        ))
    versions = [dataclasses.replace(v, stats=dict(v.stats)) for v in session.versions.versions]
    return SessionData(images, labels, list(session.store), versions, session.versions.active)


def _is_kind(layer: Any, kind: str) -> bool:
    """Whether ``layer`` is a napari layer of class ``kind`` (``"Image"``, ``"Labels"``)."""
    return any(cls.__name__ == kind for cls in type(layer).__mro__)


def _named(viewer: Any, name: str, kind: str, shape: tuple[int, ...]) -> Optional[Any]:
    """The viewer's layer ``name`` when it is a ``kind`` layer of data shape ``shape``."""
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    return layer if _is_kind(layer, kind) and _ints(layer.data.shape) == shape else None


def _image_file_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not an image file napari-unet's reader opens (None when it is one):
    a regular ``.tif``/``.tiff`` file or a zarr store, so no other kind of file (a script
    that a reader would run, a FIFO that would block) is ever opened from a session."""
    if is_zarr(path):
        return None
    if not path.name.lower().endswith(SUFFIXES):
        return (f"{path} is not an image file napari-unet opens (a .tif/.tiff file or a zarr "
                "store), so a session does not open it")
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    return None if regular else f"{path} is not a regular file"


def _inside(path: Path, folder: Optional[Path]) -> bool:
    """Whether ``path`` (links followed) lies inside ``folder``."""
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _image_layer(viewer: Any, record: ImageRecord, folder: Optional[Path],
                 confirm: Callable[[Path], bool]) -> tuple[Optional[Any], Optional[str]]:
    """The image layer of ``record``: in the viewer already, else opened again from its
    file (with napari-unet's reader, only an image file, after asking ``confirm`` when it
    is outside the session ``folder``) or from a napari-unet sample. Returns (layer, None)
    or (None, what went wrong)."""
    layer = _named(viewer, record.name, "Image", record.shape)
    if layer is not None:
        return layer, None

    def lost(reason: str) -> tuple[None, str]:
        return None, (f"image '{record.name}' could not be opened again: {reason}. Its labels "
                      "and corrections are restored; open the image and segment it to link "
                      "them again")

    if record.path:
        path = Path(record.path)
        if not path.is_absolute():  # relative to the session, never to the working folder
            if folder is None:
                return lost(f"its path {record.path} is relative to an unknown folder")
            path = folder / path
        if not os.path.lexists(path):
            return lost(f"its file {record.path} is gone")
        problem = _image_file_problem(path)
        if problem:
            return lost(problem)
        if not _inside(path, folder) and not confirm(path):
            return lost(f"{path} is outside the session folder and you chose not to open it")
        where = str(path)
        opener = partial(viewer.open, str(path), plugin=PLUGIN)
    elif record.sample:
        if record.sample[0] != PLUGIN:
            return lost(f"it is a sample of plugin '{record.sample[0]}', and a session opens "
                        f"only {PLUGIN}'s samples: open it yourself (File > Open Sample), then "
                        "open the session again")
        where = f"sample '{record.sample[1]}' of {PLUGIN}"
        opener = partial(viewer.open_sample, PLUGIN, record.sample[1])
    else:
        return lost("it was not opened from a file")
    try:
        opened = opener()
    except Exception as exc:  # noqa: BLE001 - any reader plugin's failure: restore the rest
        return lost(f"reading {where} failed ({exc})")
    fits = [layer for layer in opened
            if _is_kind(layer, "Image") and _ints(layer.data.shape) == record.shape]
    if not fits:
        return lost(f"{where} no longer holds an image of shape {record.shape}")
    layer = next((layer for layer in fits if layer.name == record.name), fits[0])
    layer.name = record.name
    layer.scale, layer.translate = record.scale, record.translate
    return layer, None


def _labels_layer(viewer: Any, record: LabelsRecord, problems: list[str]) -> Any:
    """The labels layer of ``record``: the viewer's own of that name and shape, else new
    (units napari does not know are dropped, with a message added to ``problems``)."""
    metadata = {META_KEY: record.metadata} if record.metadata else {}
    layer = _named(viewer, record.name, "Labels", record.data.shape)
    if layer is not None:
        layer.metadata = {**(layer.metadata or {}), **metadata}
        layer.data = record.data
        return layer
    add = partial(viewer.add_labels, record.data, name=record.name, scale=record.scale,
                  translate=record.translate, metadata=metadata)
    if record.units:
        try:
            return add(units=record.units)
        except ValueError as exc:  # napari refuses unit names it does not know
            problems.append(f"'{record.name}' was restored without its units {record.units} "
                            f"({exc})")
    return add()


def restore(viewer: Any, session: Session, data: SessionData,
            confirm: Optional[Callable[[Path], bool]] = None) -> list[str]:
    """Replace ``session``'s state with ``data`` and show its layers in ``viewer``.

    An image already in the viewer (same name and shape) is used as it is; otherwise it is
    opened again from its file or napari sample. The session file is untrusted: only a
    TIFF file or zarr store is opened, only with napari-unet's reader, and one outside the
    session folder only when ``confirm(path)`` says yes (default: ask the user in a
    dialog). Labels whose image cannot be found are still shown, untracked, and their
    corrections join the stored ones, so fine-tuning keeps them. Returns one message per
    problem (empty when everything came back).
    """
    if confirm is None:
        from . import _dialogs  # Qt: only when restoring into a real viewer

        confirm = partial(_dialogs.confirm_open_image, None, folder=data.folder)
    check(data)  # before anything changes: a session that cannot be restored is refused
    for link in list(session.links):
        session.remove_link(link)
    session.store = CorrectionStore()
    for correction in data.corrections:
        session.store.add(correction)
    session.versions.versions = list(data.versions)
    session.versions.active = data.active
    problems: list[str] = []
    image_layers = []
    for record in data.images:
        layer, problem = _image_layer(viewer, record, data.folder, confirm)
        image_layers.append(layer)
        if problem:
            problems.append(problem)
    links = []
    for record in data.labels:
        image_layer, image = image_layers[record.image], None
        if image_layer is not None:
            try:
                image = layer_image(image_layer.data, bool(getattr(image_layer, "rgb", False)),
                                    image_layer.metadata)
            except NapariUnetError as exc:
                problems.append(f"'{record.name}' was restored without its image: {exc}")
            else:
                if _ints(image.label_shape) != record.data.shape:
                    problems.append(
                        f"'{record.name}' was restored without its image: "
                        f"'{image_layer.name}' now has labels of shape {image.label_shape}, "
                        f"not {record.data.shape}")
                    image = None
        layer = _labels_layer(viewer, record, problems)
        if image is None:
            for correction in record.pending:
                session.store.add(correction)
            continue
        tracker = EditTracker(record.baseline)
        tracker.edited[...] = record.edited
        tracker.reviewed[...] = record.reviewed
        links.append(session.add_link(LabelsLink(image_layer, layer, image, tracker,
                                                 record.settings, record.version)))
    session.versions_changed.emit()
    for link in links:
        session.corrections_changed.emit(link)
    session.corrections_changed.emit(None)
    return problems
