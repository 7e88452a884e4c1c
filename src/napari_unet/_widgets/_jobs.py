"""The compute the widgets run in worker threads, as plain functions (no Qt, no napari).

Each job takes ``progress(done, total)`` and a :class:`~napari_unet.progress.CancelToken`
and calls the core API; the widgets run them in a napari ``thread_worker`` and deliver
the result to the layer that started them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..color import RgbConversion
from ..corrections import Correction
from ..device import torch_threads
from ..finetune import fine_tune
from ..guidance import Candidate, ProbabilityStore, guide_planes
from ..model import Model
from ..postprocess import count_objects
from ..progress import CancelToken, ProgressCallback
from ..segment import prepare_image, segment
from ..sessions import SegmentSettings
from ._image import LayerImage


def worker_threads() -> int:
    """Torch threads for a GUI worker: all cores but one, so the event loop stays responsive."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class SegmentResult:
    """Labels for the whole image (``planes is None``) or for some stack planes.

    Jobs also fill in what the delivery would otherwise compute on the GUI thread: the
    labels already in the layer's dtype (:func:`layer_dtype`) and ``n_objects`` (for the
    whole image or summed over planes).
    """

    labels: dict[tuple[int, ...], np.ndarray] | np.ndarray
    planes: Optional[list[tuple[int, ...]]] = None
    n_objects: Optional[int] = None
    model: Optional[Model] = None  # the model, when the job loaded it from a file
    source: Optional[Path] = None  # ... and that file
    percentiles: Optional[np.ndarray] = None  # the image's normalisation, for corrections
    #: The class probabilities of the planes segmented (for "Where to correct"), kept when
    #: they fit in :data:`KEEP_PROBABILITIES` pixels.
    probabilities: Optional[ProbabilityStore] = None
    #: How an RGB image was made gray for the model (shown in the status), if it was.
    conversion: Optional[RgbConversion] = None


#: Segment keeps the class probabilities of up to this many pixels (1 byte per class and
#: pixel: 96 MB for an instance model) so "Where to correct" needs no network pass of its
#: own; beyond it, it predicts the plane in view again when asked.
KEEP_PROBABILITIES = 32_000_000


#: Whole-image results with ids below this become uint16 layers: napari maps uint16 labels
#: to its texture ~2x faster than uint32 (a shorter GUI stall, docs/benchmarks.md), and the
#: ids left free above it are for objects the user paints.
UINT16_IDS = 60_000


def layer_dtype(labels: np.ndarray) -> np.dtype:
    """uint16 while the ids leave room for painting new objects, else uint32."""
    top = int(labels.max(initial=0)) if labels.size else 0
    return np.dtype(np.uint16 if top < UINT16_IDS else np.uint32)


def _as_dtype(labels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    labels = np.asarray(labels)
    return labels if labels.dtype == dtype else labels.astype(dtype)


def prepare_result(result: SegmentResult) -> SegmentResult:
    """Do in the worker what delivering ``result`` needs: labels in the layer's dtype
    (uint16 or uint32 for a whole image, uint32 for planes merged into a layer) and the
    object count."""
    if result.planes is None:
        result.labels = _as_dtype(result.labels, layer_dtype(np.asarray(result.labels)))
        result.n_objects = count_objects(result.labels)
    else:
        n_objects = 0
        for index in result.planes:
            plane = result.labels[index] = _as_dtype(result.labels[index], np.dtype(np.uint32))
            n_objects += count_objects(plane)
        result.n_objects = n_objects
    return result


def run_segment(image: LayerImage, model: Model, settings: SegmentSettings,
                planes: Optional[Sequence[tuple[int, ...]]] = None,
                progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None,
                threads: Optional[int] = None) -> SegmentResult:
    """Segment the whole image, or only the given stack planes, through the core API.

    Planes are normalised with the whole image's percentiles, so a plane segmented alone
    gets exactly the labels a whole-stack run gives it; some planes are never stitched in 3D.
    """
    chosen = None if planes is None else [tuple(index) for index in planes]
    n_planes = int(np.prod(image.layout.stack_shape)) if chosen is None else len(chosen)
    plane_pixels = int(np.prod(image.label_shape[-2:]))
    store = ProbabilityStore() if n_planes * plane_pixels <= KEEP_PROBABILITIES else None
    with torch_threads(threads if threads is not None else worker_threads()):
        prepared = prepare_image(image.data, model, image.axes, rgb=settings.rgb)
        percentiles = prepared.percentiles
        labels = segment(image.data, model, image.axes, settings, planes=chosen,
                         percentiles=percentiles, progress=progress, cancel=cancel,
                         on_probabilities=store, stitch_3d=settings.stitch_3d and chosen is None)
    if chosen is None:
        result = SegmentResult(labels)
    else:
        result = SegmentResult({index: labels[index] for index in chosen}, chosen)
    result.percentiles, result.probabilities = percentiles, store
    result.conversion = prepared.conversion
    return prepare_result(result)


def run_fine_tune(model: Model, corrections: Sequence[Correction], steps: int,
                  time_limit: float, name: Optional[str] = None,
                  progress: Optional[ProgressCallback] = None,
                  on_report: Optional[Callable] = None,
                  cancel: Optional[CancelToken] = None,
                  threads: Optional[int] = None) -> Model:
    """Fine-tune a copy of ``model`` on the session's corrections for ``steps`` steps (fewer
    when they do not fit in ``time_limit`` seconds); the base is untouched."""
    with torch_threads(threads if threads is not None else worker_threads()):
        return fine_tune(model, corrections, steps=steps, time_budget=time_limit, name=name,
                         progress=progress, on_report=on_report, cancel=cancel)


@dataclass
class GuideResult:
    """What "Where to correct" found: the uncertainty map of each plane (by stack index),
    the candidates best first, and the planes it had to predict again (no probabilities
    kept for them)."""

    maps: dict[tuple[int, ...], np.ndarray]
    candidates: list[Candidate]
    predicted: list[tuple[int, ...]]


def run_guide(image: LayerImage, labels: np.ndarray, store: ProbabilityStore, model: Model,
              settings: SegmentSettings, planes: Sequence[tuple[int, ...]], *,
              previous: Optional[np.ndarray] = None, exclude: Optional[np.ndarray] = None,
              percentiles: Optional[np.ndarray] = None,
              progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelToken] = None,
              threads: Optional[int] = None) -> GuideResult:
    """Rank where to correct on ``planes`` of ``labels`` (as shown, with the user's edits),
    from the probabilities Segment kept in ``store``. Planes it lacks (the image was too
    large to keep them, or the labels come from a saved session) are predicted again with
    ``model`` and ``settings``, normalised with the stack's ``percentiles``, and added to
    ``store``: one Segment pass of those planes, the only network work this does."""
    planes = [tuple(p) for p in planes]
    missing = [p for p in planes if p not in set(store.planes)]
    if missing:
        with torch_threads(threads if threads is not None else worker_threads()):
            segment(image.data, model, image.axes, settings,
                    planes=missing if image.stack_axes else None, percentiles=percentiles,
                    progress=progress, cancel=cancel, on_probabilities=store,
                    stitch_3d=False)
    maps, candidates = guide_planes(labels, store, model.config.task,
                                    settings.postprocess(model.config.postprocess),
                                    previous=previous, exclude=exclude, planes=planes)
    return GuideResult(maps, candidates, missing)
