"""Will it fit? The memory the machine can still give, checked before allocating, and
sizes in words for the messages that refuse."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ImageReadError


def available_memory() -> Optional[int]:
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


def check_fits(p: Path, need: int, available: Optional[int], what: str, fix: str) -> None:
    """Refuse, before allocating, ``need`` bytes the machine does not have."""
    if available is not None and need > available:
        raise ImageReadError(
            f"{str(p)!r}: {what} needs {byte_size(need)} of memory, more than the "
            f"{byte_size(available)} available; {fix}"
        )


def describe(shape: Sequence[int], dtype: Any) -> str:
    """An array's shape and dtype for people: ``"2 x 512 x 512 uint16"``."""
    return f"{' x '.join(map(str, shape))} {np.dtype(dtype).name}"


def byte_size(nbytes: int) -> str:
    """A byte count for people: ``"9.3 GiB"``."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    exponent = min((int(nbytes).bit_length() - 1) // 10, 5)
    return f"{nbytes / 1024 ** exponent:.1f} {'KMGTP'[exponent - 1]}iB"
