"""CPU allocator tuning for the gradient engine (glibc malloc).

A parameter-level step used to allocate T fresh copies of the shared gradients (44 MB each for
a ResNet18) and free them again. With glibc's defaults, blocks that large are served by mmap and
returned to the OS on free, so every step page-faulted them in anew: on this project's 2-core CPU
that made the T encoder VJPs ~25 % slower and the stacking of the Jacobian ~5× slower
(docs/bench/cpu_malloc_tuned_vs_default.md). The engine now keeps its Jacobian blocks from one
step to the next (`mtlcheck.gradients.jacobian_buffers`), so a library user gets that part
without tuning; the gradients autograd allocates in each backward pass remain. Raising the mmap
threshold to its maximum (32 MiB) and never trimming the heap keeps freed blocks for reuse —
what PyTorch's caching allocator does on a GPU. Memory freed by one step stays in the process
for the next (the resident size stays at its peak).

The CLI applies it to its own process (`MTLCHECK_MALLOC=default` turns it off); importing
mtlcheck as a library changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc rejects larger values on 64-bit (HEAP_MAX_SIZE / 2)
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int

_applied: str | None = None


def tune_malloc() -> str:
    """Apply the tuning once per process when the C library is glibc; returns what is in effect
    ("tuned glibc malloc (...)", "default (...)") for logs and benchmark headers."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("MTLCHECK_MALLOC", "tuned") == "default":
        _applied = "default (MTLCHECK_MALLOC=default)"
        return _applied
    libc_name, _ = platform.libc_ver()
    if platform.system() != "Linux" or libc_name != "glibc":
        _applied = f"default (not glibc: {platform.system()} {libc_name or 'unknown libc'})"
        return _applied
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = (
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    )
    if not ok:
        raise RuntimeError("mallopt refused the allocator tuning; set MTLCHECK_MALLOC=default to run without it")
    _applied = f"tuned glibc malloc (mmap threshold {_MMAP_THRESHOLD_MAX >> 20} MiB, no trim)"
    return _applied


def malloc_setting() -> str:
    """What `tune_malloc` put in effect in this process, or "default" when it was never called."""
    return _applied or "default"
