"""Patch sampling and augmentation for training (numpy, per patch).

Flips and 90-degree rotations, elastic deformation as in the U-Net paper, intensity and
gamma jitter, and noise. Geometric changes apply to image, target and mask alike.

:data:`ROBUST` adds what a base model needs to survive other microscopes: contrast
inversion (dark nuclei on a light background), blur, and object-scale changes. Fine-tuning
and training on one's own data keep the plain set: their images are the domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and strengths; ``AugmentConfig(enabled=False)`` gives plain crops."""

    enabled: bool = True
    elastic_p: float = 0.3
    #: Elastic deformation: displacement of about ``elastic_alpha`` pixels (standard deviation),
    #: smooth over ``elastic_sigma`` pixels.
    elastic_alpha: float = 2.0
    elastic_sigma: float = 10.0
    intensity_p: float = 0.8
    gamma_p: float = 0.3
    noise_p: float = 0.3
    #: Contrast inversion (``1 - x``): bright-field and stained nuclei are dark.
    invert_p: float = 0.0
    #: Gaussian blur of ``blur_sigma`` pixels (a range): out-of-focus and low-NA images.
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    #: Zoom by a factor drawn log-uniformly from ``scale_range`` (objects of other sizes).
    scale_p: float = 0.0
    scale_range: tuple[float, float] = (0.6, 1.6)

    def draw_scale(self, rng: np.random.Generator) -> float:
        """The zoom factor of one patch (1: none). Draws nothing when scaling is off, so
        runs without it keep their random streams."""
        if not (self.enabled and self.scale_p) or rng.random() >= self.scale_p:
            return 1.0
        low, high = np.log(self.scale_range)
        return float(np.exp(rng.uniform(low, high)))


#: Augmentation for a base model meant for many modalities (``napari-unet train --augment
#: robust``): the plain set plus inversion, blur and scale.
ROBUST = AugmentConfig(invert_p=0.5, blur_p=0.3, scale_p=0.5)
AUGMENTATIONS = {"standard": AugmentConfig(), "robust": ROBUST}


def _pad_to(arr: np.ndarray, size: int, mode: str) -> np.ndarray:
    pads = [(0, 0)] * (arr.ndim - 2) + [(0, max(0, size - s)) for s in arr.shape[-2:]]
    if not any(p[1] for p in pads):
        return arr
    if mode == "reflect" and min(arr.shape[-2:]) < 2:
        mode = "edge"
    return np.pad(arr, pads, mode=mode)  # type: ignore[call-overload]  # numpy's stubs want a Literal mode


def random_crop(image: np.ndarray, target: np.ndarray, weight: np.ndarray, size: int,
                rng: np.random.Generator,
                focus: tuple[np.ndarray, ...] | None = None,
                soft: np.ndarray | None = None, scale: float = 1.0,
                ) -> tuple[np.ndarray, ...]:
    """A ``size`` x ``size`` crop; small images are padded (padding carries zero weight).
    ``soft`` (optional (K, Y, X) soft targets) is cropped alike and returned fourth.
    With ``scale`` != 1 a ``size / scale`` crop is zoomed to ``size`` (objects look
    ``scale`` times larger; classes and weights by nearest neighbour).

    ``focus`` is an optional tuple of (N, 2) pixel coordinate arrays, one per class
    (objects, background); when given, the crop is centred near a pixel of a class drawn
    with equal odds, so sparse corrections are seen and both classes alike.
    """
    if scale != 1.0:
        crop = random_crop(image, target, weight, max(2, round(size / scale)), rng, focus, soft)
        return tuple(_zoom_to(a, size, order) for a, order in zip(crop, (1, 0, 0, 1)))
    image = _pad_to(image, size, "reflect")
    target = _pad_to(target, size, "constant")
    weight = _pad_to(weight, size, "constant")
    height, width = image.shape[-2:]
    groups = [g for g in focus if len(g)] if focus is not None else []
    if groups:
        group = groups[rng.integers(len(groups))]
        cy, cx = group[rng.integers(len(group))]
        y = int(np.clip(cy - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, height - size))
        x = int(np.clip(cx - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, width - size))
    else:
        y = int(rng.integers(0, height - size + 1))
        x = int(rng.integers(0, width - size + 1))
    box = (..., slice(y, y + size), slice(x, x + size))
    if soft is None:
        return image[box], target[box], weight[box]
    return image[box], target[box], weight[box], _pad_to(soft, size, "constant")[box]


def _zoom_to(arr: np.ndarray, size: int, order: int) -> np.ndarray:
    """``arr`` (..., Y, X) zoomed so its last two axes are ``size`` x ``size``."""
    factors = (1.0,) * (arr.ndim - 2) + tuple(size / n for n in arr.shape[-2:])
    out = ndi.zoom(arr, factors, order=order, mode="reflect", grid_mode=True)
    return out[..., :size, :size].astype(arr.dtype, copy=False)


def _elastic(arrays: list[tuple[np.ndarray, int]], alpha: float, sigma: float,
             rng: np.random.Generator) -> list[np.ndarray]:
    """Smooth random displacement fields (standard deviation ``alpha`` pixels, smoothed over
    ``sigma``) applied with the given interpolation orders."""
    shape = arrays[0][0].shape[-2:]

    def field() -> np.ndarray:
        smooth = ndi.gaussian_filter(rng.uniform(-1, 1, shape), sigma)
        return smooth * (alpha / max(float(smooth.std()), 1e-12))

    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    coords = np.array([yy + field(), xx + field()])
    out = []
    for arr, order in arrays:
        flat = arr.reshape((-1,) + shape)
        warped = [ndi.map_coordinates(a, coords, order=order, mode="reflect") for a in flat]
        out.append(np.stack(warped).reshape(arr.shape).astype(arr.dtype, copy=False))
    return out


def augment(image: np.ndarray, target: np.ndarray, weight: np.ndarray,
            rng: np.random.Generator, config: AugmentConfig = AugmentConfig(),
            soft: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Randomly transform a (C, Y, X) image with its target and weight map (and ``soft``
    (K, Y, X) soft targets when given, returned fourth)."""
    if not config.enabled:
        return (image, target, weight) if soft is None else (image, target, weight, soft)
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))

    def geom(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return a[..., ::-1] if flip else a

    arrays = [(image, 1), (target, 0), (weight, 0)] + ([] if soft is None else [(soft, 1)])
    warped = [np.ascontiguousarray(geom(a)) for a, _ in arrays]
    if rng.random() < config.elastic_p:
        warped = _elastic([(a, order) for a, (_, order) in zip(warped, arrays)],
                          config.elastic_alpha, config.elastic_sigma, rng)
    image, target, weight = warped[:3]
    extra = tuple(warped[3:])
    image = image.astype(np.float32, copy=True)
    if rng.random() < config.gamma_p:
        gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
        inside = (image > 0) & (image < 1)
        image[inside] = image[inside] ** gamma
    if rng.random() < config.intensity_p:
        image = image * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    if config.blur_p and rng.random() < config.blur_p:
        sigma = float(rng.uniform(*config.blur_sigma))
        image = ndi.gaussian_filter(image, (0,) * (image.ndim - 2) + (sigma, sigma))
    if config.invert_p and rng.random() < config.invert_p:
        image = 1.0 - image
    if rng.random() < config.noise_p:
        image = image + rng.normal(0, rng.uniform(0.0, 0.05), image.shape).astype(np.float32)
    return (image, target, weight) + extra
