"""Tests for napari_unet.model: the safetensors model file, its safety and its errors."""

from __future__ import annotations

import copy
import functools
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import small_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from napari_unet.config import INSTANCE_CLASSES
from napari_unet.errors import ModelFileError, ModelMismatchError, OutputWriteError
from napari_unet.model import Model, load_model_file
from napari_unet.segment import segment


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _logits(model: Model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.network.eval()(x)


@pytest.fixture(scope="module")
def model() -> Model:
    m = small_model(seed=3)
    # Non-trivial batch-norm statistics, so they must be saved and restored too.
    m.network.train()
    with torch.no_grad():
        m.network(torch.rand(2, 1, 32, 32) * 3)
    m.network.eval()
    return m


@pytest.fixture(scope="module")
def saved(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("model") / "m.safetensors")


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata())


def test_round_trip_gives_identical_outputs(model: Model, saved: Path) -> None:
    loaded = load_model_file(saved)
    assert not loaded.network.training
    x = torch.randn(1, 1, 40, 24)
    assert torch.equal(_logits(model, x), _logits(loaded, x))
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, loaded.network.state_dict()[key]), key


def test_half_round_trip_is_near_identical_and_smaller(model: Model, saved: Path,
                                                      tmp_path: Path) -> None:
    path = model.save(tmp_path / "half", half=True)
    assert path.suffix == ".safetensors"
    with safe_open(str(path), framework="pt") as fh:
        assert fh.get_tensor("head.weight").dtype == torch.float16
    assert path.stat().st_size < 0.6 * saved.stat().st_size
    loaded = load_model_file(path)
    assert loaded.network.head.weight.dtype == torch.float32  # runs in fp32 again
    x = torch.randn(1, 1, 32, 32)
    a, b = _logits(model, x), _logits(loaded, x)
    assert not torch.equal(a, b)  # really stored at lower precision ...
    assert (a - b).abs().max() <= 1e-2 * a.abs().max()  # ... but close (measured ~1e-3)


def test_half_keeps_fp32_what_fp16_cannot_hold(model: Model, tmp_path: Path) -> None:
    """A BatchNorm variance above fp16's 65504 (seen after a GPU run with inverted images)
    became infinite in a --half file, which then refused to load."""
    big = copy.deepcopy(model)
    key, var = next((k, v) for k, v in big.network.state_dict().items() if k.endswith("running_var"))
    var[0] = 1e6
    path = big.save(tmp_path / "big", half=True)
    loaded = load_model_file(path)
    assert loaded.network.state_dict()[key][0] == 1e6
    with safe_open(str(path), framework="pt") as fh:
        assert fh.get_tensor("head.weight").dtype == torch.float16  # the rest still halved


def test_config_and_provenance_survive(tmp_path: Path) -> None:
    m = small_model(seed=1, name="nuclei-v2")
    m.config.normalization.low, m.config.normalization.high = 2.0, 99.5
    m.config.postprocess.seed_threshold = 0.85
    m.config.postprocess.min_size = 7
    m.config.tile_size, m.config.tile_overlap = 128, 16
    m.config.provenance = {"data": "/x/train", "steps": 12, "nested": {"val": [1, 2.5, None]}}
    loaded = load_model_file(m.save(tmp_path / "m.safetensors"))
    assert loaded.name == "nuclei-v2"
    assert loaded.config.to_dict() == m.config.to_dict()
    assert loaded.config.class_names == ("background", "interior", "boundary")
    assert loaded.config.network.base == 8 and loaded.config.network.depth == 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model_file(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -10])
def test_truncated_file(saved: Path, tmp_path: Path, keep) -> None:
    data = saved.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:n])
    with pytest.raises(ModelFileError):
        load_model_file(bad)


def test_random_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "noise.safetensors"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError):
        load_model_file(bad)


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not a napari-unet model"):
        load_model_file(path)


