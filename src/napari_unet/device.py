"""Device choice and the fast numeric path for each device.

CUDA first, then Apple MPS, then the CPU. On CPUs with AVX-512/AMX, bf16 autocast plus
``channels_last`` runs U-Nets ~4-5x faster than fp32 (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto") -> torch.device:
    """Resolve ``auto`` to the best available device; refuse ones that are absent."""
    if name not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {name!r}; choose one of {DEVICE_CHOICES}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' was asked for but Apple MPS is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def describe(device: torch.device) -> str:
    """The device in words, for provenance and benchmarks: ``cuda: NVIDIA H200``,
    ``cpu: AMD EPYC`` (a model's training time means little without it)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        info = Path("/proc/cpuinfo")
        lines = info.read_text().splitlines() if info.exists() else []
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                    platform.processor() or platform.machine())
        return f"cpu: {name}"
    return device.type


def cpu_has_fast_bf16() -> bool:
    """True when the CPU runs bf16 matrix products natively (AVX-512 BF16 or AMX)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")


def fast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision that runs fastest on ``device`` without hurting accuracy
    (float32 where there is none): bf16 on CPUs that run it natively and on CUDA that
    supports it, else fp16 on CUDA and MPS."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision in :func:`fast_dtype` where there is one, else nothing."""
    dtype = fast_dtype(device)
    if not enabled or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def default_batch(device: torch.device) -> int:
    """Tiles per forward pass: 2 on CPUs (measured ~7% faster than 1 and 4 at 256 px
    tiles, docs/benchmarks.md), 8 on CUDA and 4 on MPS to keep the accelerator busy."""
    return {"cuda": 8, "mps": 4}.get(device.type, 2)


def memory_format(device: torch.device) -> torch.memory_format:
    """``channels_last`` pays off for convolutions on CPU and CUDA."""
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily cap torch's intra-op threads (keeps a core free for a GUI event loop)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def keep_freed_memory() -> bool:
    """Let glibc keep freed buffers for reuse instead of returning them to the OS after
    every tile (each return costs page faults on the next tile: ~10-20% of end-to-end time
    here, docs/benchmarks.md). Process-wide, so only the CLI calls it, never the library or
    the plugin; a no-op (False) off glibc Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_trim_threshold, 512 << 20)
                    and libc.mallopt(m_mmap_threshold, 32 << 20))
    except (OSError, AttributeError):
        return False
