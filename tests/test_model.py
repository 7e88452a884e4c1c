"""Tests for napari_unet.model: the safetensors model file, its safety and its errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from _data import small_model
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
    assert nuclei.object_size == pytest.approx(20.3)
    big = nuclei.for_object_size(40.6)
    assert big.config.input_scale == pytest.approx(0.5) and big.object_size == pytest.approx(40.6)
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
