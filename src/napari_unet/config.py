"""Configuration dataclasses: what a model is, how it normalises, how it post-processes.

These are stored as JSON inside every model file, so a file alone is enough to predict.
Every field that takes a value from a range declares it as a rule (:class:`Range`,
:class:`OneOf`, :class:`Pattern`); the same rule refuses a bad value in the library
(:class:`~napari_unet.errors.InvalidSettingError`), in a model file
(:func:`check_config`, before any network is built) and on the command line.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal, Optional, Union, get_args

from .domain import SCALE_RANGE
from .errors import InvalidSettingError
from .tiling import check_tiling

Task = Literal["instance", "semantic"]
Norm = Literal["batch", "none"]
Upsampling = Literal["transpose", "nearest", "bilinear"]
Polarity = Literal["bright", "dark"]

#: Class names of the instance head: a softmax over these three per pixel.
INSTANCE_CLASSES = ("background", "interior", "boundary")
#: Deepest network: each level halves the input, so tiles must be multiples of 2**depth
#: (256 pixels at depth 8); the U-Net paper uses 4.
MAX_DEPTH = 8
#: Largest network a config may describe: 1e9 parameters are 4 GB of fp32 weights (the
#: seed preset has 31 M). Checked arithmetically, before anything is allocated.
MAX_PARAMETERS = 10**9


@dataclass(frozen=True)
class Range:
    """A numeric setting's allowed values: a real number (``integer``: a whole number)
    between ``low`` and ``high`` (``open_low``/``open_high`` exclude that end), never NaN
    or infinite; with ``optional``, also None (the setting is off)."""

    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    open_low: bool = False
    open_high: bool = False
    optional: bool = False

    @property
    def text(self) -> str:
        """The allowed values in words, e.g. "a number from 0 to 1"."""
        noun = "whole number" if self.integer else "number"
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low == 0 and self.open_low and self.high == math.inf:
            return f"a positive finite {noun}"
        if math.isfinite(self.low) and math.isfinite(self.high) and not (
                self.open_low or self.open_high):
            return f"a {noun} from {low} to {high}"
        words = [f"above {low}" if self.open_low else f"of at least {low}"] \
            if math.isfinite(self.low) else []
        if math.isfinite(self.high):
            words.append(f"below {high}" if self.open_high else f"of at most {high}")
        return f"a {'' if self.integer else 'finite '}{noun} " + " and ".join(words)

    def allows(self, value: object) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False
        number = float(value)
        above = number > self.low if self.open_low else number >= self.low
        below = number < self.high if self.open_high else number <= self.high
        return above and below

    def parse(self, text: str) -> object:
        """The value a command-line argument spells (the text itself when it is no number)."""
        try:
            return int(text) if self.integer else float(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class OneOf:
    """A setting that takes one of a few values, compared with their type (``1`` is not
    ``True``, ``"1"`` is not ``1``)."""

    choices: tuple[Any, ...]

    @property
    def text(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))

    def allows(self, value: object) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def parse(self, text: str) -> object:
        return text


@dataclass(frozen=True)
class Pattern:
    """A text setting that must match the regular expression ``regex`` as a whole;
    ``text`` says in words what that is."""

    regex: str
    text: str

    def allows(self, value: object) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None

    def parse(self, text: str) -> object:
        return text


@dataclass(frozen=True)
class Sizes:
    """A setting of ``count`` positive finite numbers, one per axis (e.g. a voxel size
    Z, Y, X); with ``optional``, also None. The command line spells it ``2.18,1,1``."""

    count: int
    optional: bool = False

    @property
    def text(self) -> str:
        return f"{self.count} positive finite numbers (one per axis, e.g. 2.18,1,1)"

    def allows(self, value: object) -> bool:
        if value is None:
            return self.optional
        if not isinstance(value, (tuple, list)) or len(value) != self.count:
            return False
        return all(Range(0, open_low=True).allows(v) for v in value)

    def parse(self, text: str) -> object:
        try:
            return tuple(float(part) for part in text.split(","))
        except ValueError:
            return text


Rule = Union[Range, OneOf, Pattern, Sizes]

_PROBABILITY = Range(0, 1)
_PERCENTILE = Range(0, 100)
#: A count of things, at least one (channels, steps, tiles).
COUNT = Range(1, integer=True)
#: A size in pixels or a count that may be 0.
COUNT_OR_ZERO = Range(0, integer=True)


def setting(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and the rule its values must follow."""
    return field(default=default, metadata={"rule": rule})


def rule_of(cls: type, name: str) -> Rule:
    """The rule of field ``name`` of the dataclass ``cls`` (the CLI builds its options'
    types from these, so an option and its library setting refuse the same values)."""
    return {f.name: f for f in fields(cls)}[name].metadata["rule"]


