"""Keep freed CPU memory for reuse while training (glibc malloc settings).

PyTorch's CPU tensors come straight from ``malloc``. With glibc's defaults, an activation of a
few megabytes that a training step frees at the top of the heap is handed back to the
kernel, and the next step faults the same pages in again (zero-filled) when it allocates the
same activation. A subspace step allocates more than a plain one (the compressed weights of
every layer, the gradients of both ends), and measured, this cost it more than a plain step,
and differently from one process to the next: ``python bench/train_step.py --model cpreresnet20
--default-malloc --processes 4`` measured the LCS+L step at 1.11 to 1.22x a plain one
(median 1.151x); with these settings, as ``Trainer.fit`` sets them, three runs of three
processes each measured 1.03 to 1.08x (medians 1.055, 1.027 and 1.074x).

The cost is resident memory: up to ``TRIM_THRESHOLD`` of freed heap stays mapped, so a
training process holds on to its peak rather than shrinking between steps, until
``release_freed_cpu_memory`` (``Trainer.fit`` calls it when it returns) hands it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

#: Allocations below this come from the heap, where freed memory is reused; glibc's largest
#: allowed value (32 MiB on 64-bit). Above it, each allocation is its own mapping as before.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Freed memory at the top of the heap is returned to the kernel only beyond this.
TRIM_THRESHOLD = 1024 * 1024 * 1024
#: Extra room requested whenever the heap grows, so that growing again is rare.
TOP_PAD = 64 * 1024 * 1024

_applied: bool | None = None


def retain_freed_cpu_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (see the module docstring).

    Process-wide and idempotent; returns True when the settings are in force, False where
    the C library is not glibc (macOS, musl), where nothing is changed.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def release_freed_cpu_memory() -> None:
    """Hand the heap's free memory back to the kernel now (glibc's ``malloc_trim``); a no-op
    where the settings were never applied. ``Trainer.fit`` calls it when it returns."""
    if _applied:
        _glibc().malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux (looked up once: ``find_library`` may run
    ldconfig), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _apply() -> bool:
    libc = _glibc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting any of these turns off glibc's own adjustment of it,
    # which would otherwise leave every allocation above 128 KiB its own mapping.
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TOP_PAD, TOP_PAD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
