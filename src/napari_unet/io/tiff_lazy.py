"""TIFFs read lazily (dask), so that block reads cost about the block.

Uncompressed planes at regular places in the file (ImageJ, tifffile and most writers) are
read through a memory map. Anything else goes through tifffile's zarr store, which decodes
a whole strip or tile for any pixel of it, a whole plane when the plane is one strip: a
piece larger than the memory available is refused before it is read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .memory import check_fits, describe

if TYPE_CHECKING:
    import dask.array


def lazy_array(series: Any, p: Path, available: Optional[int]) -> dask.array.Array:
    """A dask view of the series whose block reads cost about the block (see above)."""
    import dask.array as da

    layout = _plane_layout(series)
    if layout is not None:
        planes = _FilePlanes(p, *layout, series.keyframe.shape, series.keyframe.dtype,
                             byteorder=series.parent.byteorder)
        chunks = (1,) + ("auto",) * (planes.ndim - 1)
        return da.from_array(planes, chunks=chunks, name=False).reshape(series.shape)
    # The store reopens the file on demand, so closing the TiffFile afterwards is fine.
    data = da.from_zarr(series.aszarr(level=0))
    check_fits(p, math.prod(data.chunksize) * data.dtype.itemsize, available,
               f"decoding one compressed piece ({describe(data.chunksize, data.dtype)}; a "
               "plane stored as one strip is one piece) of its "
               f"{describe(series.shape, series.dtype)} image",
               "convert it to a tiled TIFF or OME-Zarr on a machine with more memory "
               "(e.g. bfconvert -tilex 512 -tiley 512), so it is read in small pieces")
    return data


def _plane_layout(series: Any) -> Optional[tuple[int, int, int]]:
    """(file offset of the first plane, bytes from one plane to the next, planes) when
    every plane is stored uncompressed, as in memory, at regular steps; else None."""
    key = series.keyframe
    count = int(series.size // key.size)
    if series.dataoffset is not None:
        return series.dataoffset, key.nbytes, count
    pages = list(series.pages)
    if len(pages) != count or not all(page is not None and page.is_final for page in pages):
        return None
    offsets = [page.dataoffsets[0] for page in pages]
    step = offsets[1] - offsets[0] if count > 1 else key.nbytes
    if step < key.nbytes or any(b - a != step for a, b in zip(offsets, offsets[1:])):
        return None
    return offsets[0], step, count


class _FilePlanes:
    """Equally spaced planes of a file as an array-like for :func:`dask.array.from_array`:
    indexing maps the file and returns a view of the pixels asked for (a copy only to
    swap byte order). It holds the path, not the map, so it pickles small."""

    def __init__(self, path: Path, offset: int, step: int, count: int,
                 plane_shape: tuple[int, ...], dtype: Any, byteorder: str) -> None:
        self.path, self.offset = path, offset
        self.stored = np.dtype(dtype).newbyteorder(byteorder)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.shape = (count, *plane_shape)
        self.ndim = len(self.shape)
        # from plane to plane ``step``, within a plane C order
        self.strides = (step, *(math.prod(plane_shape[i + 1:]) * self.dtype.itemsize
                                for i in range(len(plane_shape))))

    def __getitem__(self, key: Any) -> np.ndarray:
        file = np.memmap(self.path, dtype=np.uint8, mode="r")
        planes = np.ndarray(self.shape, self.stored, buffer=file, offset=self.offset,
                            strides=self.strides)
        return planes[key].astype(self.dtype, copy=False)
