"""Freed memory kept in the C heap for the next forward (glibc only).

glibc's ``malloc`` serves a block larger than its mmap threshold with a mapping of its own and
unmaps it when the block is freed. The threshold adapts to what a process frees, but never beyond
32 MB on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``, glibc's ``malloc/malloc.c``). So every forward of
a net whose blobs pass 32 MB maps them afresh, and the kernel zero-fills each 4 KB page at its
first write. FCN-8s at 500x500 took 60-150 thousand such page faults per forward, 0.2-0.5 s of
system time: on this project's AMD EPYC at 2 threads its default graph took 2.45 s a forward
without this module's setting and 2.06 s with it, against onnxruntime's 2.64-2.67 s in the same
hour (``benchmarks/forward_cpu.py --runs 7``). onnxruntime keeps its blobs in an arena of its own
and pays none of it.

At the first forward that runs a fast kernel (:mod:`.speed`), :func:`keep_freed_memory` raises
both thresholds with ``mallopt`` (its parameters ``M_TRIM_THRESHOLD`` -1 and ``M_MMAP_THRESHOLD``
-3, from glibc's ``malloc.h``): blocks up to :data:`MMAP_THRESHOLD` come from the heap, and freed
memory stays there for the next forward instead of going back to the system. The process then keeps
about its largest forward's memory, as onnxruntime does; the memory serves any later allocation.
It applies to the whole process, once. ``FCN_PORT_KEEP_HEAP=0`` leaves ``malloc`` as it is; it
does nothing where the C library is not glibc (macOS, Windows, musl) and for the plain graph."""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["KEEP_ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory", "kept"]

#: Environment variable: "0" (or "false", "no", "off") leaves glibc's malloc as it is.
KEEP_ENV = "FCN_PORT_KEEP_HEAP"
#: Blocks up to this size come from the heap (larger ones keep their own mappings).
MMAP_THRESHOLD = 1 << 30
#: Free memory at the heap's top that glibc keeps rather than returns (mallopt takes an int).
TRIM_THRESHOLD = (1 << 31) - 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h

_state: bool | None = None  # None: not tried yet in this process


def _turned_off() -> bool:
    return os.environ.get(KEEP_ENV, "").strip().lower() in ("0", "false", "no", "off")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process (module docstring); whether they
    are raised now. False where turned off (:data:`KEEP_ENV`), not on glibc, or refused."""
    global _state
    if _state is None:
        _state = False
        if not _turned_off() and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            # (the trim threshold first: with only the mmap one raised, freed blocks would go back)
            _state = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
                mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            )
    return _state


def kept() -> bool | None:
    """Whether :func:`keep_freed_memory` raised the thresholds in this process (None: not asked yet)."""
    return _state
