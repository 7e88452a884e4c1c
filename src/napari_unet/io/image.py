"""What every reader returns: the pixels with the axes and calibration needed to segment
and display them correctly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

if TYPE_CHECKING:
    import dask.array


@dataclass
class ImageData:
    """An image with the axes and calibration needed to segment and display it correctly.

    ``axes`` are letters of ``"TZCYX"`` in the file's order; ``pixel_size`` has one value per
    Z/Y/X axis in ``unit`` (``None``: uncalibrated); see :mod:`napari_unet.io.tiff`."""

    data: Union[np.ndarray, dask.array.Array]
    axes: str
    pixel_size: Optional[tuple[float, ...]]
    unit: Optional[str]
    source: str
    #: JSON metadata napari-unet stored in the file (model provenance); empty otherwise.
    metadata: dict[str, Any] = field(default_factory=dict)
