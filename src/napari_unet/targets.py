"""Training targets derived from annotations.

Instances become three classes (background, interior, inner boundary): the boundary ring
is what lets the watershed split touching nuclei.
"""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def instance_target(labels: np.ndarray) -> np.ndarray:
    """(Y, X) int64 class map from an instance label image (0 = background)."""
    target = np.where(labels > 0, INTERIOR, BACKGROUND).astype(np.int64)
    target[find_boundaries(labels, mode="inner") & (labels > 0)] = BOUNDARY
    return target


def semantic_target(mask: np.ndarray, n_classes: int, invert: bool = False) -> np.ndarray:
    """(K, Y, X) float32 one-vs-rest targets; ``invert`` reads 0 as the class (ISBI convention)."""
    if n_classes == 1:
        fg = mask == 0 if invert else mask > 0
        return fg[None].astype(np.float32)
    return np.stack([mask == k + 1 for k in range(n_classes)]).astype(np.float32)


def labels_to_target(labels: np.ndarray, task: str, n_classes: int, invert: bool = False) -> np.ndarray:
    """The target for a task: class map for instances, stacked masks for semantic classes."""
    if task == "instance":
        return instance_target(labels)
    return semantic_target(labels, n_classes, invert)