def check_value(name: str, value: object, rule: Rule, default: object = MISSING) -> None:
    """Refuse ``value`` of the setting ``name`` unless ``rule`` allows it, naming the
    setting, the value, what is allowed and (when known) the default."""
    if rule.allows(value):
        return
    allowed = rule.text + (" or None" if isinstance(rule, (Range, Sizes)) and rule.optional
                           else "")
    hint = "" if default is MISSING else f" (default {_shown(default)})"
    raise InvalidSettingError(f"{name} is {_shown(value)}, but it must be {allowed}{hint}")


def check_fields(obj: Any) -> None:
    """Check every field of the dataclass ``obj`` that declares a rule; the message names
    the field as it appears in a model config (``network.depth``)."""
    prefix = getattr(obj, "section", "")
    for f in fields(obj):
        rule = f.metadata.get("rule")
        if rule is not None:
            check_value(prefix + f.name, getattr(obj, f.name), rule, f.default)


@dataclass
class NetworkConfig:
    """Shape of the U-Net (Ronneberger et al. 2015): widths double at each of ``depth`` poolings."""

    section: ClassVar[str] = "network."

    in_channels: int = setting(1, COUNT)
    out_channels: int = setting(3, COUNT)
    base: int = setting(16, COUNT)
    depth: int = setting(4, Range(1, MAX_DEPTH, integer=True))
    norm: Norm = setting("batch", OneOf(get_args(Norm)))
    upsampling: Upsampling = setting("transpose", OneOf(get_args(Upsampling)))
    dropout: float = setting(0.0, Range(0, 1, open_high=True))

    def __post_init__(self) -> None:
        check_network(self)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this so every pooling halves evenly."""
        return 2**self.depth

    @property
    def parameter_count(self) -> int:
        """Trainable parameters of the :class:`~napari_unet.network.UNet` built from this
        config, by arithmetic (nothing is allocated), so a config describing an absurd
        network is refused before it is built; tests keep it equal to the network's count."""
        widths = [self.base * 2**i for i in range(self.depth + 1)]
        per_conv = 1 if self.norm == "none" else 2  # a bias, or a batch norm's weight and bias

        def double_conv(cin: int, cout: int) -> int:
            return 9 * cin * cout + 9 * cout * cout + 2 * per_conv * cout

        total, cin = 0, self.in_channels
        for width in widths[:-1]:
            total += double_conv(cin, width)
            cin = width
        total += double_conv(widths[-2], widths[-1])
        kernel = 4 if self.upsampling == "transpose" else 9  # 2x2 transposed or 3x3 conv
        for low, high in zip(widths, widths[1:]):
            total += kernel * high * low + low + double_conv(2 * low, low)
        return total + widths[0] * self.out_channels + self.out_channels


def check_network(config: NetworkConfig) -> None:
    """Refuse a network config with a field outside its rule, or one describing more than
    :data:`MAX_PARAMETERS` parameters (counted by arithmetic, before anything is built)."""
    check_fields(config)
    count = config.parameter_count
    if count > MAX_PARAMETERS:
        raise InvalidSettingError(
            f"network.base {config.base}, depth {config.depth} and {config.in_channels} input "
            f"channels make a network of {count:.3g} parameters, more than the "
            f"{MAX_PARAMETERS:,} allowed; choose a smaller base or depth (e.g. base 16, depth 4)")


