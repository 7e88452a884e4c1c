"""Patch sampling and augmentation for training (numpy, per patch).

Flips and 90-degree rotations, elastic deformation as in the U-Net paper, intensity and
gamma jitter, and noise. Geometric changes apply to image, target and mask alike.
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
                soft: np.ndarray | None = None,
                ) -> tuple[np.ndarray, ...]:
    """A ``size`` x ``size`` crop; small images are padded (padding carries zero weight).
    ``soft`` (optional (K, Y, X) soft targets) is cropped alike and returned fourth.

    ``focus`` is an optional tuple of (N, 2) pixel coordinate arrays, one per class
    (objects, background); when given, the crop is centred near a pixel of a class drawn
    with equal odds, so sparse corrections are seen and both classes alike.
    """
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
    if rng.random() < config.noise_p:
        image = image + rng.normal(0, rng.uniform(0.0, 0.05), image.shape).astype(np.float32)
    return (image, target, weight) + extra
