"""A model bundle (network + config) and its self-describing, pickle-free file format.

Files are safetensors: tensors plus a JSON header. Loading parses data only, so a crafted
file cannot execute code; pickled ``.pt``/``.pth`` files are refused outright.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, check_config
from .domain import SCALE_RANGE
from .errors import InvalidSettingError, ModelFileError, ModelMismatchError
from .io import atomic_write
from .network import UNet

FORMAT_NAME = "napari-unet"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"


def model_path(path: str | Path) -> Path:
    """``path`` with the model suffix appended when missing (``a.v2`` -> ``a.v2.safetensors``)."""
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)


@dataclass
class Model:
    """A U-Net with everything needed to use it: config, normalisation, post-processing."""

    config: ModelConfig
    network: UNet
    name: str = "untitled"

    @classmethod
    def create(cls, config: ModelConfig, name: str = "untitled", seed: int | None = None) -> Model:
        """A freshly initialised model; ``seed`` makes the initial weights reproducible. A
        config that cannot work is refused (:class:`~napari_unet.errors.InvalidSettingError`)
        before the network is built."""
        check_config(config)
        if seed is not None:
            torch.manual_seed(seed)
        return cls(config=config, network=UNet(config.network), name=name)

    @property
    def in_channels(self) -> int:
        return self.config.network.in_channels

    def copy(self, name: str | None = None) -> Model:
        """A deep copy, so fine-tuning never touches the original weights."""
        return Model(copy.deepcopy(self.config), copy.deepcopy(self.network), name or self.name)

    @property
    def object_size(self) -> float | None:
        """The object diameter (pixels of the image) this model segments best: what it
        learnt, divided by the input scale a fine-tuning round chose; None when unknown."""
        trained = self.config.object_diameter
        return None if trained is None else trained / self.config.input_scale

    def for_object_size(self, diameter: float) -> Model:
        """This model (sharing its weights) set to resize images so objects of ``diameter``
        pixels reach the network at the size it learnt (Cellpose's diameter setting)."""
        if self.config.object_diameter is None:
            raise ModelMismatchError(
                f"model {self.name!r} does not record the object size it learnt, so it cannot "
                "be set to another size; fine-tune it once (or retrain) to record it")
        if not (np.isfinite(diameter) and diameter > 0):
            raise InvalidSettingError(f"the object size must be a positive number of pixels, "
                                      f"not {diameter}")
        config = ModelConfig.from_dict(self.config.to_dict())
        learnt = self.config.object_diameter
        config.input_scale = float(np.clip(learnt / diameter, *SCALE_RANGE))
        return Model(config=config, network=self.network, name=self.name)

    def check_channels(self, n_channels: int) -> None:
        """Refuse an image whose channel count the network cannot take."""
        if n_channels != self.in_channels:
            hint = ("select the channel(s) it needs or pass the right axes (e.g. axes='YX' for "
                    "one channel)" if n_channels > self.in_channels else
                    "load the image with all its channels and name them in axes (e.g. axes='CYX')")
            raise ModelMismatchError(
                f"model {self.name!r} expects {self.in_channels} channel(s) but the image has "
                f"{n_channels}; pick a model trained for {n_channels} channel(s), or {hint}"
            )

    def save(self, path: str | Path, half: bool = False, overwrite: bool = False) -> Path:
        """Write weights + JSON config atomically; ``half`` stores fp16 weights (half size).

        A tensor that fp16 cannot hold (a BatchNorm variance above 65504, say) stays fp32:
        cast, it would become infinite and the file unusable."""
        path = model_path(path)
        tensors = {}
        for key, value in self.network.state_dict().items():
            value = value.detach().to("cpu").contiguous()
            if half and value.is_floating_point() and torch.isfinite(value.half()).all():
                value = value.half()
            tensors[key] = value
        metadata = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "name": self.name,
            "config": json.dumps(self.config.to_dict()),
        }
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), overwrite=overwrite)
        return path


