"""What a TIFF declares, checked against what it stores before anything is allocated:
planes its header claims but the file lacks, data that runs past the end of the file or is
compressed too little to hold the declared pixels, and broken page chains tifffile only
logs. Each is refused with an :class:`~napari_unet.errors.ImageReadError` saying what to do.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import tifffile

from ..errors import ImageReadError
from .memory import byte_size, describe
from .ome_xml import local_name

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
def tifffile_errors() -> Iterator[list[str]]:
    """tifffile logs (not raises) broken page chains and then returns fewer pages; catch them."""
    log = logging.getLogger("tifffile")
    collector = _ErrorCollector()
    log.addFilter(collector)
    try:
        yield collector.messages
    finally:
        log.removeFilter(collector)


def damaged(p: Path, reason: str) -> ImageReadError:
    """The error for a TIFF that is damaged or incomplete, with ``reason``."""
    return ImageReadError(
        f"{str(p)!r} is a damaged or incomplete TIFF ({reason}); it may have been truncated "
        "while copying or saving: copy or export it again"
    )


def check_planes(series: Any, p: Path) -> None:
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


def check_extent(series: Any, size: int, p: Path) -> None:
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
                raise damaged(p, (
                    f"it declares {describe(series.shape, series.dtype)} pixels "
                    f"({byte_size(series.nbytes)}), but a plane's {stored} bytes of "
                    f"{key.compression.name.lower()} data decode to at most "
                    f"{byte_size(ratio * stored)}"))
    if end > size:
        raise damaged(p, f"image data needs {end} bytes, the file has {size}")


def check_logged(errors: list[str], p: Path) -> None:
    """Refuse a file tifffile logged as broken (a page chain or tag that does not add up)."""
    if errors:
        raise damaged(p, errors[0])


def check_ome_planes(tif: tifffile.TiffFile, p: Path) -> None:
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
    names = {el.get("FileName") or "" for el in root.iter() if local_name(el) == "UUID"}
    others = {os.path.abspath(p.parent / name) for name in names if name} - {os.path.abspath(p)}
    pages = len(tif.pages)
    most = pages + sum(map(_file_bytes, others)) // _MIN_IFD_BYTES
    stored = (f"its {len(others) + 1} files can store at most {most}" if others
              else f"the file stores only {most}")
    for pixels in (el for el in root.iter() if local_name(el) == "Pixels"):
        try:
            size = {ax: int(pixels.get(f"Size{ax}", 1)) for ax in "XYZCT"}
            samples = max(1, next((int(el.get("SamplesPerPixel", 1)) for el in pixels
                                   if local_name(el) == "Channel"), 1))
            data = [el for el in pixels if local_name(el) == "TiffData"]
            counts = [int(el.get(name, 0)) for el in data for name in ("PlaneCount", "NumPlanes")]
            ifds = [int(el.get("IFD", 0)) for el in data
                    if all(local_name(u) != "UUID"
                           or (u.get("FileName") or "").lower() == p.name.lower()
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


def _file_bytes(path: str) -> int:
    """Size of a regular file, 0 for anything else or a name that cannot be looked up."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0
