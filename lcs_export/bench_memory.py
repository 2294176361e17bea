"""Peak memory of one artifact: loaded and run in a process of its own.

Each measurement runs in a fresh child process that has imported the targets (and so the
runtimes) but opened nothing: it reads its peak resident set size (``ru_maxrss``), loads the
artifact, runs it a few times at batch ``N``, and reads the peak again. The difference is
what opening and running that artifact added to a process that already had the runtime
imported, including the runtime's own first-session allocations (a host pays those too).
Children fork from a ``forkserver`` that imported the targets once (Linux); where there is
no forkserver, they are spawned and import before the first reading.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

#: Calls at the measured batch after loading: the first allocates, later ones may grow arenas.
RUNS = 3


def _peak_resident_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


def measure_in_child(directory: str, target_name: str, entry: dict[str, Any], alpha: float,
                     images: np.ndarray) -> int:
    """(Runs in the child.) Bytes of peak resident memory added by loading and running the artifact."""
    from lcs_export.installed import installed_target

    target = installed_target(target_name, directory)
    before = _peak_resident_bytes()
    runner = target.load(Path(directory), entry)
    for _ in range(RUNS):
        runner.run(images, alpha)
    return max(0, _peak_resident_bytes() - before)


def _context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["targets"])
        return context
    return multiprocessing.get_context("spawn")


class MemoryProbe:
    """Runs ``measure_in_child`` in a new child process per measurement."""

    def __init__(self) -> None:
        self._context = _context()

    def peak_bytes(self, directory: Path, target_name: str, entry: dict[str, Any], alpha: float,
                   images: np.ndarray) -> int:
        """Peak memory one artifact adds (see the module's docstring)."""
        # One task per child: a child that already loaded something has a higher peak to beat.
        with ProcessPoolExecutor(max_workers=1, mp_context=self._context, max_tasks_per_child=1) as pool:
            return pool.submit(measure_in_child, str(directory), target_name, entry, alpha, images).result()
