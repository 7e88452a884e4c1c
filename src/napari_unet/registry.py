"""Where models live: shipped with the package, or saved by the user.

Shipped models sit in the package's ``models/`` folder (no downloads, ever). User models
go to the platform's user data folder (``NAPARI_UNET_MODEL_DIR`` overrides it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from platformdirs import user_data_dir

from .bioimageio import is_bioimageio_package, load_bioimageio
from .errors import ModelFileError
from .model import SUFFIX, Model, load_model_file


@dataclass(frozen=True)
class ModelEntry:
    """A model found by name: where it is and whether it shipped with the package."""

    name: str
    path: Path
    shipped: bool


def shipped_dir() -> Path:
    return Path(str(resources.files("napari_unet") / "models"))


def user_dir() -> Path:
    """The user model folder (``save_user_model`` creates it when it first saves)."""
    folder = Path(os.environ.get("NAPARI_UNET_MODEL_DIR") or Path(user_data_dir("napari-unet")) / "models")
    return folder


def list_models() -> list[ModelEntry]:
    """Shipped models first, then the user's, each sorted by name."""
    entries = []
    for folder, shipped in ((shipped_dir(), True), (user_dir(), False)):
        if folder.is_dir():
            entries += [ModelEntry(p.stem, p, shipped)
                        for p in sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stem)]
    return entries


def resolve(name_or_path: str | Path) -> Path:
    """A model file path from a path, a user model name or a shipped model name."""
    path = Path(name_or_path)
    if path.suffix == SUFFIX or path.exists() or os.sep in str(name_or_path):
        return path
    for entry in reversed(list_models()):
        if entry.name == str(name_or_path):
            return entry.path
    names = ", ".join(e.name for e in list_models()) or "none"
    raise ModelFileError(
        f"no model named {name_or_path!r}; available: {names}. Pass a .safetensors path or a "
        f"name from 'napari-unet models'"
    )


def load_model(name_or_path: str | Path) -> Model:
    """Load a shipped model by name (``nuclei``, ``membrane``), a saved one, a file, or a
    bioimage.io package napari-unet exported (a ``.zip``, or its unpacked folder)."""
    path = resolve(name_or_path)
    if is_bioimageio_package(path):
        return load_bioimageio(path)
    return load_model_file(path)


def save_user_model(model: Model, name: str, overwrite: bool = False) -> Path:
    """Save into the user model folder so the model shows up by name everywhere."""
    if not name or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
        raise ModelFileError(f"{name!r} is not a valid model name; use letters, digits, '-' and '_'")
    folder = user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX}"
    model.name = name
    return model.save(path, overwrite=overwrite)
