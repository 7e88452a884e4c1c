"""Tests for napari_unet.config: presets are fresh copies; dicts round-trip."""

from __future__ import annotations

import json

import pytest

from napari_unet.config import INSTANCE_CLASSES, ModelConfig, preset


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
    with pytest.raises(TypeError, match="colour"):
        ModelConfig.from_dict(data)
    data = preset("default").to_dict()
    data["network"]["width"] = 3
    with pytest.raises(TypeError):
        ModelConfig.from_dict(data)
