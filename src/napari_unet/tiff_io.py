"""Read microscopy images and write label images, without napari or Qt.

Conventions, and why:

* **Axes** are tifffile's letters, normalised to ``T Z C Y X``: ``S`` (samples, e.g. RGB)
  becomes ``C``; unnamed stacking axes (``Q``, ``I``, ...) become ``Z`` (or ``T`` when the
  file already has a ``Z``), since a plain multi-page TIFF is almost always a z-stack.
  The order is the file's: an RGB picture is ``"YXC"``, an ImageJ hyperstack ``"TZCYX"``.
* **Pixel size** is one value per ``Z``/``Y``/``X`` axis present, in axes order. With
  ``unit == "um"`` the values are micrometres (converted from nm, mm, ...); with any other
  unit (ImageJ's ``"pixel"``, for relative anisotropy) they are in that unit. A stack
  calibrated in Y/X only gets ``Z = 1.0``, as in Fiji. ``None`` means no calibration.
  Units are read in any common spelling (``micrometers``, ``micron``, ``µm``, ``angstrom``,
  ``pixels``); a value that is not a positive finite number, or a unit that is not a length,
  is dropped when the file is read, with a :class:`~napari_unet.errors.CalibrationWarning`
  (see :func:`clean_calibration`), so no work starts on a calibration that cannot be written.
* **Label files**: ``uint8``/``uint16`` labels are written as ImageJ hyperstack TIFFs, so
  Fiji opens a stack as a stack, with the calibration in the resolution tags plus ImageJ's
  ``spacing`` (Z) and ``unit``. ImageJ TIFFs cannot hold 32-bit integers, so ``uint32``
  labels (more than 65,535 ids) are written as OME-TIFF with ``PhysicalSize*``; Fiji opens
  them through Bio-Formats. Both are zlib compressed (lossless). Labels given as a lazy
  array (zarr, dask) are streamed tile by tile into a tiled OME BigTIFF, never loaded whole.
* **Provenance metadata** (a JSON object, e.g. model name and settings) is stored in the
  ImageJ ``Info`` property (Fiji: Image > Show Info; Fiji keeps it when re-saving) or, for
  OME-TIFF, in the OME ``Image/Description``. :func:`read_image` returns it as
  :attr:`ImageData.metadata`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence, Union
from xml.etree import ElementTree

import numpy as np
import tifffile

from .atomic import PathLike, atomic_write
from .errors import CalibrationWarning, ImageReadError, InvalidLabelsError, NapariUnetError

if TYPE_CHECKING:
    import dask.array

__all__ = ["ImageData", "check_label_values", "image_stem", "read_image", "read_labels", "read_mask", "write_labels", "LAZY_THRESHOLD_BYTES"]

#: Images larger than this (uncompressed) are read lazily when ``lazy=None``.
LAZY_THRESHOLD_BYTES = 1 << 30
_TILE = 512  # tile side of streamed (lazy) label TIFFs
#: Most bytes one stored byte can decode to, by TIFF compression: deflate 1032 (258 bytes
#: per 2-bit match), LZW 4096 bytes per code of at least 9 bits, PackBits 128 per 2 bytes.
#: Other codecs (JPEG 2000, zstd, LERC, ...) have no such bound and are not checked.
_MAX_RATIO = {
    tifffile.COMPRESSION.ADOBE_DEFLATE: 1032,
    tifffile.COMPRESSION.DEFLATE: 1032,
    tifffile.COMPRESSION.LZW: 4096 * 8 // 9 + 1,
    tifffile.COMPRESSION.PACKBITS: 64,
}
#: Smallest IFD a stored plane needs (count, 4 tags of 12 bytes, next offset).
_MIN_IFD_BYTES = 2 + 4 * 12 + 4

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PICTURE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
_KNOWN_AXES = "TZCYX"
_LABEL_AXES = "TZYX"

# alias -> (canonical unit, micrometres per unit); plurals and NGFF/OME spellings included
_LENGTH_UNITS: dict[str, tuple[str, float]] = {
    **dict.fromkeys(
        ("um", "µm", "μm", "micron", "microns", "micrometer", "micrometers", "micrometre",
         "micrometres"), ("um", 1.0)
    ),
    **dict.fromkeys(("nm", "nanometer", "nanometers", "nanometre", "nanometres"), ("nm", 1e-3)),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
                    ("mm", 1e3)),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
                    ("cm", 1e4)),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), ("m", 1e6)),
    **dict.fromkeys(("inch", "in", "inches"), ("um", 25400.0)),
    **dict.fromkeys(("angstrom", "angstroms", "ångström", "ångströms", "å"), ("um", 1e-4)),
    **dict.fromkeys(("pm", "picometer", "picometers", "picometre", "picometres"), ("um", 1e-6)),
}
#: Spellings of ImageJ's relative unit (pixel size as a ratio, e.g. Z anisotropy).
_PIXEL_UNITS = ("pixel", "pixels", "px", "pix")
_UNIT_NAMES_IMAGEJ = {"um": "micron"}  # what ImageJ itself writes for micrometres
_UNIT_NAMES_OME = {"um": "µm"}  # OME UnitsLength symbols
_RESUNIT_CENTIMETER = 3


@dataclass
class ImageData:
    """An image with the axes and calibration needed to segment and display it correctly."""

    data: Union[np.ndarray, "dask.array.Array"]
    axes: str
    pixel_size: Optional[tuple[float, ...]]
    unit: Optional[str]
    source: str
    #: JSON metadata napari-unet stored in the file (model provenance); empty otherwise.
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading


def read_image(path: PathLike, lazy: Optional[bool] = None) -> ImageData:
    """Read a TIFF / OME-TIFF / ImageJ hyperstack, PNG or JPEG file, or a zarr / OME-Zarr
    store (always lazy).

    The format is sniffed from the first bytes, not the extension, so a TIFF named
    ``.png`` still reads. ``lazy=None`` returns a dask array for images over
    :data:`LAZY_THRESHOLD_BYTES` or over the memory available (so huge stacks do not fill
    memory) and a NumPy array otherwise; ``lazy=True``/``False`` forces either (only TIFF
    can be read lazily). What a TIFF declares is checked before anything is allocated: an
    image that cannot fit is refused with ``lazy=False``, and so is, with ``lazy=True``, a
    compressed piece (strip or tile) that must be decoded whole and cannot fit.
    Every failure is an :class:`ImageReadError` that says what is wrong and what to do.
    """
    p = Path(path)
    from .zarr_io import is_zarr, read_zarr  # zarr_io builds on this module's ImageData

    if is_zarr(p):
        return read_zarr(p)
    _check_regular(p)
    head = _read_head(p)
    if head.startswith(_TIFF_MAGIC):
        return _read_tiff(p, lazy)
    if head.startswith(_PICTURE_MAGIC):
        return _read_with_imageio(p)
    raise ImageReadError(
        f"{str(p)!r} is not a TIFF, PNG or JPEG image (it starts with {head[:4]!r}); "
        "export the image as TIFF, or check that this is the file you meant"
    )


def image_stem(path: PathLike) -> str:
    """The file name without its image suffix (``cells.ome.tif`` -> ``cells``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr", ".png",
                   ".jpeg", ".jpg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def read_labels(path: PathLike) -> np.ndarray:
    """Read a label image (integer ids, 0 = background) into memory, checking it is one."""
    image = read_image(path, lazy=False)
    data = np.asarray(image.data)
    if "C" in image.axes:
        raise InvalidLabelsError(
            f"{str(path)!r} has a colour/channel axis (axes {image.axes!r}), so it is not a "
            "label image; pass a single-channel image of integer ids (0 = background)"
        )
    if data.dtype == bool:
        return data.astype(np.uint8)
    check_label_values(data, what=repr(str(path)))
    return data


def read_mask(path: PathLike) -> np.ndarray:
    """A training/evaluation mask as one label image, its colour channels removed.

    A gray mask saved as RGB(A) (all colour channels equal; an alpha channel, the last of
    2 or 4, is ignored) is read as one channel. A colour-coded mask (channels that differ)
    is refused with :class:`InvalidLabelsError`: reading one channel of it would silently
    drop the objects coded in the others.
    """
    image = read_image(path, lazy=False)  # needed whole: refused here if it cannot fit
    data = np.asarray(image.data)
    if "C" not in image.axes:
        return data
    channels = np.moveaxis(data, image.axes.index("C"), -1)
    if channels.shape[-1] in (2, 4):
        channels = channels[..., :-1]  # alpha: transparency, not labels
    if not (channels == channels[..., :1]).all():
        raise InvalidLabelsError(
            f"{str(path)!r} is a colour mask whose channels differ (axes {image.axes!r}); "
            "reading one channel would lose the objects coded in the others: save the mask "
            "as one label image (a single channel of integer ids, 0 = background)"
        )
    return channels[..., 0]


def _check_regular(p: Path) -> None:
    """Refuse a FIFO, socket or device before opening it: opening a FIFO waits for a
    writer, forever when there is none. A missing path or a folder is left to
    :func:`_read_head`, which says so."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ImageReadError(
            f"{str(p)!r} is not a regular file (a FIFO, socket or device); reading it could "
            "wait forever: pass an image file (TIFF, PNG, JPEG) or a zarr folder"
        )


def _read_head(p: Path) -> bytes:
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise ImageReadError(
            f"{str(p)!r} does not exist; check the path (relative paths start in {os.getcwd()!r})"
        ) from None
    except IsADirectoryError:
        raise ImageReadError(f"{str(p)!r} is a folder; pass an image file inside it") from None
    except PermissionError:
        raise ImageReadError(
            f"{str(p)!r} cannot be opened: permission denied; fix the file's permissions or "
            "copy it somewhere readable"
        ) from None
    except OSError as exc:
        raise ImageReadError(f"{str(p)!r} cannot be opened ({exc}); check the path") from exc
    if not head:
        raise ImageReadError(
            f"{str(p)!r} is empty (0 bytes); it was not saved or copied completely; "
            "export or copy it again"
        )
    return head


def _read_with_imageio(p: Path) -> ImageData:
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(p))
    except Exception as exc:
        raise ImageReadError(
            f"{str(p)!r} is a damaged or incomplete PNG/JPEG ({type(exc).__name__}: {exc}); "
            "copy or export it again"
        ) from exc
    if data.ndim == 2:
        axes = "YX"
    elif data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        axes = "YXC"
    else:
        raise ImageReadError(
            f"{str(p)!r} holds an array of shape {data.shape}, which is not a 2-D picture; "
            "save stacks and time series as TIFF"
        )
    return ImageData(data=data, axes=axes, pixel_size=None, unit=None, source=os.fspath(p))


class _ErrorCollector(logging.Filter):
    """Collects (and swallows) tifffile's logged errors from the current thread only."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread and record.levelno >= logging.ERROR:
            self.messages.append(record.getMessage())
            return False
        return True


@contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """tifffile logs (not raises) broken page chains and then returns fewer pages; catch them."""
    log = logging.getLogger("tifffile")
    collector = _ErrorCollector()
    log.addFilter(collector)
    try:
        yield collector.messages
    finally:
        log.removeFilter(collector)


def _damaged(p: Path, reason: str) -> ImageReadError:
    return ImageReadError(
        f"{str(p)!r} is a damaged or incomplete TIFF ({reason}); it may have been truncated "
        "while copying or saving: copy or export it again"
    )


def _read_tiff(p: Path, lazy: Optional[bool]) -> ImageData:
    try:
        with _tifffile_errors() as errors, tifffile.TiffFile(p) as tif:
            _check_ome_planes(tif, p)  # before tif.series, which lists every declared plane
            if not tif.series:
                raise _damaged(p, "it holds no image")
            series = tif.series[0]
            axes = _normalise_axes(series.axes, p)
            if 0 in tuple(series.shape):
                raise ImageReadError(
                    f"{str(p)!r} holds an empty image (shape {tuple(series.shape)}, no pixels); "
                    "export the image again, or check that this is the file you meant"
                )
            _check_planes(series, p)
            _check_extent(series, p.stat().st_size, p)
            _check_logged(errors, p)
            pixel_size, unit = _calibration(tif, axes, p)
            metadata = _stored_metadata(tif)
            available = _available_memory()
            if lazy is None:  # an image that cannot fit is read lazily too
                lazy = series.nbytes > min(LAZY_THRESHOLD_BYTES, available or math.inf)
            if lazy:
                data: Any = _lazy_array(series, p, available)
            else:
                _check_fits(p, series.nbytes, available,
                            f"reading its {_describe(series.shape, series.dtype)} image whole",
                            "free memory, or read it lazily (read_image(..., lazy=True)) or "
                            "convert it to OME-Zarr, which is read block by block")
                data = series.asarray(level=0)
            _check_logged(errors, p)
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
        raise _damaged(p, f"{type(exc).__name__}: {exc}") from exc
    return ImageData(
        data=data,
        axes=axes,
        pixel_size=pixel_size,
        unit=unit,
        source=os.fspath(p),
        metadata=metadata,
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


def _check_planes(series: Any, p: Path) -> None:
    """Refuse a header (OME ``SizeZ``/``SizeT``/``SizeC``) that declares more planes than
    the file stores: tifffile fills the missing ones with zeros, so a 1-plane file
    claiming 1000 planes would be segmented and written as 1000 planes."""
    pages = list(series.pages)
    stored = sum(page is not None for page in pages)
    if stored < len(pages):
        raise _planes_missing(p, len(pages), f"shape {tuple(series.shape)}, axes {series.axes!r}",
                              f"the file stores only {stored}")


def _planes_missing(p: Path, declared: int, layout: str, stored: str) -> ImageReadError:
    return ImageReadError(
        f"{str(p)!r}: its header declares {declared} planes ({layout}) but {stored}; the "
        "header is wrong, the file is incomplete, or the other files of a multi-file OME "
        "dataset are missing: export the image again (e.g. save it from Fiji as TIFF)"
    )


def _check_extent(series: Any, size: int, p: Path) -> None:
    """Reject image data that runs past the end of the file (a truncated copy), or that is
    compressed too little to hold the declared pixels: deflate cannot decode to more than
    1032 times its size, so a 1 KB strip declared 100000 x 100000 is a damaged header, and
    decoding it would first allocate the declared 10 GB."""
    if series.dataoffset is not None:  # contiguous, uncompressed
        end = series.dataoffset + series.nbytes
    else:
        end = 0
        key = series.keyframe
        ratio = _MAX_RATIO.get(key.compression)
        for page in series.pages:
            if page is None:
                continue
            end = max([end, *(o + n for o, n in zip(page.dataoffsets, page.databytecounts))])
            stored = sum(page.databytecounts)
            if ratio is not None and key.nbytes > ratio * stored:
                raise _damaged(p, (
                    f"it declares {_describe(series.shape, series.dtype)} pixels "
                    f"({_size(series.nbytes)}), but a plane's {stored} bytes of "
                    f"{key.compression.name.lower()} data decode to at most "
                    f"{_size(ratio * stored)}"))
    if end > size:
        raise _damaged(p, f"image data needs {end} bytes, the file has {size}")


def _check_logged(errors: list[str], p: Path) -> None:
    """Refuse a file tifffile logged as broken (a page chain or tag that does not add up)."""
    if errors:
        raise _damaged(p, errors[0])


def _check_ome_planes(tif: tifffile.TiffFile, p: Path) -> None:
    """Refuse an OME header that declares more planes than its files store, before
    tifffile reads it: tifffile allots a list entry per declared plane (Z x C x T, or the
    declared pixels over those of the image's first page), so a 1 KB file declaring 10^9
    planes would take 8 GB.

    This file's planes are its IFDs; those of other files its header names (a multi-file
    dataset) are bounded by their size, at :data:`_MIN_IFD_BYTES` or more per IFD."""
    if not tif.is_ome:
        return
    try:
        root = ElementTree.fromstring(tif.ome_metadata or "")
    except ElementTree.ParseError:
        return  # tifffile falls back to reading the pages as a plain stack
    names = {el.get("FileName") or "" for el in root.iter() if _tag(el) == "UUID"}
    others = {os.path.abspath(p.parent / name) for name in names if name} - {os.path.abspath(p)}
    pages = len(tif.pages)
    most = pages + sum(map(_file_bytes, others)) // _MIN_IFD_BYTES
    stored = (f"its {len(others) + 1} files can store at most {most}" if others
              else f"the file stores only {most}")
    for pixels in (el for el in root.iter() if _tag(el) == "Pixels"):
        try:
            size = {ax: int(pixels.get(f"Size{ax}", 1)) for ax in "XYZCT"}
            samples = max(1, next((int(el.get("SamplesPerPixel", 1)) for el in pixels
                                   if _tag(el) == "Channel"), 1))
            data = [el for el in pixels if _tag(el) == "TiffData"]
            counts = [int(el.get(name, 0)) for el in data for name in ("PlaneCount", "NumPlanes")]
            ifds = [int(el.get("IFD", 0)) for el in data
                    if all(_tag(u) != "UUID" or (u.get("FileName") or "").lower() == p.name.lower()
                           for u in el)]  # this file's IFDs (tifffile too ignores case)
        except ValueError:
            continue  # tifffile refuses it, and that is reported as damage
        stack = size["Z"] * (size["C"] // samples) * size["T"]
        pixels_per_plane = size["X"] * size["Y"] * samples
        first = next((i for i in ifds if 0 <= i < pages), None)
        page = int(tif.pages[first].size) if first is not None else pixels_per_plane
        declared = max(stack, stack * pixels_per_plane // max(1, page), *counts)
        if declared > most:
            layout = "OME " + " ".join(f"Size{ax}={n}" for ax, n in size.items())
            raise _planes_missing(p, declared, layout, stored)


def _tag(element: ElementTree.Element) -> str:
    """An XML element's name without its namespace (OME schemas differ by year)."""
    return element.tag.rsplit("}", 1)[-1]


def _file_bytes(path: str) -> int:
    """Size of a regular file, 0 for anything else or a name that cannot be looked up."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _available_memory() -> Optional[int]:
    """Bytes of memory the machine can still give: Linux's ``MemAvailable`` (free memory
    plus cache it can drop), else the physical memory (macOS), else None (not checked)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits(p: Path, need: int, available: Optional[int], what: str, fix: str) -> None:
    """Refuse, before allocating, ``need`` bytes the machine does not have."""
    if available is not None and need > available:
        raise ImageReadError(
            f"{str(p)!r}: {what} needs {_size(need)} of memory, more than the "
            f"{_size(available)} available; {fix}"
        )


def _describe(shape: Sequence[int], dtype: Any) -> str:
    return f"{' x '.join(map(str, shape))} {np.dtype(dtype).name}"


def _size(nbytes: int) -> str:
    """A byte count for people: ``"9.3 GiB"``."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    exponent = min((int(nbytes).bit_length() - 1) // 10, 5)
    return f"{nbytes / 1024 ** exponent:.1f} {'KMGTP'[exponent - 1]}iB"


def _lazy_array(series: Any, p: Path, available: Optional[int]) -> "dask.array.Array":
    """A dask view of the series whose block reads cost about the block.

    Uncompressed planes at regular places in the file (ImageJ, tifffile and most writers)
    are read through a memory map. Anything else goes through tifffile's zarr store, which
    decodes a whole strip or tile for any pixel of it, a whole plane when the plane is one
    strip: a piece larger than the memory available is refused here."""
    import dask.array as da

    layout = _plane_layout(series)
    if layout is not None:
        planes = _FilePlanes(p, *layout, series.keyframe.shape, series.keyframe.dtype,
                             byteorder=series.parent.byteorder)
        chunks = (1,) + ("auto",) * (planes.ndim - 1)
        return da.from_array(planes, chunks=chunks, name=False).reshape(series.shape)
    # The store reopens the file on demand, so closing the TiffFile afterwards is fine.
    data = da.from_zarr(series.aszarr(level=0))
    _check_fits(p, math.prod(data.chunksize) * data.dtype.itemsize, available,
                f"decoding one compressed piece ({_describe(data.chunksize, data.dtype)}; a "
                "plane stored as one strip is one piece) of its "
                f"{_describe(series.shape, series.dtype)} image",
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


def _calibration(
    tif: tifffile.TiffFile, axes: str, p: Path
) -> tuple[Optional[tuple[float, ...]], Optional[str]]:
    """Pixel size per Z/Y/X axis of ``axes`` and its unit (see the module docstring)."""
    return clean_calibration(_stored_calibration(tif), axes, p)


def _stored_calibration(tif: tifffile.TiffFile) -> dict[str, tuple[Any, Optional[str]]]:
    """Raw pixel sizes and units by axis letter, as the file gives them (not yet checked)."""
    if tif.is_ome and tif.ome_metadata:
        return _ome_calibration(tif.ome_metadata)
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


def _unit_key(unit: Optional[str]) -> str:
    """A unit as a key of :data:`_LENGTH_UNITS`, or ``"pixel"`` for a relative unit."""
    key = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)),  # ImageJ escapes µ, Å
                 str(unit or "")).strip().lower()
    return "pixel" if key in _PIXEL_UNITS else key


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
        key = _unit_key(unit)
        if unit is None or key == "pixel":
            values[ax] = number
            units.add(None if unit is None else "pixel")
            continue
        known = _LENGTH_UNITS.get(key)
        if known is None:
            warnings.warn(CalibrationWarning(
                f"{name!r}: the pixel size is in {unit!r}, a unit napari-unet does not know; "
                "the calibration is ignored (use a length unit such as 'micrometer', or "
                "'pixel')"), stacklevel=3)
            return None, None
        canonical = "um" if micrometres else known[0]
        values[ax] = number * known[1] / _LENGTH_UNITS[canonical][1]
        units.add(canonical)
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


def _ome_calibration(xml: str) -> dict[str, tuple[Any, Optional[str]]]:
    """Raw PhysicalSize* of the first image, with their units (OME's default: µm)."""
    image = _first_ome_image(xml)
    pixels = _child(image, "Pixels") if image is not None else None
    if pixels is None:
        return {}
    return {ax: (pixels.get(f"PhysicalSize{ax}"), pixels.get(f"PhysicalSize{ax}Unit", "µm"))
            for ax in "XYZ" if pixels.get(f"PhysicalSize{ax}") is not None}


def _first_ome_image(xml: str) -> Optional[ElementTree.Element]:
    """The OME ``Image`` element that tifffile's ``series[0]`` reads."""
    try:
        return _child(ElementTree.fromstring(xml), "Image")
    except ElementTree.ParseError:
        return None


def _child(parent: ElementTree.Element, name: str) -> Optional[ElementTree.Element]:
    """First child called ``name``, whatever the OME schema namespace."""
    return next((el for el in parent if _tag(el) == name), None)


def _stored_metadata(tif: tifffile.TiffFile) -> dict[str, Any]:
    text: Optional[str] = None
    if tif.is_ome and tif.ome_metadata:
        image = _first_ome_image(tif.ome_metadata)
        description = _child(image, "Description") if image is not None else None
        text = description.text if description is not None else None
    elif tif.is_imagej:
        text = (tif.imagej_metadata or {}).get("Info")
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}  # free text written by other software
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- writing


def write_labels(
    path: PathLike,
    labels: Any,
    *,
    axes: Optional[str] = None,
    pixel_size: Optional[Sequence[float]] = None,
    unit: Optional[str] = "um",
    metadata: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Atomically write a label image as a compressed TIFF that Fiji and napari open.

    ``labels`` holds integer ids >= 0 (bool masks are accepted); it is stored in the
    smallest of uint8/uint16/uint32 that holds the largest id. ``axes`` is an ordered
    subset of ``"TZYX"`` ending in ``"YX"`` (default ``"YX"``/``"ZYX"`` by dimension);
    ``pixel_size`` has one value per Z/Y/X axis in ``unit`` (``None``, as :func:`read_image`
    gives for uncalibrated files, means micrometres); ``metadata`` is a
    JSON-serialisable dict kept in the file (see the module docstring for where).
    Length-1 T/Z axes are dropped, as every reader squeezes them anyway.
    Returns the written path; raises :class:`InvalidLabelsError` for bad labels and
    :class:`~napari_unet.errors.OutputWriteError` when the file cannot be written
    (the previous file, if any, is then left unchanged).
    """
    data = _as_lazy_labels(labels) if _is_lazy(labels) else _as_labels(labels)
    axes = _label_axes(axes, data.shape)
    spatial = [ax for ax in axes if ax in "ZYX"]
    if pixel_size is None:
        sizes: dict[str, float] = {}
    else:
        values = [float(v) for v in pixel_size]
        if len(values) != len(spatial) or not all(math.isfinite(v) and v > 0 for v in values):
            raise InvalidLabelsError(
                f"pixel_size needs one positive value per Z/Y/X axis of {axes!r} "
                f"({len(spatial)}), got {tuple(pixel_size)!r}"
            )
        sizes = dict(zip(spatial, values))
    # Readers (tifffile, Fiji) squeeze length-1 T/Z axes anyway, and tifffile's OME
    # writer rejects some of them: drop them here, with their pixel size.
    dropped = [ax for ax, n in zip(axes, data.shape) if ax in "TZ" and n == 1]
    if dropped:
        data = data.reshape([n for ax, n in zip(axes, data.shape) if ax not in dropped])
        axes = "".join(ax for ax in axes if ax not in dropped)
        sizes = {ax: v for ax, v in sizes.items() if ax not in dropped}
    key = _unit_key(unit or "um")
    if key != "pixel" and key not in _LENGTH_UNITS:
        raise InvalidLabelsError(f"unknown unit {unit!r}; use 'um', 'nm', 'mm', 'cm', 'm', 'inch' or 'pixel'")
    canonical = "pixel" if key == "pixel" else _LENGTH_UNITS[key][0]
    if key != "pixel":  # e.g. inch -> um: the values follow the unit they are written in
        to_canonical = _LENGTH_UNITS[key][1] / _LENGTH_UNITS[canonical][1]
        sizes = {ax: v * to_canonical for ax, v in sizes.items()}
    try:
        info = json.dumps(dict(metadata), allow_nan=False) if metadata else None
    except (TypeError, ValueError) as exc:
        raise InvalidLabelsError(
            f"metadata must be JSON-serialisable ({exc}); convert values to str, int, float, "
            "bool, list or dict"
        ) from exc
    writer = _write_ome if data.dtype == np.uint32 or _is_lazy(data) else _write_imagej
    return atomic_write(
        path, partial(writer, data=data, axes=axes, sizes=sizes, unit=canonical, info=info),
        overwrite=overwrite,
    )


def check_label_values(data: np.ndarray, what: str) -> None:
    """Refuse anything but non-negative integer (or boolean) ids, with the fix in the message.

    Floats are refused even when whole-numbered, so a probability map is never taken for
    labels by accident.
    """
    if data.dtype.kind not in "bui":
        raise InvalidLabelsError(
            f"{what} has dtype {data.dtype}, but labels must be non-negative integer ids "
            "(0 = background); "
            "convert whole-number values with .astype(np.uint32), or threshold/label a "
            "probability map first"
        )
    if data.dtype.kind == "i" and data.size and data.min() < 0:
        raise InvalidLabelsError(
            f"{what} contains negative values (minimum {data.min()}); labels must be "
            "non-negative ids, 0 for background: set negative pixels to 0 or relabel"
        )


def _as_labels(labels: Any) -> np.ndarray:
    data = np.asarray(labels)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    check_label_values(data, what="the label image")
    if data.size == 0:
        raise InvalidLabelsError(
            f"the label image is empty (shape {data.shape}); pass an array with pixels"
        )
    top = int(data.max())
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return np.ascontiguousarray(data.astype(dtype, copy=False))
    raise InvalidLabelsError(
        f"the largest label id {top} does not fit in 32 bits; renumber the labels, e.g. "
        "with skimage.segmentation.relabel_sequential"
    )


def _is_lazy(labels: Any) -> bool:
    """Array-likes that are not in memory (dask, zarr): streamed, never loaded whole."""
    return not isinstance(labels, np.ndarray) and hasattr(labels, "shape") and hasattr(
        labels, "dtype") and not np.isscalar(labels)


def _as_lazy_labels(labels: Any) -> "dask.array.Array":
    """A dask view of lazy labels in the smallest uint dtype (one pass for min and max)."""
    import dask.array as da

    data = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=_chunks(labels))
    check_label_values(np.zeros(0, data.dtype), what="the label image")
    if data.size == 0:
        raise InvalidLabelsError(
            f"the label image is empty (shape {data.shape}); pass an array with pixels"
        )
    low, top = (int(v) for v in da.compute(data.min(), data.max()))
    if low < 0:
        raise InvalidLabelsError(
            f"the label image contains negative values (minimum {low}); labels must be "
            "non-negative ids, 0 for background: set negative pixels to 0 or relabel"
        )
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return data.astype(dtype)
    raise InvalidLabelsError(
        f"the largest label id {top} does not fit in 32 bits; renumber the labels"
    )


def _chunks(labels: Any) -> Any:
    """A lazy array's own chunks (zarr) when it has them, else dask's default."""
    chunks = getattr(labels, "chunks", None)
    return chunks if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks) else "auto"


def _label_axes(axes: Optional[str], shape: tuple[int, ...]) -> str:
    if axes is None:
        axes = {2: "YX", 3: "ZYX"}.get(len(shape), "")
        if not axes:
            raise InvalidLabelsError(
                f"labels of shape {shape} need explicit axes; pass axes='TZYX' (or the "
                "subset that matches)"
            )
    axes = axes.upper()
    ordered = "".join(ax for ax in _LABEL_AXES if ax in axes)
    if axes != ordered or not axes.endswith("YX"):
        raise InvalidLabelsError(
            f"label axes {axes!r} are not supported; use an ordered subset of 'TZYX' ending "
            "in 'YX' (transpose the array first, e.g. with np.moveaxis)"
        )
    if len(axes) != len(shape):
        raise InvalidLabelsError(
            f"labels have {len(shape)} dimensions (shape {shape}) but axes {axes!r} name "
            f"{len(axes)}; pass axes with one letter per dimension"
        )
    return axes


def _write_imagej(
    tmp: Path, *, data: np.ndarray, axes: str, sizes: dict[str, float], unit: str,
    info: Optional[str],
) -> None:
    # An explicit length-1 samples axis stops tifffile from taking a stack's X axis of
    # length 1 for RGB samples.
    data = data[..., np.newaxis]
    metadata: dict[str, Any] = {"axes": axes + "S"}
    resolution = None
    if sizes:
        metadata["unit"] = _UNIT_NAMES_IMAGEJ.get(unit, unit)
        resolution = (1.0 / sizes["X"], 1.0 / sizes["Y"])
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
    if info:
        metadata["Info"] = info
    tifffile.imwrite(
        tmp,
        data,
        imagej=True,
        photometric="minisblack",
        compression="zlib",
        resolution=resolution,
        metadata=metadata,
    )


def _write_ome(
    tmp: Path, *, data: np.ndarray, axes: str, sizes: dict[str, float], unit: str,
    info: Optional[str],
) -> None:
    metadata: dict[str, Any] = {"axes": axes}
    for ax, value in sizes.items():
        metadata[f"PhysicalSize{ax}"] = value
        metadata[f"PhysicalSize{ax}Unit"] = _UNIT_NAMES_OME.get(unit, unit)
    if info:
        metadata["Description"] = info
    if isinstance(data, np.ndarray):
        tifffile.imwrite(
            tmp, data, ome=True, photometric="minisblack", compression="zlib", metadata=metadata
        )
        return
    tifffile.imwrite(  # streamed: one tile in memory at a time
        tmp, _tiles(data), shape=data.shape, dtype=data.dtype, tile=(_TILE, _TILE),
        bigtiff=True, ome=True, photometric="minisblack", compression="zlib", metadata=metadata,
    )


def _tiles(data: Any) -> Iterator[np.ndarray]:
    """Tiles of a lazy (..., Y, X) array in TIFF order: page by page, rows of tiles."""
    height, width = data.shape[-2:]
    for index in np.ndindex(*data.shape[:-2]):
        for y in range(0, height, _TILE):
            for x in range(0, width, _TILE):
                yield np.asarray(data[index + (slice(y, y + _TILE), slice(x, x + _TILE))])
