"""What a session must hold to be restored whole, checked before anything is restored.

A session file is untrusted: every array is checked twice when it is read, first as its
.npy header declares it (a :class:`Declared`, before any data is decompressed, so a small
file cannot expand to gigabytes), then with its values, and :func:`check` runs once more
on the whole :class:`~.records.SessionData` before a restore, so a session that cannot be
restored is refused before the open one changes. Each ``*_problem`` function returns why
its input cannot be restored, or None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..axes import Layout, validate_axes
from ..corrections import Correction
from ..errors import NapariUnetError, SessionError
from .records import ImageRecord, LabelsRecord, SessionData


@dataclass(frozen=True)
class Declared:
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
    if not isinstance(array, (np.ndarray, Declared)):
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


def _finite_problem(values: Any, what: str, positive: bool = False) -> Optional[str]:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive)
               for v in values):
        kind = "positive finite numbers" if positive else "finite numbers"
        return f"{what} {list(values)} are not all {kind}"
    return None


def correction_problem(c: Correction, what: str,
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


def image_record_problem(record: ImageRecord) -> Optional[str]:
    shape = record.shape
    if len(shape) < 2 or any(s <= 0 for s in shape):
        return f"image {record.name!r} has shape {shape}"
    try:
        validate_axes(record.axes, len(shape))
    except NapariUnetError as exc:
        return f"image {record.name!r}: {exc}"
    if len(record.scale) != len(record.translate):
        return (f"image {record.name!r} has {len(record.scale)} scales and "
                f"{len(record.translate)} translations")
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
        return (f"{name} have {len(record.scale)} scales and {len(record.translate)} "
                f"translations for {ndim} dimensions")
    if record.units is not None and len(record.units) != ndim:
        return f"{name} have {len(record.units)} units for {ndim} dimensions"
    problem = (_finite_problem(record.scale, f"the scale of {name}", True)
               or _finite_problem(record.translate, f"the translation of {name}"))
    if problem:
        return problem
    plane = (layout.n_channels, *shape[-2:])
    for c in record.pending:
        problem = correction_problem(c, f"correction {c.name!r} of {name}", plane)
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


def saved_labels_problem(record: LabelsRecord, shape: tuple[int, ...],
                         images: list[ImageRecord], stored: list[Correction]) -> Optional[str]:
    """Why ``record`` cannot be restored: not of the ``shape`` session.json gives it, not
    fitting its image, or planes clashing with the ``stored`` corrections."""
    if record.data.shape != shape:
        return f"labels {record.name!r} have shape {record.data.shape}, not the saved shape {shape}"
    return (_labels_record_problem(record, images[record.image])
            or _clash_problem([*stored, *record.pending]))


def stored_problem(stored: list[Correction]) -> Optional[str]:
    """Why the corrections kept from earlier rounds cannot be restored."""
    problems = (correction_problem(c, f"stored correction {c.name!r}") for c in stored)
    return next((p for p in problems if p), None) or _clash_problem(stored)


def refused(where: str, problem: str) -> SessionError:
    return SessionError(
        f"{where} cannot be restored: {problem}. It was not written like this by napari-unet "
        "(changed or damaged since): restore the session folder from a backup, or open the "
        "image and segment it again. The open session is unchanged"
    )


def check(data: SessionData) -> None:
    """Refuse (:class:`SessionError`) data that a restore could not put back whole."""
    where = f"session {data.folder}" if data.folder else "the session"
    problems = [image_record_problem(image) for image in data.images]
    for record in data.labels:
        if not 0 <= record.image < len(data.images):
            problems.append(f"labels {record.name!r} name image {record.image}, which does "
                            "not exist")
        elif not image_record_problem(data.images[record.image]):
            problems.append(_labels_record_problem(record, data.images[record.image]))
    problems.extend(correction_problem(c, f"stored correction {c.name!r}")
                    for c in data.corrections)
    problems.append(_clash_problem(
        [*data.corrections, *(c for record in data.labels for c in record.pending)]))
    problem = next((p for p in problems if p), None)
    if problem:
        raise refused(where, problem)


def check_labels(record: LabelsRecord) -> None:
    """Refuse labels whose arrays do not describe one layer (so no save is unreadable)."""
    arrays = (record.data, record.baseline, record.edited, record.reviewed)
    if (any(a.shape != record.data.shape for a in arrays) or record.edited.dtype != bool
            or record.reviewed.dtype != bool):
        raise ValueError(f"the arrays of labels {record.name!r} do not fit together")
