"""A PNG preview of labels over the image: a quick visual check without opening napari."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage.color import label2rgb
from skimage.segmentation import find_boundaries

from .io.atomic import PathLike, atomic_write


def overlay_rgb(plane: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 RGB of a 2D gray plane with tinted objects and white outlines."""
    plane = plane.astype(np.float32)
    lo, hi = np.percentile(plane, [1, 99.8])
    gray = np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = label2rgb(labels, image=gray, alpha=0.3, bg_label=0, image_alpha=1.0)
    rgb[find_boundaries(labels, mode="inner")] = 1.0
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_overlay(path: PathLike, plane: np.ndarray, labels: np.ndarray,
                  overwrite: bool = False) -> Path:
    """Write :func:`overlay_rgb` as a PNG, atomically."""
    rgb = overlay_rgb(plane, labels)
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, rgb, extension=".png"), overwrite=overwrite)
