"""Configuration dataclasses: what a model is, how it normalises, how it post-processes.

These are stored as JSON inside every model file, so a file alone is enough to predict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Task = Literal["instance", "semantic"]

#: Class names of the instance head: a softmax over these three per pixel.
INSTANCE_CLASSES = ("background", "interior", "boundary")


@dataclass
class NetworkConfig:
    """Shape of the U-Net (Ronneberger et al. 2015): widths double at each of ``depth`` poolings."""

    in_channels: int = 1
    out_channels: int = 3
    base: int = 16
    depth: int = 4
    norm: Literal["batch", "none"] = "batch"
    upsampling: Literal["transpose", "nearest", "bilinear"] = "transpose"
    dropout: float = 0.0

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this so every pooling halves evenly."""
        return 2**self.depth


@dataclass
class NormalizationConfig:
    """Per-channel percentile normalisation, the same at training and prediction time."""

    low: float = 1.0
    high: float = 99.8
    #: ``1 - x`` after normalising: dark objects on a light background reach the network as
    #: the bright objects it learnt (set by fine-tuning from the corrections' polarity).
    invert: bool = False


@dataclass
class PostprocessConfig:
    """How probabilities become labels; ``seed_threshold`` is calibrated per model."""

    foreground_threshold: float = 0.5
    seed_threshold: float = 0.7
    min_size: int = 10
    min_seed_size: int = 3
    semantic_threshold: float = 0.5


@dataclass
class ModelConfig:
    """Everything needed to rebuild and run a model besides its weights."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    task: Task = "instance"
    class_names: tuple[str, ...] = INSTANCE_CLASSES
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    tile_size: int = 256
    tile_overlap: int = 32
    #: The objects as the network learnt them: median equivalent diameter in (network) pixels
    #: and polarity ("bright" objects on a darker background, or "dark"); None when unknown.
    object_diameter: float | None = None
    object_polarity: Literal["bright", "dark"] | None = None
    #: Images are resized by this factor before the network (and the result back), so objects
    #: of another size reach it at ``object_diameter``; Cellpose calls this the diameter.
    input_scale: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``TypeError``."""
        data = dict(data)
        nested = {
            "network": NetworkConfig,
            "normalization": NormalizationConfig,
            "postprocess": PostprocessConfig,
        }
        for key, kind in nested.items():
            if key in data:
                data[key] = kind(**data[key])
        if "class_names" in data:
            data["class_names"] = tuple(data["class_names"])
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TypeError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    # Compact and fast: ~1.9 M parameters, the default for new models.
    "default": ModelConfig(network=NetworkConfig(base=16, depth=4)),
    # The seed tutorial's network: 64..1024 filters, dropout 0.5, sigmoid + BCE.
    "seed": ModelConfig(
        network=NetworkConfig(
            base=64, depth=4, norm="none", upsampling="nearest", dropout=0.5, out_channels=1
        ),
        task="semantic",
        class_names=("foreground",),
    ),
}


def preset(name: str, *, in_channels: int = 1, task: Task | None = None,
           class_names: tuple[str, ...] | None = None) -> ModelConfig:
    """A fresh copy of a named preset, adapted to the channels and task at hand."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = ModelConfig.from_dict(PRESETS[name].to_dict())
    config.network.in_channels = in_channels
    if task is not None:
        config.task = task
    if config.task == "instance":
        config.class_names = INSTANCE_CLASSES
        config.network.out_channels = len(INSTANCE_CLASSES)
    else:
        config.class_names = class_names or config.class_names
        if config.class_names == INSTANCE_CLASSES:
            config.class_names = ("foreground",)
        config.network.out_channels = len(config.class_names)
    return config
