"""What a session folder holds, as plain data: numpy arrays, loaded models, dataclasses.

These records are the session file format in memory. The widgets copy their state into
them (``_widgets/_session_file.capture``) and back (``restore``); :class:`.SessionFolder`
writes and reads them. Nothing here knows napari or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..config import OneOf, setting
from ..corrections import Correction
from ..model import Model
from ..options import SegmentOptions


@dataclass(frozen=True)
class SegmentSettings(SegmentOptions):
    """How the Segment widget segments an image: the :class:`~napari_unet.options.
    SegmentOptions` its controls set, plus ``scope`` ("stack": every plane; "plane": the
    plane in view), which only the widget has. Kept with the labels it made (layer
    metadata, session file) so a later round segments the same way."""

    #: The fields a session file (and layer metadata) holds, flat, as sessions written
    #: since the format began do; the options the widget does not set keep their defaults.
    STORED: ClassVar[tuple[str, ...]] = ("device", "tile_size", "seed_threshold", "min_size",
                                         "object_size", "scope", "stitch_3d", "compile",
                                         "rgb", "tta")

    scope: str = setting("stack", OneOf(("stack", "plane")))

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.STORED}

    @classmethod
    def from_dict(cls, values: dict) -> SegmentSettings:
        """Settings from their flat :attr:`STORED` fields (a session file, layer metadata);
        each value is checked by its field's rule (:class:`InvalidSettingError`, a
        ValueError); keys this version does not know are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls.STORED})

    def summary(self) -> str:
        """The settings in a few words for a status line: the values chosen instead of the
        model's own, then where it ran, e.g. ``"seed threshold 0.4, min size 20, device
        cpu"``."""
        chosen = (("tile", self.tile_size), ("seed threshold", self.seed_threshold),
                  ("min size", self.min_size), ("object size", self.object_size))
        parts = [f"{name} {value:g}" for name, value in chosen if value is not None]
        if self.scope == "plane":
            parts.append("plane in view")
        if self.stitch_3d:
            voxel = "" if self.voxel_size is None else " (voxel " + " x ".join(
                f"{v:g}" for v in self.voxel_size) + ")"
            parts.append(f"objects built in 3D{voxel}")
        if self.rgb != "auto":
            parts.append(f"colour {self.rgb}")
        if self.tta:
            parts.append("mirrored predictions averaged")
        return ", ".join([*parts, f"device {self.device}"])


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
    path: Optional[str] = None  # the file it was read from (saved relative to the session)
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
