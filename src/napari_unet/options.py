"""``SegmentOptions``: every choice of how to segment, in one place.

:func:`~napari_unet.segment.segment`, the batch jobs (:mod:`napari_unet.batch`), the CLI's
``segment`` and the Segment widget all take this one type, so a choice is spelled, checked
and documented once. Each field declares its rule (:mod:`napari_unet.config`): a bad value
raises :class:`~napari_unet.errors.InvalidSettingError` when the options are made, before any
work, and the CLI builds its options' types from the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from .blocks import BlockConfig
from .color import RGB_MODES
from .config import OneOf, PostprocessConfig, Range, Sizes, check_fields, setting
from .device import DEVICE_CHOICES
from .errors import InvalidSettingError
from .tiling import check_tiling

#: A switch: only ``True`` or ``False`` (``1`` or ``"yes"`` is a mistake, not a choice).
SWITCH = OneOf((False, True))
_PROBABILITY = Range(0, 1, optional=True)


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment. ``None`` means "the model's own" (tile size and overlap, the
    post-processing thresholds, the object size) or "the device's best" (batch size).

    ``tile_overlap`` must be below the tile size; without it the model's overlap is used,
    or a quarter of ``tile_size`` when the model's does not fit. Without ``tile_size`` each
    plane uses the model's tile or up to twice it, whichever computes fewer pixels.
    ``seed_threshold``, ``foreground_threshold`` and ``min_size`` override the model's
    post-processing; ``object_size`` (object diameter in pixels, Cellpose's "diameter")
    resizes the image so objects reach the network at the size it learnt
    (:meth:`~napari_unet.model.Model.for_object_size`). ``stitch_3d`` joins instance objects
    across Z planes. ``fast`` predicts with :mod:`napari_unet.fastpath`; ``compile`` adds
    ``torch.compile`` (seconds of set-up, then faster: for long batches). ``blocks`` bounds
    memory for large planes (:mod:`napari_unet.blocks`). ``rgb`` turns an RGB picture
    gray for a 1-channel model (:mod:`napari_unet.color`: ``auto`` takes optical density
    for a light background). ``tta`` averages the predictions of the four mirror images
    of each plane (test-time augmentation: 4x the network time; gain in docs/models.md).
    ``voxel_size`` (Z, Y, X, in any one unit, e.g. ``(2.18, 1, 1)``) tells the 3D step of
    ``stitch_3d`` how far apart planes are (:mod:`napari_unet.volume`); None: the image
    file's calibration where a file is read (:mod:`napari_unet.batch`), else cubic voxels.
    """

    device: str = setting("auto", OneOf(DEVICE_CHOICES))
    tile_size: Optional[int] = setting(None, Range(1, integer=True, optional=True))
    tile_overlap: Optional[int] = setting(None, Range(0, integer=True, optional=True))
    batch_size: Optional[int] = setting(None, Range(1, integer=True, optional=True))
    seed_threshold: Optional[float] = setting(None, _PROBABILITY)
    foreground_threshold: Optional[float] = setting(None, _PROBABILITY)
    min_size: Optional[int] = setting(None, Range(0, integer=True, optional=True))
    object_size: Optional[float] = setting(None, Range(0, open_low=True, optional=True))
    stitch_3d: bool = setting(False, SWITCH)
    fast: bool = setting(True, SWITCH)
    compile: bool = setting(False, SWITCH)
    blocks: BlockConfig = field(default_factory=BlockConfig)
    rgb: str = setting("auto", OneOf(RGB_MODES))
    tta: bool = setting(False, SWITCH)
    voxel_size: Optional[tuple[float, float, float]] = setting(None, Sizes(3, optional=True))

    def __post_init__(self) -> None:
        check_fields(self)
        if not isinstance(self.blocks, BlockConfig):
            raise InvalidSettingError(f"blocks is {self.blocks!r}, but it must be a BlockConfig "
                                      "(e.g. BlockConfig(block=2048, halo=64))")
        if self.voxel_size is not None:  # a list from JSON or a widget: one spelling
            object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))
        if self.tile_size is not None and self.tile_overlap is not None:
            check_tiling(self.tile_size, self.tile_overlap)

    @classmethod
    def of(cls, options: Optional[SegmentOptions] = None, **choices: Any) -> SegmentOptions:
        """``options`` (default: all defaults) with the fields named in ``choices`` changed;
        a name that is no field raises :class:`~napari_unet.errors.InvalidSettingError`
        naming it, so a misspelt choice is never dropped silently."""
        base = cls() if options is None else options
        if not isinstance(base, SegmentOptions):
            raise InvalidSettingError(f"options is {type(base).__name__}, but it must be a "
                                      "SegmentOptions")
        names = {f.name for f in fields(base)}
        unknown = sorted(set(choices) - names)
        if unknown:
            raise InvalidSettingError(
                f"unknown segment option(s) {', '.join(unknown)}; the options are "
                f"{', '.join(sorted(names))}")
        return replace(base, **choices) if choices else base

    def postprocess(self, model_config: PostprocessConfig) -> PostprocessConfig:
        """The model's post-processing with this run's overrides (unset ones keep the
        model's value); the model itself is unchanged."""
        changes: dict[str, Any] = {"seed_threshold": self.seed_threshold,
                                   "foreground_threshold": self.foreground_threshold,
                                   "min_size": self.min_size}
        return replace(model_config, **{k: v for k, v in changes.items() if v is not None})
