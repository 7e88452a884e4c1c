"""napari writer: a Labels layer to a compressed, calibrated TIFF (Fiji and napari open it).

Writing goes through :func:`napari_unet.io.write_labels`, which is atomic: a failed
or interrupted save leaves any previous file untouched. napari's save dialog asks before
replacing a file, so the napari hook replaces; :func:`labels_to_tiff` refuses by default.
No Qt here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ._reader import META_KEY
from ._version import __version__
from .io import write_labels
from .io.units import common_unit

_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX"}


def label_axes(ndim: int, metadata: Optional[Mapping[str, Any]]) -> str:
    """The labels' axes: as recorded by napari-unet, else napari's default for ``ndim``."""
    meta = (metadata or {}).get(META_KEY, {}) if isinstance(metadata, Mapping) else {}
    axes = meta.get("axes") if isinstance(meta, Mapping) else None
    if isinstance(axes, str):
        axes = axes.replace("C", "")
        if len(axes) == ndim:
            return axes
    if ndim not in _DEFAULT_AXES:
        raise ValueError(f"cannot write {ndim}D labels; napari-unet writes 2D to 4D (TZYX) labels")
    return _DEFAULT_AXES[ndim]


def provenance(metadata: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON provenance to store in the file: napari-unet's facts about the layer."""
    meta = (metadata or {}).get(META_KEY, {}) if isinstance(metadata, Mapping) else {}
    out: dict[str, Any] = {"kind": "labels", "software": "napari-unet", "napari_unet": __version__}
    for key in ("model", "model_name", "model_provenance", "settings", "source_layer", "source"):
        if isinstance(meta, Mapping) and meta.get(key) is not None:
            out[key] = meta[key]
    return out


def labels_to_tiff(path: str | Path, data: Any, *, scale: Optional[Sequence[float]] = None,
                   units: Optional[Sequence[Any]] = None,
                   metadata: Optional[Mapping[str, Any]] = None,
                   overwrite: bool = False) -> Path:
    """Write labels with their pixel size (from the layer scale) and model provenance."""
    data = np.asarray(data)
    axes = label_axes(data.ndim, metadata)
    pixel_size = None
    if scale is not None and len(scale) == data.ndim:
        values = [float(s) for a, s in zip(axes, scale) if a in "ZYX"]
        if all(math.isfinite(v) and v > 0 for v in values):
            pixel_size = values
    unit = common_unit(u for a, u in zip(axes, units or ()) if a in "ZYX")
    return write_labels(path, data, axes=axes, pixel_size=pixel_size, unit=unit,
                        metadata=provenance(metadata), overwrite=overwrite)


def write_labels_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers (.tif/.tiff)."""
    if not str(path).lower().endswith((".tif", ".tiff")):
        path = f"{path}.tif"
    written = labels_to_tiff(path, data, scale=meta.get("scale"), units=meta.get("units"),
                             metadata=meta.get("metadata"), overwrite=True)
    return [str(written)]