@dataclass
class NormalizationConfig:
    """Per-channel percentile normalisation, the same at training and prediction time."""

    section: ClassVar[str] = "normalization."

    low: float = setting(1.0, _PERCENTILE)
    high: float = setting(99.8, _PERCENTILE)
    #: ``1 - x`` after normalising: dark objects on a light background reach the network as
    #: the bright objects it learnt (set by fine-tuning from the corrections' polarity).
    invert: bool = setting(False, OneOf((False, True)))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class PostprocessConfig:
    """How probabilities become labels; ``seed_threshold`` is calibrated per model."""

    section: ClassVar[str] = "postprocess."

    foreground_threshold: float = setting(0.5, _PROBABILITY)
    seed_threshold: float = setting(0.7, _PROBABILITY)
    min_size: int = setting(10, COUNT_OR_ZERO)
    min_seed_size: int = setting(3, COUNT_OR_ZERO)
    semantic_threshold: float = setting(0.5, _PROBABILITY)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class ModelConfig:
    """Everything needed to rebuild and run a model besides its weights."""

    _SECTIONS: ClassVar[dict[str, type]] = {
        "network": NetworkConfig,
        "normalization": NormalizationConfig,
        "postprocess": PostprocessConfig,
    }

    network: NetworkConfig = field(default_factory=NetworkConfig)
    task: Task = setting("instance", OneOf(get_args(Task)))
    class_names: tuple[str, ...] = INSTANCE_CLASSES
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    tile_size: int = setting(256, COUNT)
    tile_overlap: int = setting(32, COUNT_OR_ZERO)
    #: The objects as the network learnt them: median equivalent diameter in (network) pixels
    #: and polarity ("bright" objects on a darker background, or "dark"); None when unknown.
    object_diameter: Optional[float] = setting(None, Range(0, open_low=True, optional=True))
    object_polarity: Optional[Polarity] = setting(None, OneOf((None,) + get_args(Polarity)))
    #: Images are resized by this factor before the network (and the result back), so objects
    #: of another size reach it at ``object_diameter``; Cellpose calls this the diameter.
    input_scale: float = setting(1.0, Range(*SCALE_RANGE))
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output (e.g. a model file's JSON); anything else
        (unknown keys, a section that is not a mapping, a value outside its rule) raises
        :class:`~napari_unet.errors.InvalidSettingError` naming the key."""
        if not isinstance(data, dict):
            raise InvalidSettingError(f"the model config is {_shown(data)}, not a mapping of "
                                      "settings")
        _check_keys(data, cls)
        data = dict(data)
        for key, kind in cls._SECTIONS.items():
            if key in data:
                section = data[key]
                if not isinstance(section, dict):
                    raise InvalidSettingError(f"{key} is {_shown(section)}, not a mapping of "
                                              "settings")
                _check_keys(section, kind, key)
                data[key] = kind(**section)
        if "class_names" in data:
            names = data["class_names"]
            if not isinstance(names, (list, tuple)):
                raise InvalidSettingError(f"class_names is {_shown(names)}, not a list of names")
            data["class_names"] = tuple(names)
        return cls(**data)


def check_config(config: ModelConfig) -> None:
    """Refuse a model config that cannot work, whether it comes from a file or from the
    library, before any network is built: each field within its rule, a network of at most
    :data:`MAX_PARAMETERS` parameters, the head matching the task and class names,
    percentiles in order and a tile overlap below the tile size. Raises
    :class:`~napari_unet.errors.InvalidSettingError` naming the field."""
    for key, kind in ModelConfig._SECTIONS.items():
        section = getattr(config, key)
        if not isinstance(section, kind):
            raise InvalidSettingError(f"{key} is {_shown(section)}, not a {kind.__name__}")
    check_network(config.network)
    check_fields(config.normalization)
    check_fields(config.postprocess)
    check_fields(config)
    net, names = config.network, config.class_names
    if not (isinstance(names, tuple) and names
            and all(isinstance(n, str) and n.strip() for n in names)):
        raise InvalidSettingError(f"class_names is {_shown(names)}, but it must be a tuple of "
                                  "non-empty names, one per output channel")
    if config.task == "instance" and net.out_channels != len(INSTANCE_CLASSES):
        raise InvalidSettingError(
            f"network.out_channels is {net.out_channels}, but an instance model has "
            f"{len(INSTANCE_CLASSES)}, one per class of {INSTANCE_CLASSES}; for other classes "
            "choose the task 'semantic'")
    if config.task == "instance" and names != INSTANCE_CLASSES:
        raise InvalidSettingError(
            f"class_names is {_shown(names)}, but an instance model's classes are "
            f"{INSTANCE_CLASSES}; for other classes choose the task 'semantic'")
    if len(names) != net.out_channels:
        raise InvalidSettingError(
            f"class_names {list(names)} name {len(names)} classes but the network has "
            f"network.out_channels {net.out_channels}; give one name per output channel")
    if config.normalization.low >= config.normalization.high:
        raise InvalidSettingError(
            f"normalization.low {config.normalization.low} is not below normalization.high "
            f"{config.normalization.high}; choose percentiles such as 1 and 99.8")
    check_tiling(config.tile_size, config.tile_overlap, where="model config")
    provenance = config.provenance
    rounds = provenance.get("fine_tune_rounds", []) if isinstance(provenance, dict) else None
    if not (isinstance(rounds, list) and all(isinstance(r, dict) for r in rounds)):
        raise InvalidSettingError(f"provenance is {_shown(provenance)}, not a mapping whose "
                                  "fine_tune_rounds (if any) is a list of mappings")


PRESETS: dict[str, ModelConfig] = {
    # Compact and fast: ~1.9 M parameters, the default for new models.
    "default": ModelConfig(network=NetworkConfig(base=16, depth=4)),
    # Twice the filters (~7.8 M parameters, 4x the compute): for training on a GPU.
    "wide": ModelConfig(network=NetworkConfig(base=32, depth=4)),
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
    """A fresh copy of a named preset, adapted to the channels and task at hand (refused
    with :class:`~napari_unet.errors.InvalidSettingError` when they cannot work)."""
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
        config.class_names = tuple(class_names or config.class_names)
        if config.class_names == INSTANCE_CLASSES:
            config.class_names = ("foreground",)
        config.network.out_channels = len(config.class_names)
    check_config(config)
    return config


def _check_keys(data: dict, cls: type, section: str = "") -> None:
    """Refuse keys ``cls`` has no field for (a typo would otherwise be dropped silently)."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise InvalidSettingError(f"unknown model config keys {sorted(map(str, unknown))}"
                                  f"{f' in {section}' if section else ''}; remove them")


def _number_text(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a config may hold anything)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "(a very large number)"
    return text if len(text) <= limit else text[: limit - 3] + "..."
