"""Between a viewer's session and the session file format (:mod:`napari_unet.sessions`):
:func:`capture` copies what a :class:`~._session.Session` holds into a
:class:`~napari_unet.sessions.SessionData` (GUI thread), a
:class:`~napari_unet.sessions.SessionFolder` writes and reads it (worker thread), and
:func:`restore` puts it back into a viewer (GUI thread) through the Session's API.

No Qt, no napari import: napari layers are plain Python objects here, so restore is tested
with a stand-in viewer.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .._package import OLD_PLUGIN, PLUGIN
from .._reader import META_KEY, SUFFIXES
from ..errors import NapariUnetError
from ..io import is_zarr
from ..sessions import ImageRecord, LabelsRecord, SessionData, check
from ..sessions.index import floats, ints, jsonable, opt_str
from ._image import layer_image
from ._session import LabelsLink, Session
from ._state import EditTracker


def _image_record(layer: Any, axes: str) -> ImageRecord:
    source = getattr(layer, "source", None)
    sample = getattr(source, "sample", None)
    path = opt_str(getattr(source, "path", None))
    if path is not None and "://" not in path:
        path = str(Path(path).absolute())  # a session opens relative paths from its folder
    return ImageRecord(
        name=layer.name, axes=axes, rgb=bool(getattr(layer, "rgb", False)),
        shape=ints(layer.data.shape), scale=floats(layer.scale),
        translate=floats(layer.translate), path=path,
        reader=opt_str(getattr(source, "reader_plugin", None)),
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
            settings=link.settings, scale=floats(layer.scale),
            translate=floats(layer.translate), version=link.version,
            units=[str(u) for u in units] if units else None,
            metadata=jsonable(meta) if isinstance(meta, dict) else {},
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
    return layer if _is_kind(layer, kind) and ints(layer.data.shape) == shape else None


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
        if record.sample[0] not in (PLUGIN, OLD_PLUGIN):  # sessions saved before the rename
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
            if _is_kind(layer, "Image") and ints(layer.data.shape) == record.shape]
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
    session.replace_with(data.versions, data.active, data.corrections)
    problems: list[str] = []
    image_layers = []
    for image_record in data.images:
        layer, problem = _image_layer(viewer, image_record, data.folder, confirm)
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
                if ints(image.label_shape) != record.data.shape:
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
        tracker = EditTracker.saved(record.baseline, record.edited, record.reviewed)
        links.append(session.add_link(LabelsLink(image_layer, layer, image, tracker,
                                                 record.settings, record.version)))
    session.versions_changed.emit()
    for link in links:
        session.corrections_changed.emit(link)
    session.corrections_changed.emit(None)
    return problems
