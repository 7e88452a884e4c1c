"""Percentile normalisation that treats every input dtype alike.

uint8/16/32, int32/64, bool and float images are mapped so that the ``low`` and ``high``
percentiles of each channel land on 0 and 1. Peers that fed int32 straight into their
network got empty output; here the dtype never reaches the network.
"""

from __future__ import annotations

import numpy as np

from .config import NormalizationConfig
from .errors import InvalidImageError

#: Above this many values, percentiles come from an evenly strided subsample.
_SUBSAMPLE = 4_000_000


def channel_percentiles(data, config: NormalizationConfig, channel_axis: int) -> np.ndarray:
    """(n_channels, 2) array of low/high percentiles, from a subsample for large/dask input."""
    data = np.moveaxis(data, channel_axis, 0) if channel_axis != 0 else data
    out = []
    for c in range(data.shape[0]):
        values = _subsample(data[c])
        out.append(np.percentile(values, [config.low, config.high]))
    return np.asarray(out, dtype=np.float64)


def _subsample(channel) -> np.ndarray:
    """A numpy sample of at most ~_SUBSAMPLE values, read with strides (cheap on dask)."""
    size = int(np.prod(channel.shape))
    step = 1
    while size // (step ** channel.ndim) > _SUBSAMPLE:
        step += 1
    sample = channel[tuple(slice(None, None, step) for _ in range(channel.ndim))]
    values = np.asarray(sample, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    if not finite.all():
        if not finite.any():
            raise InvalidImageError(
                "the image holds no finite values (all NaN or inf); load the right channel "
                "or replace them, e.g. with numpy.nan_to_num"
            )
        raise InvalidImageError(
            "the image contains NaN or infinite values; replace them first, "
            "e.g. image = numpy.nan_to_num(image)"
        )
    return values


def normalize(plane: np.ndarray, percentiles: np.ndarray, invert: bool = False) -> np.ndarray:
    """Map a (C, Y, X) plane to float32 with the given per-channel percentiles; ``invert``
    maps ``x`` to ``1 - x`` (low and high percentiles swap places)."""
    plane = np.asarray(plane)
    lo = percentiles[:, 0].reshape(-1, 1, 1)
    hi = percentiles[:, 1].reshape(-1, 1, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    # Wide types (int32/64, uint32/64, float64) are shifted in float64 first: in float32 a
    # large offset (e.g. float64 data around 1000 +- 0.01) would swamp the signal.
    wide = plane.dtype.itemsize > 2 and plane.dtype != np.float32
    work = np.float64 if wide else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        out: np.ndarray = plane.astype(work)  # the one copy; the arithmetic below is in place
        out -= lo.astype(work)
        out /= scale.astype(work)
        out = out.astype(np.float32, copy=False)
        if invert:
            np.subtract(1.0, out, out=out)
    if not np.isfinite(out).all():
        if np.isfinite(plane).all() and np.isfinite(percentiles).all():
            raise InvalidImageError(
                "the image's values span too large a range to normalise (they overflow "
                "32-bit floats, e.g. values near +-3e38); rescale it first, e.g. "
                "image = image / numpy.abs(image).max()"
            )
        raise InvalidImageError(
            "the image contains NaN or infinite values; replace them first, "
            "e.g. image = numpy.nan_to_num(image)"
        )
    return out
