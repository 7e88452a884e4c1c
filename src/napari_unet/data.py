"""Training data: folders of image/mask pairs, loaded once into normalised samples.

The layout is ``<folder>/images/<name>.*`` with ``<folder>/masks/<name>.*`` (same stem),
the layout of every data set in ``shared/data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .axes import fit_channels, make_layout
from .config import ModelConfig
from .domain import resize_labels, resize_plane, scaled_shape
from .errors import DatasetError, InvalidImageError, InvalidLabelsError
from .io import check_labels, read_image, read_mask
from .normalize import channel_percentiles, normalize
from .targets import labels_to_target

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass
class Sample:
    """One training image: normalised (C, Y, X) input, target, and per-pixel weight.

    ``weight`` is 1 where the target is ground truth and 0 where nobody annotated; when
    that is only part of the image, training patches are drawn around the annotated pixels.
    ``soft`` holds (K, Y, X)
    probabilities of the model being fine-tuned: where the weight is 0, training keeps the
    new model close to them instead of leaving those pixels free to drift.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    labels: np.ndarray
    soft: np.ndarray | None = None

    @property
    def focus(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(object, background) coordinates of supervised pixels when only part of the
        image is supervised, so patches can be centred on both classes equally often."""
        where = self.weight > 0
        if where.all():
            return None
        fg = where & (self.target > 0 if self.target.ndim == 2 else self.target.any(0))
        return np.argwhere(fg), np.argwhere(where & ~fg)


def to_channels(image: np.ndarray, axes: str | None, n_channels: int, rgb: str = "auto"
                ) -> np.ndarray:
    """(C, Y, X) with the model's channel count; RGB(A) becomes gray for 1-channel models
    (by ``rgb``, :mod:`napari_unet.color`)."""
    layout = make_layout(image, axes, n_channels)
    if layout.stack_axes:
        raise InvalidImageError(
            f"training images must be 2D planes, got axes {layout.axes!r}; split stacks into planes"
        )
    arr = np.asarray(fit_channels(layout.to_canonical(image), n_channels, rgb))
    if arr.shape[0] != n_channels:
        raise InvalidImageError(
            f"image has {arr.shape[0]} channel(s) but the model takes {n_channels}; "
            f"choose a preset/model with in_channels={arr.shape[0]}"
        )
    return arr


def make_sample(name: str, image: np.ndarray, labels: np.ndarray, config: ModelConfig,
                axes: str | None = None, weight: np.ndarray | None = None,
                invert_masks: bool = False, percentiles: np.ndarray | None = None) -> Sample:
    """Normalise an image and derive its target, checking that shapes agree.

    ``percentiles`` lets a plane of a stack share the stack's normalisation, as in
    :func:`~napari_unet.segment.segment`; by default the plane's own are used. The
    config's ``normalization.invert`` and ``input_scale`` apply as at prediction time.
    """
    planes = to_channels(image, axes, config.network.in_channels)
    labels = np.asarray(labels)
    if labels.shape != planes.shape[1:]:
        raise InvalidLabelsError(
            f"{name}: labels of shape {labels.shape} do not match the image plane "
            f"{planes.shape[1:]}; use labels drawn on this image"
        )
    check_labels(labels, what=f"the labels of {name}")
    if percentiles is None:
        percentiles = channel_percentiles(planes, config.normalization, channel_axis=0)
    norm = normalize(planes, percentiles, config.normalization.invert)
    return normalized_sample(name, norm, labels, config, weight, invert_masks)


def normalized_sample(name: str, norm: np.ndarray, labels: np.ndarray, config: ModelConfig,
                      weight: np.ndarray | None = None, invert_masks: bool = False) -> Sample:
    """A sample of a (C, Y, X) image already normalised as the model sees it, and its
    checked labels: resized by the config's ``input_scale``, with the training target."""
    if weight is None:
        weight = np.ones(labels.shape, dtype=np.float32)
    if config.input_scale != 1.0:
        shape = scaled_shape(labels.shape, config.input_scale)
        norm = resize_plane(norm, shape)
        labels, weight = resize_labels(labels, shape), resize_labels(weight, shape)
    target = labels_to_target(labels, config.task, config.network.out_channels, invert_masks)
    return Sample(name, norm, target, weight.astype(np.float32), labels)


def find_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) path pairs under ``folder/images`` and ``folder/masks``, sorted by name."""
    folder = Path(folder)
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DatasetError(
            f"{folder} must contain 'images/' and 'masks/' sub-folders with files of the same "
            f"name stem (e.g. images/a.png with masks/a.tif)"
        )
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = [
        (p, masks[p.stem])
        for p in sorted(images_dir.iterdir(), key=_natural_key)
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in masks
    ]
    if not pairs:
        raise DatasetError(
            f"no image/mask pairs found in {folder}: each images/<name> needs masks/<name>.tif or .png"
        )
    return pairs


def _natural_key(path: Path) -> tuple:
    """Sort '2.png' before '10.png' (slice order matters for EM stacks)."""
    stem = path.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def read_pair(image_path: Path, mask_path: Path, n_channels: int, rgb: str = "auto"
              ) -> tuple[np.ndarray, np.ndarray]:
    """A (C, Y, X) image with the model's channel count, and its 2D mask."""
    image = read_image(image_path)
    plane = to_channels(np.asarray(image.data), image.axes, n_channels, rgb)
    return plane, read_mask(mask_path)  # refuses a colour mask whose channels differ


def load_folder(folder: str | Path, config: ModelConfig, invert_masks: bool = False,
                limit: int | None = None) -> list[Sample]:
    """Load every pair of a folder as samples for ``config``'s task and channel count."""
    samples = []
    for image_path, mask_path in find_pairs(folder)[:limit]:
        plane, mask = read_pair(image_path, mask_path, config.network.in_channels)
        samples.append(make_sample(image_path.stem, plane, mask, config, "CYX",
                                   invert_masks=invert_masks))
    return samples
