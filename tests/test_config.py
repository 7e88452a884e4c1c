"""Tests for napari_unet.config: presets are fresh copies; dicts round-trip; configs that
cannot work are refused (one validator, for the library and for model files)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from napari_unet.config import INSTANCE_CLASSES, ModelConfig, NetworkConfig, preset
from napari_unet.errors import InvalidSettingError
from napari_unet.model import Model
from napari_unet.network import UNet


def test_presets_are_independent_copies() -> None:
    a = preset("default")
    a.network.base = 2
    a.postprocess.min_size = 1
    b = preset("default")
    assert b.network.base == 16 and b.postprocess.min_size == 10


def test_preset_adapts_channels_and_task() -> None:
    c = preset("default", in_channels=3)
    assert c.network.in_channels == 3 and c.class_names == INSTANCE_CLASSES
    assert c.network.out_channels == 3
    s = preset("default", task="semantic")
    assert s.class_names == ("foreground",) and s.network.out_channels == 1
    m = preset("seed", class_names=("membrane", "mito"))
    assert m.network.out_channels == 2 and m.task == "semantic"
    i = preset("seed", task="instance")
    assert i.network.out_channels == 3 and i.class_names == INSTANCE_CLASSES
    with pytest.raises(ValueError, match="default"):
        preset("huge")


def test_dict_round_trip_through_json() -> None:
    c = preset("seed")
    c.provenance = {"a": [1, 2]}
    back = ModelConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c


def test_unknown_keys_are_refused() -> None:
    data = preset("default").to_dict()
    data["colour"] = "red"
    with pytest.raises(InvalidSettingError, match="colour"):
        ModelConfig.from_dict(data)
    data = preset("default").to_dict()
    data["network"]["width"] = 3
    with pytest.raises(InvalidSettingError, match=r"\[.width.\] in network"):
        ModelConfig.from_dict(data)


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("changes", [
    {}, {"norm": "none"}, {"upsampling": "nearest"}, {"upsampling": "bilinear", "norm": "none"},
    {"in_channels": 5, "out_channels": 2, "base": 3, "depth": 1}, {"base": 1, "depth": 8},
])
def test_parameter_count_is_the_networks(changes) -> None:
    """The arithmetic count that refuses huge configs before building them must be exact."""
    config = NetworkConfig(**changes)
    assert config.parameter_count == _n_params(UNet(config))


def _spoil(target, path: str, value) -> None:
    """Set the field at a dotted ``path`` (``network.depth``) of a config or its dict."""
    *parents, name = path.split(".")
    for parent in parents:
        target = target[parent] if isinstance(target, dict) else getattr(target, parent)
    if isinstance(target, dict):
        target[name] = value
    else:
        setattr(target, name, value)


@pytest.mark.parametrize("path, value, words", [
    ("network.depth", 0, "network.depth is 0, but it must be a whole number from 1 to 8"),
    ("network.depth", -1, "network.depth is -1"),
    ("network.base", 16.0, "network.base is 16.0, but it must be a whole number"),
    ("network.in_channels", True, "network.in_channels is True"),
    ("network.upsampling", "cubic", "network.upsampling is 'cubic', but it must be one of"),
    ("network.norm", None, "network.norm is None"),
    ("network.dropout", 1.0, "network.dropout is 1.0"),
    ("normalization.low", -1, "normalization.low is -1, but it must be a number from 0 to 100"),
    ("normalization.high", float("inf"), "normalization.high is inf"),
    ("normalization.invert", "yes", "normalization.invert is 'yes'"),
    ("postprocess.seed_threshold", float("nan"),
     "postprocess.seed_threshold is nan, but it must be a number from 0 to 1"),
    ("postprocess.foreground_threshold", 1.5, "postprocess.foreground_threshold is 1.5"),
    ("postprocess.min_size", -2, "postprocess.min_size is -2"),
    ("task", "panoptic", "task is 'panoptic', but it must be one of 'instance', 'semantic'"),
    ("tile_size", 0, "tile_size is 0"),
    ("input_scale", 10.0, "input_scale is 10.0, but it must be a number from 0.25 to 4"),
    ("object_diameter", 0, "object_diameter is 0, but it must be a positive finite number or None"),
    ("object_polarity", "grey", "object_polarity is 'grey'"),
    ("class_names", ("a", "b", "c"), "class_names is ('a', 'b', 'c'), but an instance model's"),
    ("class_names", (), "class_names is ()"),
    ("provenance", {"fine_tune_rounds": 3}, "provenance is"),
])
def test_the_library_refuses_configs_that_cannot_work(path, value, words) -> None:
    """One validator for every config: changed to a bad value before a model is created, or
    read from a dict with one, it is refused naming the field, the value and what is allowed."""
    config = preset("default")
    _spoil(config, path, value)
    with pytest.raises(InvalidSettingError, match=re.escape(words)):
        Model.create(config)
    data = preset("default").to_dict()
    _spoil(data, path, value)
    with pytest.raises(InvalidSettingError, match=re.escape(words)):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize("changes, words", [
    ({"network.out_channels": 1}, "network.out_channels is 1, but an instance model has 3"),
    ({"normalization.low": 50.0, "normalization.high": 10.0},
     "normalization.low 50.0 is not below normalization.high 10.0"),
    ({"task": "semantic", "class_names": ("membrane",)},
     "class_names ['membrane'] name 1 classes but the network has network.out_channels 3"),
    ({"tile_size": 64, "tile_overlap": 64}, "tile overlap 64 is not below the tile size 64"),
])
def test_fields_that_contradict_each_other_are_refused(changes, words) -> None:
    config = preset("default")
    for path, value in changes.items():
        _spoil(config, path, value)
    with pytest.raises(InvalidSettingError, match=re.escape(words)):
        Model.create(config)


def test_a_huge_network_is_refused_before_it_is_built(monkeypatch) -> None:
    """base 256 at depth 8 is ~1.3e11 parameters (500 GB): refused by arithmetic, whether
    the config is made, changed afterwards or handed to the network directly."""
    with pytest.raises(InvalidSettingError, match="network.base 256, depth 8 .* parameters"):
        NetworkConfig(base=256, depth=8)
    config = preset("default")
    config.network.base, config.network.depth = 256, 8
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", _never_built)
    for build in (lambda: Model.create(config), lambda: UNet(config.network)):
        with pytest.raises(InvalidSettingError, match="smaller base or depth"):
            build()


def _never_built(*args, **kwargs) -> None:
    raise AssertionError("a layer was built for a config that is refused")


def test_preset_refuses_impossible_channels() -> None:
    with pytest.raises(InvalidSettingError, match="network.in_channels is -3"):
        preset("default", in_channels=-3)
    with pytest.raises(InvalidSettingError, match="class_names is"):
        preset("seed", class_names=("",))
