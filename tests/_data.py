"""Shared helpers for the core tests: small real crops, small models, tiny data folders.

Functions take the data root (the ``real_data`` fixture of ``conftest.py``: ``tests/data``)
as an argument, so every test states which real data it uses. Inputs are read with imageio
and tifffile directly, so core tests do not depend on ``napari_unet.io``.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi

from napari_unet.config import ModelConfig, NetworkConfig, preset
from napari_unet.model import Model

# DSB 2018 fluorescence images of 256x256 with many nuclei (see manifest.csv).
DSB_TRAIN = (
    "003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1",  # 36 nuclei
    "0287e7ee5b007c91ae2bd7628d09735e70496bc6127ecb7f3dd043e04ce37426",  # 62
    "04acab7636c4cf61d288a5962f15fa456b7bde31a021e5deedfbf51288e4001e",  # 82
    "05a8f65ebd0b30d3b210f30b4d640c847c2e710d0d135e0aeeaccbe1988e3b6e",  # 26
)
DSB_TEST = (
    "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552",  # 27 nuclei
    "0ddd8deaf1696db68b00c600601c6a74a0502caaf274222c8367bdc31458ae7e",  # 32
)
QCANET = "qcanet_mouse_embryo_3d/train/images/8_cell_stage.tif"


def dsb_rgba(root: Path, stem: str, split: str = "train") -> np.ndarray:
    """The (Y, X, 4) uint8 PNG as stored."""
    return np.asarray(iio.imread(root / "dsb2018_fluo" / split / "images" / f"{stem}.png"))


def dsb_pair(root: Path, stem: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """A gray (Y, X) uint8 image (the PNG's red channel; these PNGs are gray) and its
    uint16 instance mask."""
    rgba = dsb_rgba(root, stem, split)
    mask = np.asarray(tifffile.imread(root / "dsb2018_fluo" / split / "masks" / f"{stem}.tif"))
    return rgba[..., 0], mask


def dsb_crop(root: Path, stem: str, size: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The top-left ``size`` x ``size`` crop of a DSB image and its mask."""
    image, mask = dsb_pair(root, stem, split)
    return image[:size, :size].copy(), mask[:size, :size].copy()


def qcanet_stack(root: Path) -> np.ndarray:
    """The uint16 ZYX training stack of the QCANet embryo: in ``tests/data`` its top-left
    (28, 92, 93) corner of the (51, 120, 122) original, enough for every slice the tests take."""
    return np.asarray(tifffile.imread(root / QCANET))


def small_config(in_channels: int = 1, task: str = "instance") -> ModelConfig:
    """The 'default' preset shrunk to base 8, depth 3 (~0.12 M parameters) for speed."""
    config = preset("default", in_channels=in_channels, task=task)
    config.network.base = 8
    config.network.depth = 3
    return config


def small_model(seed: int = 0, in_channels: int = 1, task: str = "instance",
                name: str = "small") -> Model:
    model = Model.create(small_config(in_channels, task), name=name, seed=seed)
    model.network.eval()
    return model


def pair_folder(folder: Path, root: Path, stems, split: str = "train") -> Path:
    """``folder/images`` + ``folder/masks`` holding symlinks to DSB pairs."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for stem in stems:
        base = root / "dsb2018_fluo" / split
        os.symlink(base / "images" / f"{stem}.png", folder / "images" / f"{stem}.png")
        os.symlink(base / "masks" / f"{stem}.tif", folder / "masks" / f"{stem}.tif")
    return folder


class IntensityNet(torch.nn.Module):
    """A stand-in network with predictable output: bright = nucleus interior.

    Logits come from the (normalised, channel-averaged) intensity: background where it is
    below ~0.35, interior where it is above. It lets segmentation plumbing (axes, ids,
    stitching, dask) be tested on real images with real objects, without a trained model.
    """

    def __init__(self, in_channels: int = 1, level: float = 0.35, gain: float = 12.0) -> None:
        super().__init__()
        self.config = NetworkConfig(in_channels=in_channels, out_channels=3, base=1, depth=3)
        self.level, self.gain = level, gain
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # so .to()/.parameters() work

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x.float().mean(1, keepdim=True) - self.level) * self.gain
        return torch.cat([-v, v, torch.zeros_like(v)], 1)


class DarkNet(torch.nn.Module):
    """A one-class (sigmoid) stand-in: dark pixels are the class, e.g. EM membranes."""

    def __init__(self, level: float = 0.3, gain: float = 12.0) -> None:
        super().__init__()
        self.config = NetworkConfig(in_channels=1, out_channels=1, base=1, depth=3)
        self.level, self.gain = level, gain
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.level - x.float()) * self.gain


def intensity_model(in_channels: int = 1) -> Model:
    config = small_config(in_channels)
    config.postprocess.min_size = 10
    return Model(config=config, network=IntensityNet(in_channels), name="intensity")


def membrane_model() -> Model:
    config = small_config(task="semantic")
    return Model(config=config, network=DarkNet(), name="dark")


class TickingClock:
    """A stand-in for the ``time`` module of napari_unet.training: every ``perf_counter()``
    reading is one second later, so time budgets are tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def outlines_painted_back(labels: np.ndarray, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """What a user leaves after fixing a model that drew every nucleus ``width`` pixels too
    thin: the missing outline of each painted back with a new label (the brush's "new"
    label, not the object's own), and the painted pixels as the mask."""
    core = np.zeros_like(labels)
    for i, box in enumerate(ndi.find_objects(labels), 1):
        if box is not None:
            obj = labels[box] == i
            inner = ndi.binary_erosion(obj, iterations=width)
            core[box][inner if inner.any() else obj] = i  # the smallest were drawn right
    painted = (labels > 0) & (core == 0)
    fixed = np.where(painted, labels + int(labels.max()), core)
    return fixed, painted
