"""Units of pixel size: the one table of the units napari-unet reads and writes, and the
check every calibration passes through before any work.

A unit is found by any common spelling (``micrometers``, ``micron``, ``µm``, ImageJ's
escaped ``\\u00B5m``, ``angstrom``, ``pixels``); each format napari-unet writes spells it its
own way (ImageJ ``micron``, OME ``µm``, NGFF ``micrometer``), and napari (pint) is given only
the units it is known to accept. ``"pixel"`` is ImageJ's relative unit (a pixel size as a
ratio, e.g. Z anisotropy).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import CalibrationWarning
from .atomic import PathLike


@dataclass(frozen=True)
class Unit:
    """One unit of the table below, and how each format spells it."""

    #: napari-unet's name, the :attr:`~napari_unet.io.image.ImageData.unit` of an image in it.
    name: str
    #: Micrometres in one unit; None for the relative unit ``"pixel"``.
    micrometres: Optional[float]
    #: The unit sizes are converted to when read or written: itself, or ``"um"`` for units
    #: that no format napari-unet writes names (inch, angstrom, picometre).
    stored_as: str
    #: What ImageJ, OME and NGFF (OME-Zarr) call it; None where it is never written so.
    imagej: Optional[str]
    ome: Optional[str]
    ngff: Optional[str]
    #: The name napari (pint) is given for a layer's units; None: the layer gets no units.
    napari: Optional[str]
    #: Other spellings read as this unit (lower case; plurals, British spellings).
    spellings: tuple[str, ...]


_TABLE = (
    # name     micrometres  stored_as  ImageJ    OME     NGFF          napari
    Unit("um", 1.0, "um", "micron", "µm", "micrometer", "um",
         ("µm", "μm", "micron", "microns", "micrometer", "micrometers", "micrometre",
          "micrometres")),
    Unit("nm", 1e-3, "nm", "nm", "nm", "nanometer", None,
         ("nanometer", "nanometers", "nanometre", "nanometres")),
    Unit("mm", 1e3, "mm", "mm", "mm", "millimeter", None,
         ("millimeter", "millimeters", "millimetre", "millimetres")),
    Unit("cm", 1e4, "cm", "cm", "cm", "centimeter", None,
         ("centimeter", "centimeters", "centimetre", "centimetres")),
    Unit("m", 1e6, "m", "m", "m", "meter", None, ("meter", "meters", "metre", "metres")),
    Unit("inch", 25400.0, "um", None, None, "inch", None, ("in", "inches")),
    Unit("angstrom", 1e-4, "um", None, None, None, None,
         ("angstroms", "ångström", "ångströms", "å")),
    Unit("pm", 1e-6, "um", None, None, None, None,
         ("picometer", "picometers", "picometre", "picometres")),
    Unit("pixel", None, "pixel", "pixel", "pixel", None, "pixel", ("pixels", "px", "pix")),
)
#: The units by napari-unet's name (``"um"``, ``"nm"``, ..., ``"pixel"``).
UNITS: Mapping[str, Unit] = {unit.name: unit for unit in _TABLE}
_BY_SPELLING = {spelling: unit for unit in _TABLE for spelling in (unit.name, *unit.spellings)}


def find_unit(unit: Optional[str]) -> Optional[Unit]:
    """The unit ``unit`` names in any spelling the table knows, else None."""
    key = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)),  # ImageJ escapes µ, Å
                 str(unit or "")).strip().lower()
    return _BY_SPELLING.get(key)


def common_unit(units: Iterable[Any]) -> str:
    """One unit name for several axes (napari keeps a unit per axis): the name of the unit
    they all spell, or ``"pixel"`` when one is unknown or they differ, since such sizes
    cannot be written as one calibration."""
    found = {find_unit(str(unit)) for unit in units}
    if len(found) != 1 or None in found:
        return "pixel"
    return found.pop().name  # type: ignore[union-attr]


def _number(value: Any) -> Optional[float]:
    """``value`` as a positive finite float, or None (NaN, inf, 0, negative, not a number)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def clean_calibration(
    sizes: Mapping[str, tuple[Any, Optional[str]]], axes: str, source: PathLike,
    *, micrometres: bool = True,
) -> tuple[Optional[tuple[float, ...]], Optional[str]]:
    """Pixel size per Z/Y/X axis of ``axes`` and its unit, from a file's raw calibration
    (``{axis: (value, unit)}``), read as far as it can be, before any work.

    Length units in any spelling (``micrometers``, ``micron``, ``µm``, ``angstrom``, ...)
    are converted to micrometres (``micrometres=False``: to the unit's canonical name,
    ``nm`` stays ``nm``); ``pixels``/``px`` are the relative unit ``"pixel"``; a unit of
    ``None`` stays ``None`` (values without a unit). A value that is not a positive finite
    number is dropped for its axis with a :class:`CalibrationWarning` (Z then is 1.0, X
    takes Y's value and the reverse, as for a file that never gave it); an unknown unit,
    or length units mixed with relative ones, drops the whole calibration with a warning.
    """
    name = str(source)
    values: dict[str, float] = {}
    units: set[Optional[str]] = set()
    for ax, (raw, unit) in sizes.items():
        number = _number(raw)
        if number is None:
            fill = "1.0 is used" if ax == "Z" else "the other axis's pixel size is used"
            warnings.warn(CalibrationWarning(
                f"{name!r}: the pixel size along {ax} is {raw!r}, not a positive number; it "
                f"is ignored ({fill})"), stacklevel=3)
            continue
        known = find_unit(unit)
        if unit is None or (known is not None and known.micrometres is None):
            values[ax] = number
            units.add(None if unit is None else "pixel")
            continue
        if known is None:
            warnings.warn(CalibrationWarning(
                f"{name!r}: the pixel size is in {unit!r}, a unit napari-unet does not know; "
                "the calibration is ignored (use a length unit such as 'micrometer', or "
                "'pixel')"), stacklevel=3)
            return None, None
        target = UNITS["um" if micrometres else known.stored_as]
        values[ax] = number * known.micrometres / target.micrometres  # type: ignore[operator]
        units.add(target.name)
    if len(units) > 1:
        warnings.warn(CalibrationWarning(
            f"{name!r}: the pixel sizes mix units ({', '.join(sorted(map(str, units)))}), "
            "which cannot be expressed as one calibration; it is ignored"), stacklevel=3)
        return None, None
    unit_out = units.pop() if units else None
    if not values or (unit_out == "pixel" and all(v == 1.0 for v in values.values())):
        return None, None  # ImageJ's and tifffile's default: uncalibrated
    values.setdefault("X", values.get("Y", 1.0))
    values.setdefault("Y", values["X"])
    values.setdefault("Z", 1.0)
    return tuple(values[ax] for ax in axes if ax in "ZYX"), unit_out