#: Signatures of PyTorch's pickle-based files: a zip archive (``torch.save`` since 1.6;
#: also the empty-archive record) or a pickle of protocol 2 to 5 (the legacy format).
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def file_kind(head: bytes, size: int) -> str:
    """What a file is from its first 9 bytes and its size: ``"safetensors"``, ``"pickle"``
    or ``"unknown"``.

    A safetensors file starts with its JSON header's length (8 bytes, little-endian) and
    then the header's ``{``; the length must fit in the file. That length's first byte is
    0x80 for about one header in 32, so a pickle is recognised by its whole opcode (0x80
    followed by a protocol number), never by the first byte alone.
    """
    if len(head) >= 9 and head[8:9] == b"{":
        length = int.from_bytes(head[:8], "little")
        if 2 <= length <= size - 8:
            return "safetensors"
    if head.startswith(_ZIP_SIGNATURES) or (
            len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return "pickle"
    return "unknown"


def _network_for(config: ModelConfig, tensors: dict[str, torch.Tensor], path: Path) -> UNet:
    """The network ``config`` describes, holding ``tensors``; a :class:`ModelFileError` when
    they are not its weights (names, shapes, dtypes, finite values). The parameter count is
    compared first, by arithmetic: a small file whose config describes a huge network is
    refused before that network is built."""
    implied = config.network.parameter_count
    held = sum(t.numel() for t in tensors.values())
    if implied > held:
        raise _damaged(path, f"its config and weights do not fit together (the config "
                             f"describes {implied:,} parameters, the file holds {held:,} values)")
    network = UNet(config.network)
    problem = _weights_problem(network.state_dict(), tensors)
    if problem:
        raise _damaged(path, f"its config and weights do not fit together ({problem})")
    network.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in tensors.items()}, strict=True)
    return network


def _damaged(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(f"model file {path}: {problem}; the file is damaged: copy it again "
                          "or retrain")


def _weights_problem(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]
                     ) -> str | None:
    """What keeps ``tensors`` from being loaded as the ``expected`` state (None when nothing
    does): load_state_dict would cast int8 or bool tensors silently and take NaN weights."""
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        return f"missing tensors {missing[:3]}, unexpected {extra[:3]}"
    for key, want in expected.items():
        got = tensors[key]
        if got.shape != want.shape:
            return f"tensor {key} has shape {tuple(got.shape)}, the config implies {tuple(want.shape)}"
        if want.is_floating_point() != got.is_floating_point() or got.dtype == torch.bool:
            return f"tensor {key} is {got.dtype} where the network holds {want.dtype}"
        if got.is_floating_point() and not torch.isfinite(got).all():
            return f"tensor {key} holds NaN or infinite values"
        if key.endswith("running_var") and (got < 0).any():
            return f"tensor {key} holds negative variances"
    return None


def load_model_file(path: str | Path) -> Model:
    """Load a ``.safetensors`` model file; every failure becomes a :class:`ModelFileError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; check the path or run 'napari-unet models'")
    try:
        with open(path, "rb") as fh:
            kind = file_kind(fh.read(9), path.stat().st_size)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path} ({exc.strerror}); check its permissions") from None
    if kind == "pickle":
        raise ModelFileError(
            f"{path} is a pickled PyTorch file; napari-unet refuses pickles because loading them "
            f"can run arbitrary code. Convert it to a napari-unet .safetensors model in a trusted "
            f"environment first"
        )
    if kind != "safetensors":
        raise ModelFileError(
            f"{path} is not a readable model file (it is not in the safetensors format); it may "
            f"be truncated or corrupt: copy it again or retrain"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path} is not a readable model file ({exc}); it may be truncated or corrupt: "
            f"copy it again or retrain"
        ) from None
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{path} is a safetensors file but not a napari-unet model (no napari-unet header); "
            f"train or convert one with 'napari-unet train'"
        )
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError:
        raise ModelFileError(
            f"{path} has a napari-unet header with an unreadable format version "
            f"{metadata.get('format_version')!r}; the file is damaged: copy it again or retrain"
        ) from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model format version {version}, newer than this napari-unet reads "
            f"({FORMAT_VERSION}); upgrade napari-unet (pip install -U napari-unet)"
        )
    try:
        config_data = json.loads(metadata.get("config", ""))
    except (ValueError, RecursionError) as exc:
        raise _damaged(path, f"its config is not readable JSON ({str(exc)[:100]})") from None
    config = config_from_data(config_data, path)
    return model_from_parts(config, tensors, metadata.get("name", path.stem), path)


def config_from_data(config_data: Any, path: Path) -> ModelConfig:
    """The model config that stored data (parsed JSON or YAML, not trusted) describe,
    checked by the config rules; a :class:`ModelFileError` naming ``path`` otherwise.
    Model files and bioimage.io packages share this one check."""
    try:
        return ModelConfig.from_dict(config_data)
    except (ValueError, RecursionError) as exc:  # InvalidSettingError is a ValueError too
        raise _damaged(path, str(exc) if isinstance(exc, InvalidSettingError)
                       else f"its config is not readable ({str(exc)[:100]})") from None


def model_from_parts(config: ModelConfig, tensors: dict[str, torch.Tensor], name: str,
                     path: Path) -> Model:
    """The model of a checked ``config`` holding ``tensors`` (read from ``path``), in eval
    mode; a :class:`ModelFileError` when they are not the weights of its network."""
    network = _network_for(config, tensors, path)
    network.eval()
    return Model(config=config, network=network, name=name)


__all__ = ["Model", "load_model_file", "config_from_data", "model_from_parts",
           "ModelMismatchError", "SUFFIX"]
