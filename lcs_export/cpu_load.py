"""Load the CPUs from other processes, to watch the adaptive runtime react.

``python -m lcs_export.cpu_load --workers 2 --seconds 30`` runs two busy processes for 30 s
(one per core of a two-core machine); ``lcs-export serve-demo --load-cpu 2`` starts the same
from the demo. Each worker spins on arithmetic: it raises the load average by about one and
takes a core's time from everything else.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time


def spin(seconds: float) -> None:
    """Busy-loop for ``seconds`` (wall clock)."""
    end = time.monotonic() + seconds
    value = 0
    while time.monotonic() < end:
        for _ in range(10_000):
            value = (value * 1103515245 + 12345) & 0xFFFFFFFF


def start_load(workers: int, seconds: float) -> list[multiprocessing.Process]:
    """``workers`` busy processes, each stopping by itself after ``seconds``."""
    context = multiprocessing.get_context("spawn")  # no copy of the caller's runtimes and threads
    processes = [context.Process(target=spin, args=(seconds,), daemon=True, name=f"lcs-cpu-load-{i}")
                 for i in range(workers)]
    for process in processes:
        process.start()
    return processes


def stop_load(processes: list[multiprocessing.Process]) -> None:
    """End the workers ``start_load`` started (by their own handles), and reap them."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def main() -> None:
    """Command line: ``--workers N --seconds S``."""
    parser = argparse.ArgumentParser(description="Busy processes that load the CPUs for a while.")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count(),
                        help="busy processes (default: one per CPU)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they run")
    args = parser.parse_args()
    if args.workers < 1 or not args.seconds > 0:
        parser.error("--workers must be at least 1 and --seconds above 0")
    processes = start_load(args.workers, args.seconds)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        stop_load(processes)


if __name__ == "__main__":
    main()
