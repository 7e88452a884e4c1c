"""TIFF, OME-TIFF and ImageJ hyperstacks read with their axes, pixel size and provenance,
whole or lazily; what the file declares is checked before anything is allocated
(:mod:`.tiff_checks`), and a large image is read plane by plane (:mod:`.tiff_lazy`).

Conventions, and why:

* **Axes** are tifffile's letters, normalised to ``T Z C Y X``: ``S`` (samples, e.g. RGB)
  becomes ``C``; unnamed stacking axes (``Q``, ``I``, ...) become ``Z`` (or ``T`` when the
  file already has a ``Z``), since a plain multi-page TIFF is almost always a z-stack
  (:attr:`ImageData.axes_declared` is then False; the napari reader opens 2 to 4 such
  planes as channels, as napari users expect).
  The order is the file's: an RGB picture is ``"YXC"``, an ImageJ hyperstack ``"TZCYX"``.
* **Pixel size** is one value per ``Z``/``Y``/``X`` axis present, in axes order. With
  ``unit == "um"`` the values are micrometres (converted from nm, mm, ...); with any other
  unit (ImageJ's ``"pixel"``, for relative anisotropy) they are in that unit. A stack
  calibrated in Y/X only gets ``Z = 1.0``, as in Fiji. ``None`` means no calibration.
  Units are read in any common spelling (:mod:`.units`); a value that is not a positive
  finite number, or a unit that is not a length, is dropped when the file is read, with a
  :class:`~napari_unet.errors.CalibrationWarning` (see
  :func:`~napari_unet.io.units.clean_calibration`), so no work starts on a calibration that
  cannot be written.
* **Provenance metadata** (a JSON object napari-unet wrote, e.g. model name and settings)
  is read from the ImageJ ``Info`` property or the OME ``Image/Description`` into
  :attr:`ImageData.metadata`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import tifffile

from ..errors import ImageReadError, NapariUnetError
from .image import ImageData
from .memory import available_memory, check_fits, describe
from .ome_xml import description, physical_sizes
from .tiff_checks import (
    check_extent,
    check_logged,
    check_ome_planes,
    check_planes,
    damaged,
    tifffile_errors,
)
from .tiff_lazy import lazy_array
from .units import clean_calibration

#: Images larger than this (uncompressed) are read lazily when ``lazy=None``.
LAZY_THRESHOLD_BYTES = 1 << 30
_KNOWN_AXES = "TZCYX"
_RESUNIT_CENTIMETER = 3


def read_tiff(p: Path, lazy: Optional[bool]) -> ImageData:
    """The first series of a TIFF file; ``lazy`` as for :func:`napari_unet.io.read_image`."""
    try:
        with tifffile_errors() as errors, tifffile.TiffFile(p) as tif:
            check_ome_planes(tif, p)  # before tif.series, which lists every declared plane
            if not tif.series:
                raise damaged(p, "it holds no image")
            series = tif.series[0]
            axes = _normalise_axes(series.axes, p)
            if 0 in tuple(series.shape):
                raise ImageReadError(
                    f"{str(p)!r} holds an empty image (shape {tuple(series.shape)}, no pixels); "
                    "export the image again, or check that this is the file you meant"
                )
            check_planes(series, p)
            check_extent(series, p.stat().st_size, p)
            check_logged(errors, p)
            pixel_size, unit = _calibration(tif, axes, p)
            metadata = _stored_metadata(tif)
            available = available_memory()
            if lazy is None:  # an image that cannot fit is read lazily too
                lazy = series.nbytes > min(LAZY_THRESHOLD_BYTES, available or math.inf)
            if lazy:
                data: Any = lazy_array(series, p, available)
            else:
                check_fits(p, series.nbytes, available,
                           f"reading its {describe(series.shape, series.dtype)} image whole",
                           "free memory, or read it lazily (read_image(..., lazy=True)) or "
                           "convert it to OME-Zarr, which is read block by block")
                data = series.asarray(level=0)
            check_logged(errors, p)
    except NapariUnetError:
        raise
    except MemoryError:
        raise ImageReadError(
            f"{str(p)!r} does not fit in memory; read it with lazy=True"
        ) from None
    except Exception as exc:
        if "imagecodecs" in str(exc):  # a compressed TIFF and a broken install, not damage
            raise ImageReadError(
                f"{str(p)!r} is compressed in a way that needs the imagecodecs package "
                f"({exc}); pip install imagecodecs (a dependency of napari-unet)"
            ) from exc
        raise damaged(p, f"{type(exc).__name__}: {exc}") from exc
    return ImageData(
        data=data,
        axes=axes,
        pixel_size=pixel_size,
        unit=unit,
        source=os.fspath(p),
        metadata=metadata,
        axes_declared=all(a in _KNOWN_AXES or a == "S" for a in series.axes),
    )


def _normalise_axes(axes: str, p: Path) -> str:
    out: list[str] = []
    for ax in axes:
        if ax == "S":
            ax = "C"
        elif ax not in _KNOWN_AXES:
            ax = next((a for a in "ZT" if a not in axes and a not in out), ax)
        if ax in out or ax not in _KNOWN_AXES:
            raise ImageReadError(
                f"{str(p)!r} has axes {axes!r} that cannot be mapped to T, Z, C, Y, X; save it "
                "as an ImageJ hyperstack or OME-TIFF with named axes"
            )
        out.append(ax)
    return "".join(out)


def _calibration(
    tif: tifffile.TiffFile, axes: str, p: Path
) -> tuple[Optional[tuple[float, ...]], Optional[str]]:
    """Pixel size per Z/Y/X axis of ``axes`` and its unit (see the module docstring)."""
    return clean_calibration(_stored_calibration(tif), axes, p)


def _stored_calibration(tif: tifffile.TiffFile) -> dict[str, tuple[Any, Optional[str]]]:
    """Raw pixel sizes and units by axis letter, as the file gives them (not yet checked)."""
    if tif.is_ome and tif.ome_metadata:
        return physical_sizes(tif.ome_metadata)
    resolution = _resolution(tif.pages.first)
    sizes: dict[str, Any] = {}
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        if resolution is not None:
            sizes["X"], sizes["Y"] = resolution
        if ij.get("spacing") not in (None, 0, "", 0.0):  # 0: ImageJ's "not set"
            sizes["Z"] = ij["spacing"]
        unit = str(ij.get("unit") or "pixel")
        return {ax: (value, unit) for ax, value in sizes.items()}
    # Only centimetre resolution is physical; inch values are print DPI from editors.
    if resolution is not None and tif.pages.first.tags.valueof(296) == _RESUNIT_CENTIMETER:
        return {"X": (resolution[0], "cm"), "Y": (resolution[1], "cm")}
    return {}


def _resolution(page: Any) -> Optional[tuple[float, float]]:
    """(x, y) pixel size from the resolution tags, which store pixels per unit."""

    def size(code: int) -> Optional[float]:
        value = page.tags.valueof(code)
        if not value or not value[0] or not value[1]:
            return None
        return value[1] / value[0]

    x, y = size(282), size(283)
    if x is None:
        return None
    return x, y or x


def _stored_metadata(tif: tifffile.TiffFile) -> dict[str, Any]:
    text: Optional[str] = None
    if tif.is_ome and tif.ome_metadata:
        text = description(tif.ome_metadata)
    elif tif.is_imagej:
        text = (tif.imagej_metadata or {}).get("Info")
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}  # free text written by other software
    return value if isinstance(value, dict) else {}
