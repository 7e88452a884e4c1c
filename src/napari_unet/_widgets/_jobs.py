"""The compute the widgets run in worker threads, as plain functions (no Qt, no napari).

Each job takes ``progress(done, total)`` and a :class:`~napari_unet.progress.CancelToken`
and calls the core API; the widgets run them in a napari ``thread_worker`` and deliver
the result to the layer that started them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..device import torch_threads
from ..finetune import fine_tune
from ..model import Model
from ..progress import CancelToken, ProgressCallback
from ..segment import segment, with_postprocess
from ._image import LayerImage
from ._state import Correction


def worker_threads() -> int:
    """Torch threads for a GUI worker: all cores but one, so the event loop stays responsive."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class SegmentSettings:
    """What the Segment widget's controls say; stored in the labels layer's metadata."""

    device: str = "auto"
    tile_size: Optional[int] = None
    seed_threshold: Optional[float] = None
    min_size: Optional[int] = None
    scope: str = "stack"  # "stack": every plane; "plane": the plane in view
    stitch_3d: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SegmentResult:
    """Labels for the whole image (``planes is None``) or for some stack planes."""

    labels: dict[tuple[int, ...], np.ndarray] | np.ndarray
    planes: Optional[list[tuple[int, ...]]] = None


def run_segment(image: LayerImage, model: Model, settings: SegmentSettings,
                planes: Optional[Sequence[tuple[int, ...]]] = None,
                progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None,
                threads: Optional[int] = None) -> SegmentResult:
    """Segment the whole image, or only the given stack planes, through the core API.

    Planes are normalised with the whole image's percentiles, so a plane segmented alone
    gets exactly the labels a whole-stack run gives it.
    """
    chosen = None if planes is None else [tuple(index) for index in planes]
    postprocess = with_postprocess(model, seed_threshold=settings.seed_threshold,
                                   min_size=settings.min_size)
    with torch_threads(threads if threads is not None else worker_threads()):
        labels = segment(image.data, model, image.axes, device=settings.device,
                         tile_size=settings.tile_size, postprocess=postprocess,
                         stitch_3d=settings.stitch_3d and chosen is None, planes=chosen,
                         progress=progress, cancel=cancel)
    if chosen is None:
        return SegmentResult(labels)
    return SegmentResult({index: labels[index] for index in chosen}, chosen)


def run_fine_tune(model: Model, corrections: Sequence[Correction], time_budget: float,
                  name: Optional[str] = None,
                  progress: Optional[ProgressCallback] = None,
                  on_report: Optional[Callable] = None,
                  cancel: Optional[CancelToken] = None,
                  threads: Optional[int] = None) -> Model:
    """Fine-tune a copy of ``model`` on corrected (C, Y, X) planes; the base is untouched."""
    images = [c.image for c in corrections]
    labels = [c.labels for c in corrections]
    masks = [c.mask for c in corrections]
    with torch_threads(threads if threads is not None else worker_threads()):
        return fine_tune(model, images, labels, masks, axes="CYX", time_budget=time_budget,
                         name=name, progress=progress, on_report=on_report, cancel=cancel)
