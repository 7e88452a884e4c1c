"""Tiled prediction of one 2D plane: overlapping tiles, Gaussian blending, batched.

Memory is bounded by the tile batch plus the output plane, never by a whole-image
activation map; the tiled result matches whole-image prediction closely (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .device import autocast, memory_format
from .errors import DeviceError, InvalidSettingError
from .fastpath import input_dtype
from .progress import CancelToken, ProgressCallback, check_cancel, report


@dataclass(frozen=True)
class TileConfig:
    """Tile geometry: ``tile`` and ``overlap`` in pixels; ``batch`` tiles per forward pass.
    ``adaptive`` lets each plane use 1.5x or 2x the tile when that computes fewer pixels
    (a 512 x 512 image: one 512 tile instead of nine overlapping 256 tiles)."""

    tile: int = 256
    overlap: int = 32
    batch: int = 1
    adaptive: bool = False

    def __post_init__(self) -> None:
        check_tiling(self.tile, self.overlap)
        if self.batch < 1:
            raise InvalidSettingError(f"a batch of {self.batch} tiles is not possible; use a "
                                      "batch size of 1 or more (--batch-size)")


def check_tiling(tile: int, overlap: int, where: str = "") -> None:
    """Refuse a tile size below 1 or an overlap that is negative or not below the tile:
    tiles would advance by one pixel (the step is the tile minus the overlap), so the
    work would practically never end. ``where`` names the source (e.g. a model file)."""
    source = f" ({where})" if where else ""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise InvalidSettingError(f"tile size {tile!r}{source} is not a whole number of pixels "
                                  "of 1 or more; choose a tile size such as 256 (--tile-size)")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise InvalidSettingError(f"tile overlap {overlap!r}{source} is not a whole number of "
                                  "pixels of 0 or more; choose an overlap such as 32 (--overlap)")
    if overlap >= tile:
        raise InvalidSettingError(
            f"tile overlap {overlap} is not below the tile size {tile}{source}: tiles would "
            f"advance by one pixel and segmenting would practically never end; choose an "
            f"overlap below the tile size (--overlap {min(32, tile // 4)}) or a larger tile "
            "(--tile-size)"
        )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``tile`` overlapping by >= ``overlap``."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _fit(shape: tuple[int, int], tile: int, multiple: int) -> tuple[int, int]:
    """``tile`` rounded up to the network's size multiple, or the whole (rounded-up) side
    when the plane is smaller."""
    side = _round_up(tile, multiple)
    return min(side, _round_up(shape[0], multiple)), min(side, _round_up(shape[1], multiple))


def _n_tiles(shape: tuple[int, int], tile: tuple[int, int], overlap: int) -> int:
    padded = (max(shape[0], tile[0]), max(shape[1], tile[1]))
    return len(tile_starts(padded[0], tile[0], overlap)) * len(tile_starts(padded[1], tile[1], overlap))


def tile_shape(shape: tuple[int, int], tiles: TileConfig, multiple: int) -> tuple[int, int]:
    """The network input size for a plane of ``shape`` (see :class:`TileConfig`)."""
    sizes = [tiles.tile] + ([tiles.tile * 3 // 2, tiles.tile * 2] if tiles.adaptive else [])
    options = [_fit(shape, size, multiple) for size in sizes]
    # pixels computed; the first (smallest) tile wins ties
    return min(options, key=lambda t: _n_tiles(shape, t, tiles.overlap) * t[0] * t[1])


def count_tiles(shape: tuple[int, int], tiles: TileConfig, multiple: int) -> int:
    """How many tiles :func:`predict_plane` runs for a plane of ``shape`` (for progress)."""
    return _n_tiles(shape, tile_shape(shape, tiles, multiple), tiles.overlap)


def gaussian_window(shape: tuple[int, int], sigma_scale: float = 1 / 8) -> np.ndarray:
    """Blending weights that fade towards tile edges, where predictions are least reliable."""
    axes = []
    for n in shape:
        x = np.arange(n) - (n - 1) / 2
        axes.append(np.exp(-0.5 * (x / max(n * sigma_scale, 1e-6)) ** 2))
    window = np.outer(axes[0], axes[1]).astype(np.float32)
    return np.maximum(window / window.max(), 1e-3)


def _pad_plane(plane: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Reflect-pad a (C, Y, X) plane at the bottom/right so each side is at least the tile's."""
    pads = [(0, 0)] + [(0, max(0, t - s)) for s, t in zip(plane.shape[1:], tile)]
    if any(p[1] for p in pads):
        mode = "reflect" if all(s > 1 for s in plane.shape[1:]) else "edge"
        plane = np.pad(plane, pads, mode=mode)  # type: ignore[call-overload]  # a Literal in numpy's stubs
    return plane