def test_newer_format_version_asks_to_upgrade(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    save_file(load_file(str(saved)), str(path), metadata={**_metadata(saved), "format_version": "99"})
    with pytest.raises(ModelFileError, match="upgrade"):
        load_model_file(path)


@pytest.mark.parametrize("version", ["abc", "1.5", ""])
def test_unreadable_format_version(saved: Path, tmp_path: Path, version: str) -> None:
    path = tmp_path / "odd.safetensors"
    save_file(load_file(str(saved)), str(path), metadata={**_metadata(saved), "format_version": version})
    with pytest.raises(ModelFileError):
        load_model_file(path)


def test_header_and_weights_that_do_not_fit(saved: Path, tmp_path: Path) -> None:
    meta = _metadata(saved)
    config = json.loads(meta["config"])
    config["network"]["base"] = 16
    path = tmp_path / "mixed.safetensors"
    save_file(load_file(str(saved)), str(path), metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model_file(path)
    bad_json = tmp_path / "json.safetensors"
    save_file(load_file(str(saved)), str(bad_json), metadata={**meta, "config": "{not json"})
    with pytest.raises(ModelFileError):
        load_model_file(bad_json)


def test_malicious_pickles_are_refused_without_running_them(tmp_path: Path) -> None:
    # Positive control: the payload really runs when a pickle is loaded the unsafe way.
    control_marker = tmp_path / "control-ran"
    control = tmp_path / "control.pt"
    torch.save(_Payload(control_marker), control)
    torch.load(control, weights_only=False)
    assert control_marker.exists()

    marker = tmp_path / "payload-ran"
    files = []
    for i, (suffix, kwargs) in enumerate([
        (".pt", {}),
        (".safetensors", {}),  # a zip-format torch.save renamed to look like a model
        (".safetensors", {"_use_new_zipfile_serialization": False}),  # legacy format
    ]):
        path = tmp_path / f"evil{i}{suffix}"
        torch.save(_Payload(marker), path, **kwargs)
        files.append(path)
    raw = tmp_path / "evil-raw.safetensors"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=0))  # no \x80 opcode at all
    files.append(raw)
    for path in files:
        with pytest.raises(ModelFileError):
            load_model_file(path)
    assert not marker.exists()


def test_pickles_get_a_message_about_pickles(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match="pickle"):
        load_model_file(path)


def test_a_header_length_of_128_mod_256_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    # A safetensors file starts with its header length (8 bytes, little-endian); for about
    # one name/config in 32 its first byte is 0x80, the first byte of most pickles too.
    model = small_model(seed=4)
    for extra in range(256):
        name = "nuclei" + "x" * extra
        model.name = name
        path = model.save(tmp_path / f"m{extra}.safetensors", overwrite=True)
        if path.read_bytes()[0] == 0x80:
            break
    else:  # pragma: no cover - the header grows by 8 bytes at most per step
        pytest.fail("no name gave a header length of 128 mod 256")
    loaded = load_model_file(path)
    assert loaded.name == name
    x = torch.rand(1, 1, 32, 32)
    np.testing.assert_array_equal(_logits(loaded, x).numpy(), _logits(model, x).numpy())


