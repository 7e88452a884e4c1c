"""Colour pictures for 1-channel models: a gray image in which nuclei keep their contrast.

The mean of R, G and B is right for a fluorescence picture saved as RGB, where nuclei are
bright on black. For a bright-field or stained (H&E) section the nuclei are dark on a light
background, and the mean hands the network the opposite contrast of everything it learnt
(the shipped ``nuclei`` model scores 0.001 on such images). Optical density,
``-log(I / I_background)``, is what the light lost in the sample: it turns the dark,
stain-absorbing nuclei bright on a black background, as in fluorescence. The hematoxylin
channel of a colour deconvolution (Ruifrok & Johnston 2001, :func:`skimage.color.rgb2hed`)
keeps the nuclear stain only.

``auto`` picks optical density for pictures with a light background and the mean otherwise;
measured choices and scores are in docs/models.md ("RGB and stained images").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidSettingError

#: The conversions a user can choose (``SegmentOptions.rgb``, ``--rgb``, the widget).
RGB_MODES = ("auto", "mean", "optical-density", "hematoxylin")
#: Percentile of each channel taken as the light that passed through no sample.
_BACKGROUND_PERCENTILE = 99.0
#: Transmitted light (bright-field, stained) has its most common brightness, the background,
#: in the upper half of the picture's range; fluorescence has it near black, even when
#: nuclei cover most of the picture (where a median-based rule fails).
_LIGHT_BACKGROUND = 0.5
#: Mean colour spread (max - min of R, G, B over the background level) above which a picture
#: is a stained section whatever its histogram: fluorescence saved as RGB is gray.
_STAINED = 0.05
#: Pixels looked at to choose (a stride through the plane).
_SAMPLE = 250_000


@dataclass(frozen=True)
class RgbConversion:
    """A concrete conversion with the background light it assumes, fixed for a whole image
    (or stack) so that blocks and planes are converted alike."""

    mode: str
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def apply(self, rgb: Any) -> np.ndarray:
        """(1, Y, X) float32 from a (3, Y, X) plane or region."""
        plane = np.asarray(rgb, dtype=np.float32)
        if self.mode == "mean":
            return plane.mean(axis=0, keepdims=True)
        background = np.asarray(self.background, np.float32).reshape(3, 1, 1)
        transmitted = np.clip(plane / background, 1e-3, 1.0)
        if self.mode == "optical-density":
            return -np.log(transmitted).mean(axis=0, keepdims=True)
        from skimage.color import rgb2hed

        return rgb2hed(np.moveaxis(transmitted, 0, -1))[None, ..., 0].astype(np.float32)

    def describe(self) -> str:
        """A few words for a status line: what the network was given."""
        return {"mean": "RGB mean", "optical-density": "optical density of RGB",
                "hematoxylin": "hematoxylin stain of RGB"}[self.mode]


def conversion_for(rgb: Any, mode: str = "auto") -> RgbConversion:
    """The conversion for a (3, Y, X) plane: ``mode``, or for ``auto`` optical density for
    transmitted light (a light background, or stain colours) and the mean otherwise; the
    background light is measured on this plane (a strided sample: cheap for lazy data)."""
    if mode not in RGB_MODES:
        raise InvalidSettingError(f"rgb conversion {mode!r} is unknown; choose one of "
                                  f"{', '.join(RGB_MODES)}")
    plane = rgb if hasattr(rgb, "shape") else np.asarray(rgb)
    step = max(1, int(np.sqrt(plane.shape[-2] * plane.shape[-1] / _SAMPLE)))
    sample = np.asarray(plane[:, ::step, ::step], dtype=np.float64)
    background = np.maximum(np.percentile(sample, _BACKGROUND_PERCENTILE, axis=(1, 2)), 1e-6)
    if mode == "auto":
        mode = "optical-density" if _transmitted_light(sample) else "mean"
    return RgbConversion(mode, tuple(float(b) for b in background))  # type: ignore[arg-type]




def _transmitted_light(sample: np.ndarray) -> bool:
    """Whether a (3, Y, X) float sample looks like transmitted light: coloured by stains, or
    with its most common brightness (the background) in the upper half of its range."""
    gray = sample.mean(axis=0)
    low, high = np.percentile(gray, [1, 99])
    if high <= low:
        return False
    spread = float((sample.max(axis=0) - sample.min(axis=0)).mean()) / high
    counts, edges = np.histogram(gray, bins=64, range=(low, high))
    background = (edges[int(counts.argmax())] - low) / (high - low)
    return spread > _STAINED or background > _LIGHT_BACKGROUND
