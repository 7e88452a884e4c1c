"""What a session folder holds, as plain data: numpy arrays, loaded models, dataclasses.

These records are the session file format in memory. The widgets copy their state into
them (``_widgets/_session_file.capture``) and back (``restore``); :class:`.SessionFolder`
writes and reads them. Nothing here knows napari or Qt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..corrections import Correction
from ..model import Model


@dataclass(frozen=True)
class SegmentSettings:
    """What the Segment widget's controls say when it segments an image; kept with the
    labels it made (layer metadata, session file) so a later round segments the same way.
    Each field's type is what a session file may hold for it (checked when one is read)."""

    device: str = "auto"
    tile_size: Optional[int] = None
    seed_threshold: Optional[float] = None
    min_size: Optional[int] = None
    #: Object diameter in pixels (Cellpose's "diameter"); None: the model's own.
    object_size: Optional[float] = None
    scope: str = "stack"  # "stack": every plane; "plane": the plane in view
    stitch_3d: bool = False
    compile: bool = False  # torch.compile: seconds once per session, then faster

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelVersion:
    """A model the session can use: a loaded base model or the result of a fine-tuning round."""

    label: str
    model: Model
    parent: Optional[int] = None
    source: Optional[Path] = None
    round: int = 0
    saved_as: Optional[str] = None
    stats: dict[str, Any] = field(default_factory=dict)


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
