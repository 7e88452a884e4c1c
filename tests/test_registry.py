"""Tests for napari_unet.registry: user models by name, shipped models, unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _data import small_model

from napari_unet.errors import ModelFileError, OutputWriteError
from napari_unet.registry import list_models, load_model, resolve, save_user_model


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(folder))
    return folder


def test_saved_user_model_loads_by_name_and_is_listed(model_dir: Path) -> None:
    model = small_model(seed=5)
    path = save_user_model(model, "my-nuclei_1")
    assert path == model_dir / "my-nuclei_1.safetensors" and path.is_file()
    loaded = load_model("my-nuclei_1")
    assert loaded.name == "my-nuclei_1"
    assert torch.equal(loaded.network.head.weight, model.network.head.weight)
    entries = [e for e in list_models() if not e.shipped]
    assert [(e.name, e.path) for e in entries] == [("my-nuclei_1", path)]


def test_save_user_model_refuses_to_overwrite(model_dir: Path) -> None:
    save_user_model(small_model(seed=1), "m")
    before = (model_dir / "m.safetensors").read_bytes()
    with pytest.raises(OutputWriteError, match="exists"):
        save_user_model(small_model(seed=2), "m")
    assert (model_dir / "m.safetensors").read_bytes() == before
    save_user_model(small_model(seed=2), "m", overwrite=True)
    assert (model_dir / "m.safetensors").read_bytes() != before


@pytest.mark.parametrize("name", ["", "a/b", "..\\x", ".hidden", "c:d", "what?"])
def test_invalid_names(model_dir: Path, name: str) -> None:
    with pytest.raises(ModelFileError, match="not a valid model name"):
        save_user_model(small_model(), name)
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_unknown_name_lists_available_models(model_dir: Path) -> None:
    save_user_model(small_model(), "alpha")
    save_user_model(small_model(), "beta")
    with pytest.raises(ModelFileError) as info:
        load_model("gamma")
    message = str(info.value)
    assert "gamma" in message and "alpha" in message and "beta" in message


def test_paths_resolve_to_themselves(model_dir: Path, tmp_path: Path) -> None:
    path = small_model().save(tmp_path / "elsewhere.safetensors")
    assert resolve(path) == path
    assert load_model(str(path)).name == "small"
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


def test_user_model_shadows_shipped_one(model_dir: Path) -> None:
    shipped = {e.name for e in list_models() if e.shipped}
    assert {"nuclei", "membrane"} <= shipped
    name = "nuclei"
    save_user_model(small_model(seed=7), name)
    assert load_model(name).config.network.base == 8



def test_shipped_models_are_listed_by_name() -> None:
    """By name, not by file name: 'nuclei' comes before 'nuclei-he' (as files, '-' sorts
    before '.', which put nuclei-he first in the widget's model list)."""
    shipped = [e.name for e in list_models() if e.shipped]
    assert shipped == sorted(shipped) and {"membrane", "nuclei", "nuclei-he"} <= set(shipped)