def test_torch_files_are_recognised_by_their_signature(tmp_path: Path) -> None:
    tensors = {"w": torch.zeros(2)}
    zipped, legacy = tmp_path / "zip.safetensors", tmp_path / "legacy.safetensors"
    torch.save(tensors, zipped)
    torch.save(tensors, legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        with pytest.raises(ModelFileError, match="pickle"):
            load_model_file(path)
    # Bytes that only begin like a pickle or a zip are not called one.
    for i, head in enumerate([b"\x80", b"PK", b"\x80\x00\x00\x00\x00\x00\x00\x00{"]):
        path = tmp_path / f"odd{i}.safetensors"
        path.write_bytes(head)
        with pytest.raises(ModelFileError, match="not a readable model file"):
            load_model_file(path)


def test_channel_mismatch_is_reported_by_segment() -> None:
    rgb_model = small_model(in_channels=3)
    with pytest.raises(ModelMismatchError, match="3 channel"):
        segment(np.zeros((32, 32), np.uint8), rgb_model, device="cpu")
    with pytest.raises(ModelMismatchError):
        segment(np.zeros((2, 32, 32), np.uint8), rgb_model, axes="CYX", device="cpu")


def test_save_never_overwrites_silently(model: Model, tmp_path: Path) -> None:
    path = model.save(tmp_path / "m.safetensors")
    before = path.read_bytes()
    other = small_model(seed=99)
    with pytest.raises(OutputWriteError, match="exists"):
        other.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left
    other.save(path, overwrite=True)
    assert path.read_bytes() != before
    assert torch.equal(load_model_file(path).network.head.weight, other.network.head.weight)


def test_copy_is_independent(model: Model) -> None:
    twin = model.copy("twin")
    with torch.no_grad():
        twin.network.head.weight.add_(1.0)
    twin.config.postprocess.min_size = 999
    assert not torch.equal(twin.network.head.weight, model.network.head.weight)
    assert model.config.postprocess.min_size != 999
    assert twin.name == "twin"


def test_a_model_set_to_another_object_size_shares_its_weights() -> None:
    import napari_unet
    from napari_unet.errors import InvalidSettingError, ModelMismatchError

    nuclei = napari_unet.load_model("nuclei")
    assert nuclei.object_size == pytest.approx(20.3, abs=0.05)
    big = nuclei.for_object_size(2 * nuclei.object_size)
    assert big.config.input_scale == pytest.approx(0.5)
    assert big.object_size == pytest.approx(2 * nuclei.object_size)
    assert big.network is nuclei.network and nuclei.config.input_scale == 1.0
    assert nuclei.for_object_size(1000).config.input_scale == 0.25  # clipped to 4x
    for bad in (0, -3, float("nan"), float("inf")):
        with pytest.raises(InvalidSettingError, match="positive"):
            nuclei.for_object_size(bad)
    unknown = napari_unet.Model.create(napari_unet.config.preset("default"))
    assert unknown.object_size is None
    with pytest.raises(ModelMismatchError, match="does not record"):
        unknown.for_object_size(30)


@pytest.mark.parametrize("field, value", [
    ("input_scale", float("nan")), ("input_scale", 0.0), ("input_scale", 100.0),
    ("input_scale", "2"), ("object_diameter", -5.0), ("object_diameter", float("inf")),
    ("object_polarity", "purple"),
])
def test_model_files_with_bad_domain_settings_are_refused(tmp_path, field, value) -> None:
    """What a fine-tuning round learns (scale, size, polarity) comes back from the file as
    untrusted input: refused at load, before it can reach the resizing."""
    import napari_unet
    from napari_unet.errors import ModelFileError

    model = napari_unet.Model.create(napari_unet.config.preset("default"), name="m")
    setattr(model.config, field, value)
    path = model.save(tmp_path / "m.safetensors")
    with pytest.raises(ModelFileError, match=field):
        napari_unet.model.load_model_file(path)


def test_model_files_with_bad_invert_are_refused(tmp_path) -> None:
    import napari_unet
    from napari_unet.errors import ModelFileError

    model = napari_unet.Model.create(napari_unet.config.preset("default"), name="m")
    model.config.normalization.invert = "yes"
    path = model.save(tmp_path / "m.safetensors")
    with pytest.raises(ModelFileError, match="invert"):
        napari_unet.model.load_model_file(path)


def _rewrite(saved: Path, path: Path, config=None, tensors=None) -> Path:
    """A copy of the model file ``saved`` with another config (a dict, written as JSON with
    NaN and Infinity as Python writes them) and/or other tensors."""
    meta = _metadata(saved)
    if config is not None:
        meta["config"] = json.dumps(config)
    save_file(load_file(str(saved)) if tensors is None else tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("path, value, words", [
    ("network.depth", 0, "network.depth is 0, but it must be a whole number from 1 to 8"),
    ("network.depth", -1, "network.depth is -1"),
    ("tile_size", 0, "tile_size is 0"),
    ("normalization.low", -5, "normalization.low is -5, but it must be a number from 0 to 100"),
    ("normalization.high", 150, "normalization.high is 150"),
    ("normalization.low", 99.9, "normalization.low 99.9 is not below normalization.high 99.8"),
    ("network.out_channels", 1, "network.out_channels is 1, but an instance model has 3"),
    ("task", "panoptic", "task is 'panoptic'"),
    ("network.upsampling", "cubic", "network.upsampling is 'cubic'"),
    ("class_names", ["fg"], "class_names is ('fg',), but an instance model's classes are"),
    ("postprocess.seed_threshold", float("nan"), "postprocess.seed_threshold is nan"),
    ("postprocess.foreground_threshold", -0.5, "postprocess.foreground_threshold is -0.5"),
    ("network.base", 10**12, "network.base 1000000000000, depth 3"),
    ("network", [1, 2], "network is [1, 2], not a mapping of settings"),
    ("class_names", "abc", "class_names is 'abc', not a list of names"),
])
def test_model_files_whose_config_cannot_work_are_refused(saved: Path, tmp_path: Path,
                                                          monkeypatch, path, value, words) -> None:
    """A model file's config is untrusted: checked whole, before any network is built, and
    refused naming the field and the fix."""
    config = json.loads(_metadata(saved)["config"])
    *parents, name = path.split(".")
    target = config
    for parent in parents:
        target = target[parent]
    target[name] = value
    bad = _rewrite(saved, tmp_path / "bad.safetensors", config)
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", _never_built)
    with pytest.raises(ModelFileError, match=re.escape(words)) as info:
        load_model_file(bad)
    assert "copy it again or retrain" in str(info.value) and "\n" not in str(info.value)


def _never_built(*args, **kwargs) -> None:
    raise AssertionError("a layer was built for a model file that is refused")


def test_a_small_file_describing_a_huge_network_is_refused_before_building_it(
        saved: Path, tmp_path: Path, monkeypatch) -> None:
    """base 256 describes ~58 M parameters (a 230 MB network) where the file holds 0.12 M
    values: the count, done by arithmetic, refuses it before anything is allocated."""
    config = json.loads(_metadata(saved)["config"])
    config["network"]["base"] = 256
    bad = _rewrite(saved, tmp_path / "big.safetensors", config)
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", _never_built)
    with pytest.raises(ModelFileError, match=r"do not fit together \(the config describes "
                                             r"[\d,]+ parameters, the file holds [\d,]+ values"):
        load_model_file(bad)


@pytest.mark.parametrize("spoil, words", [
    (lambda t: t.update({"head.weight": torch.full_like(t["head.weight"], float("nan"))}),
     "tensor head.weight holds NaN or infinite values"),
    (lambda t: t.update({"head.bias": torch.tensor([0.0, float("inf"), 0.0])}),
     "tensor head.bias holds NaN"),
    (lambda t: t.update({k: v.to(torch.int8) for k, v in t.items() if v.is_floating_point()}),
     "is torch.int8 where the network holds torch.float32"),
    (lambda t: t.update({"head.bias": torch.ones(3, dtype=torch.bool)}), "tensor head.bias is torch.bool"),
    (lambda t: t.update({"head.weight": t["head.weight"].reshape(3, 8, 1)}),
     "tensor head.weight has shape (3, 8, 1), the config implies (3, 8, 1, 1)"),
    (lambda t: t.pop("head.bias"), "missing tensors ['head.bias']"),
    (lambda t: t.update({"extra": torch.zeros(2)}), "unexpected ['extra']"),
    (lambda t: t.update({"bottleneck.1.running_var": -t["bottleneck.1.running_var"] - 1}),
     "tensor bottleneck.1.running_var holds negative variances"),
])
def test_tensors_that_are_not_the_configs_weights_are_refused(saved: Path, tmp_path: Path,
                                                              spoil, words) -> None:
    """load_state_dict would cast int8 or bool weights silently and take NaN ones, which
    predict nothing; every tensor must have the name, shape and kind the config implies."""
    tensors = load_file(str(saved))
    spoil(tensors)
    bad = _rewrite(saved, tmp_path / "bad.safetensors", tensors=tensors)
    with pytest.raises(ModelFileError, match=re.escape(words)):
        load_model_file(bad)


# --------------------------------------------------------------------------- property

_WORDS = ["batch", "none", "nearest", "bilinear", "transpose", "instance", "semantic",
          "bright", "dark"]
_PLAUSIBLE = st.sampled_from([
    0, 1, 2, 3, 8, 16, 32, 64, 0.0, 0.25, 0.5, 1.0, 4.0, 50.0, 99.8, True, False, None,
    *_WORDS, ["fg"], ["a", "b", "c"], list(INSTANCE_CLASSES), {}, {"fine_tune_rounds": []},
])
_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-2**200, 2**200) | st.text(max_size=6)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)
#: Values for any field: some that could be valid somewhere, some junk.
_VALUES = _PLAUSIBLE | st.integers(0, 64) | st.floats(0, 100) | _JUNK


