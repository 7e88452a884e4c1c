"""napari sample-data hooks: the bundled real samples, opened like the reader opens files."""

from __future__ import annotations

from ._reader import image_layer_data
from .sample_data import load_sample


def _sample(name: str) -> list[tuple]:
    return image_layer_data(load_sample(name), name)


def nuclei_fluo() -> list[tuple]:
    """2-D fluorescence nuclei (DSB 2018)."""
    return _sample("nuclei_fluo")


def em_membrane() -> list[tuple]:
    """2-D electron microscopy of neural tissue (ISBI 2012)."""
    return _sample("em_membrane")


def embryo_3d() -> list[tuple]:
    """3-D nuclei of a mouse embryo (QCANet), anisotropic Z spacing."""
    return _sample("embryo_3d")