def _tiles(shape: tuple[int, int], tile: tuple[int, int], overlap: int) -> Iterator[tuple[slice, slice]]:
    for y in tile_starts(shape[0], tile[0], overlap):
        for x in tile_starts(shape[1], tile[1], overlap):
            yield slice(y, y + tile[0]), slice(x, x + tile[1])


def _probabilities(network: torch.nn.Module, batch: np.ndarray, activation: str,
                   device: torch.device, fmt: torch.memory_format, dtype: torch.dtype) -> np.ndarray:
    """Run one batch of tiles; on device out-of-memory, halve the batch and retry."""
    try:
        x = torch.from_numpy(batch).to(device, dtype=dtype)
        x = x.contiguous(memory_format=fmt)
        logits = network(x).float()
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            raise DeviceError(
                f"the {device.type} device ran out of memory on a single tile of "
                f"{batch.shape[-2]}x{batch.shape[-1]}; choose a smaller tile size or device 'cpu'"
            ) from None
        half = len(batch) // 2
        return np.concatenate([
            _probabilities(network, batch[:half], activation, device, fmt, dtype),
            _probabilities(network, batch[half:], activation, device, fmt, dtype),
        ])
    probs = torch.softmax(logits, 1) if activation == "softmax" else torch.sigmoid(logits)
    return probs.cpu().numpy()


def predict_plane(
    network: torch.nn.Module,
    plane: np.ndarray,
    *,
    activation: str,
    multiple: int,
    tiles: TileConfig = TileConfig(),
    device: torch.device = torch.device("cpu"),
    fast: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Class probabilities (K, Y, X) float32 for a normalised (C, Y, X) plane.

    ``activation`` is ``softmax`` or ``sigmoid``; ``multiple`` is the network's size multiple
    (2**depth): tiles smaller than ``tiles.tile`` are rounded up to it. ``fast`` enables
    mixed precision and channels_last on devices where that is faster.
    """
    height, width = plane.shape[1:]
    tile = tile_shape((height, width), tiles, multiple)
    padded = _pad_plane(plane, tile)
    window = gaussian_window(tile)
    n_out = int(network.config.out_channels)  # type: ignore[union-attr,arg-type]  # a UNet's
    acc = np.zeros((n_out,) + padded.shape[1:], dtype=np.float32)
    weight = np.zeros(padded.shape[1:], dtype=np.float32)
    boxes = list(_tiles(padded.shape[1:], tile, tiles.overlap))
    fmt = memory_format(device) if fast else torch.contiguous_format
    dtype = input_dtype(network) or torch.float32
    done = 0
    # weights already in a fast dtype need no autocast (it would re-cast them every call)
    with torch.inference_mode(), autocast(device, enabled=fast and dtype == torch.float32):
        for i in range(0, len(boxes), tiles.batch):
            check_cancel(cancel)
            batch_boxes = boxes[i : i + tiles.batch]
            batch = np.stack([padded[(slice(None),) + b] for b in batch_boxes])
            probs = _probabilities(network, batch, activation, device, fmt, dtype)
            for p, (ys, xs) in zip(probs, batch_boxes):
                acc[:, ys, xs] += p * window
                weight[ys, xs] += window
            done += len(batch_boxes)
            report(progress, done, len(boxes))
    np.divide(acc, weight, out=acc)  # in place: no second plane-sized float array
    return acc[:, :height, :width]