def _like(value) -> st.SearchStrategy:
    """Values of the JSON type of a field's ``value``, many of them valid for it."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(0, 2**40)
    if isinstance(value, float):
        return st.floats(0, 1) | st.floats(0, 100) | st.floats()
    if isinstance(value, str):
        return st.sampled_from(_WORDS)
    return _PLAUSIBLE


@functools.lru_cache(maxsize=1)
def _property_file() -> tuple[dict[str, str], dict[str, torch.Tensor], list[str]]:
    """A small model's file metadata (config included), its tensors, and the dotted paths
    of its config's sections and fields, plus unknown ones (built once, lazily: building
    it seeds torch's global RNG)."""
    model = small_model(seed=5)
    data = model.config.to_dict()
    paths = []
    for key, value in data.items():
        paths += [f"{key}.{name}" for name in value] if isinstance(value, dict) else [key]
    paths += [key for key, value in data.items() if isinstance(value, dict)]
    paths += ["provenance.fine_tune_rounds", "colour", "network.colour", ""]  # "": all of it
    meta = {"format": "napari-unet", "format_version": "1", "name": "p",
            "config": json.dumps(data)}
    return meta, dict(model.network.state_dict()), paths


_SPOILS = {
    "nan": lambda t: t.masked_fill(torch.ones_like(t, dtype=torch.bool), float("nan"))
    if t.is_floating_point() else t,
    "int8": lambda t: t.to(torch.int8),
    "flat": lambda t: t.reshape(-1),
    "double": lambda t: torch.cat([t.reshape(-1), t.reshape(-1)]),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_config_in_a_model_file_loads_and_predicts_or_is_refused(data, tmp_path_factory
                                                                     ) -> None:
    """Mutated configs (any value in any field or section: wrong types, NaN, inf, huge
    numbers, nested junk, unknown keys) and spoiled tensors: a file either loads and the
    model predicts, or it raises ModelFileError; never another exception. Whatever the
    values, no network larger than the file's tensors is ever built."""
    meta, tensors, paths = _property_file()
    config = json.loads(meta["config"])
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(paths))
        if not path:
            config = data.draw(_VALUES)
            continue
        *parents, name = path.split(".")
        target = config
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[name] = data.draw(_like(target.get(name)) | _VALUES)
    tensors = dict(tensors)
    spoil = data.draw(st.none() | st.sampled_from(sorted(_SPOILS)))
    if spoil:
        key = data.draw(st.sampled_from(sorted(tensors)))
        tensors[key] = _SPOILS[spoil](tensors[key])
    path = tmp_path_factory.mktemp("property") / "m.safetensors"
    save_file(tensors, str(path), metadata={**meta, "config": json.dumps(config)})
    try:
        model = load_model_file(path)
    except ModelFileError:
        return
    image = np.random.default_rng(0).integers(0, 255, (24, 24)).astype(np.uint8)
    labels = segment(image, model, device="cpu")
    assert labels.shape == (24, 24) and labels.dtype.kind == "u"
