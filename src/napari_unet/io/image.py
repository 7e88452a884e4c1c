"""What every reader returns: the pixels with the axes and calibration needed to segment
and display them correctly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

if TYPE_CHECKING:
    import dask.array
    import zarr

#: An image or labels array as the core takes it: numpy in memory, or a lazy dask or zarr
#: array that is read (or written) region by region.
ArrayLike = Union[np.ndarray, "dask.array.Array", "zarr.Array"]


@dataclass
class ImageData:
    """An image with the axes and calibration needed to segment and display it correctly.

    ``axes`` are letters of ``"TZCYX"`` in the file's order; ``pixel_size`` has one value per
    Z/Y/X axis in ``unit`` (``None``: uncalibrated); see :mod:`napari_unet.io.tiff`."""

    data: ArrayLike
    axes: str
    pixel_size: Optional[tuple[float, ...]]
    unit: Optional[str]
    source: str
    #: JSON metadata napari-unet stored in the file (model provenance); empty otherwise.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: False when the file names no axes (a plain multi-page TIFF): ``axes`` are a guess,
    #: which the napari reader makes differently for a few planes (channels, not Z).
    axes_declared: bool = True
