"""Block-wise segmentation of one plane, so memory stays bounded for any plane size.

A plane larger than one block is cut into near-equal square blocks. Each block is
predicted with a margin of context, post-processed over its core plus a ``halo`` and
keeps exactly the objects whose centroid lies in its core: cores tile the plane, so an
object cut by a block edge is still written once, whole, by one block. This holds for
objects reaching at most ``halo`` pixels beyond the core (nuclei and cells at typical
magnifications); a larger object is cut at the halo. Pixels another block already wrote
are never overwritten. Peak memory is that of one block, whatever the plane size.
A plane that fits in one block is processed exactly as a whole (no halo, no cut).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .config import COUNT_OR_ZERO, Range, check_fields, setting
from .progress import CancelToken, ProgressCallback, check_cancel, report

Box = tuple[slice, slice]

#: Receives, for every block, (stack index, core box in plane coordinates, the (K, h, w)
#: probabilities of that core): what the network computed, for a caller to keep or summarise.
ProbabilitySink = Callable[[tuple[int, ...], Box, np.ndarray], None]


@dataclass(frozen=True)
class BlockConfig:
    """Block geometry in pixels: ``block`` is the largest core side (64 or more), ``halo``
    the margin over which objects crossing a core edge are completed (>= the largest object
    radius); other values raise :class:`~napari_unet.errors.InvalidSettingError`."""

    block: int = setting(2048, Range(64, integer=True))
    halo: int = setting(64, COUNT_OR_ZERO)

    def __post_init__(self) -> None:
        check_fields(self)


def split(length: int, block: int) -> list[tuple[int, int]]:
    """Near-equal (start, stop) ranges of at most ``block`` covering ``0..length``."""
    n = max(1, -(-length // block))
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def block_boxes(shape: tuple[int, ...], block: int) -> list[Box]:
    """Block cores of a (Y, X) ``shape`` in raster order."""
    return [(slice(y0, y1), slice(x0, x1))
            for y0, y1 in split(shape[0], block) for x0, x1 in split(shape[1], block)]


def grow(box: Box, margin: int, shape: tuple[int, ...]) -> Box:
    """``box`` widened by ``margin`` on every side, clipped to the plane."""
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin))
                 for s, n in zip(box, shape))  # type: ignore[return-value]


def owned_ids(labels: np.ndarray, origin: tuple[int, int], core: Box) -> np.ndarray:
    """Boolean per id of ``labels`` (index 0 = background, never owned): is the object's
    centroid, in plane coordinates (``origin`` = the labels' top-left), inside ``core``?"""
    flat = labels.ravel()
    counts = np.bincount(flat)
    height, width = labels.shape
    rows = np.bincount(flat, weights=np.repeat(np.arange(height, dtype=np.float64), width),
                       minlength=counts.size)
    cols = np.bincount(flat, weights=np.tile(np.arange(width, dtype=np.float64), height),
                       minlength=counts.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = rows / counts + origin[0]
        cx = cols / counts + origin[1]
    owned = ((cy >= core[0].start) & (cy < core[0].stop)
             & (cx >= core[1].start) & (cx < core[1].stop))
    owned[0] = False
    return owned


def _within(box: Box, region: Box) -> Box:
    """``box`` in the coordinates of ``region`` (which contains it)."""
    return tuple(slice(b.start - r.start, b.stop - r.start)
                 for b, r in zip(box, region))  # type: ignore[return-value]


def segment_plane(
    read: Callable[[Box], np.ndarray],
    shape: tuple[int, ...],
    probabilities: Callable[..., np.ndarray],
    to_labels: Callable[[np.ndarray], np.ndarray],
    out: Any,
    index: tuple[int, ...] = (),
    *,
    instance: bool,
    offset: int = 0,
    blocks: BlockConfig = BlockConfig(),
    context: int = 32,
    tiles_per_region: Callable[[tuple[int, int]], int] = lambda shape: 1,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    on_probabilities: Optional[ProbabilitySink] = None,
) -> int:
    """Segment one plane block by block into ``out[index]``, a zeroed (Y, X) plane of a
    numpy, zarr or other array supporting region reads and writes.

    ``read(box)`` returns the normalised (C, h, w) region; ``probabilities(region,
    progress, cancel)`` and ``to_labels(probs)`` are the predictor's steps. Instance ids
    start after ``offset`` and are unique in the plane; returns the largest id written
    (``offset`` when none). ``tiles_per_region`` counts tiles for progress.
    ``on_probabilities`` gets each block core's probabilities (cores tile the plane once).
    """
    cores = block_boxes(shape, blocks.block)
    whole = len(cores) == 1
    halo = 0 if whole else blocks.halo
    margin = 0 if whole else context
    plans = []
    for core in cores:
        extended = grow(core, halo, shape)
        region = grow(extended, margin, shape)
        plans.append((core, extended, region))
    totals = [tiles_per_region((r[0].stop - r[0].start, r[1].stop - r[1].start))
              for _, _, r in plans]
    total, done = sum(totals), 0
    for (core, extended, region), n_tiles in zip(plans, totals):
        check_cancel(cancel)

        def block_progress(d: int, _t: int, base: int = done) -> None:
            report(progress, base + d, total)

        probs = probabilities(read(region), block_progress, cancel)
        done += n_tiles
        if on_probabilities is not None:
            on_probabilities(index, core, probs[(slice(None),) + _within(core, region)])
        keep = extended if instance else core
        labels = to_labels(np.ascontiguousarray(probs[(slice(None),) + _within(keep, region)]))
        del probs
        if not instance:
            out[index + core] = labels
            continue
        if whole:  # every object lies in the one core
            owned = np.ones(int(labels.max(initial=0)) + 1, dtype=bool)
            owned[0] = False
        else:
            owned = owned_ids(labels, (extended[0].start, extended[1].start), core)
        n_owned = int(owned.sum())
        if not n_owned:
            continue
        lut = np.zeros(owned.size, dtype=np.uint32)
        lut[owned] = np.arange(offset + 1, offset + n_owned + 1, dtype=np.uint32)
        mapped = lut[labels]
        if whole:
            out[index + extended] = mapped
        else:
            current = np.asarray(out[index + extended])
            out[index + extended] = np.where((mapped > 0) & (current == 0), mapped, current)
        offset += n_owned
    return offset
