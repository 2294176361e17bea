"""``lcs-export serve-demo``: the adaptive runtime live in the terminal, and its trace.

Runs the bundle's sample images through ``AdaptiveRuntime`` back to back for ``duration``
seconds (or until Ctrl-C), showing level, latency, throughput and the policy's inputs, and
records a trace: one entry every ``TRACE_INTERVAL_S`` and one at every level change, each
with the time, level, alpha, latency, throughput, the host signals and the policy's reason.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lcs_export.bench import bench_images
from lcs_export.runtime import AdaptiveRuntime, Step

#: Seconds between trace entries (level changes are recorded as they happen as well).
TRACE_INTERVAL_S = 0.25
#: Level history shown in the display (one character per trace entry).
HISTORY = 60


@dataclass
class Trace:
    """Trace entries and the calls since the last one."""

    started: float
    entries: list[dict[str, Any]] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)  # latencies (ms) since the last entry
    last_at: float = 0.0
    calls: int = 0

    def add(self, runtime: AdaptiveRuntime, step: Step, batch: int, now: float) -> dict[str, Any] | None:
        """Count one call; return the entry written, if the interval passed or the level changed."""
        self.pending.append(step.latency_ms)
        self.calls += 1
        if step.switched_ms is None and now - self.last_at < TRACE_INTERVAL_S:
            return None
        window = max(now - self.last_at, 1e-9) if self.entries else max(now - self.started, 1e-9)
        reading, decision = step.reading, step.decision
        entry = {
            "t_s": round(now - self.started, 3), "level": step.level, "alpha": runtime.levels[step.level].alpha,
            "latency_ms": round(statistics.median(self.pending), 4), "calls": len(self.pending),
            "throughput_per_s": round(len(self.pending) * batch / window, 1),
            "signals": {"load_per_cpu": None if reading.load_per_cpu is None else round(reading.load_per_cpu, 3),
                        "thermal": step.thermal, "battery_fraction": reading.battery_fraction,
                        "charging": reading.charging, "moving_latency_ms": step.moving_latency_ms,
                        "latency_budget_ms": runtime.budget_ms},
            "next_level": decision.level, "reason": decision.reason,
            "switch_ms": None if step.switched_ms is None else round(step.switched_ms, 3),
        }
        self.entries.append(entry)
        self.pending, self.last_at = [], now
        return entry


def display(runtime: AdaptiveRuntime, trace: Trace, load_note: str) -> Group:
    """The live view: the current figures and the recent levels."""
    table = Table(title=f"lcs adaptive runtime: {runtime.directory} ({runtime.target.describe_runtime()})",
                  show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    last = trace.entries[-1] if trace.entries else None
    signals = last["signals"] if last else {}
    load = signals.get("load_per_cpu")
    battery = signals.get("battery_fraction")
    rows = [
        ("level", f"{runtime.level} of {len(runtime.levels)} (alpha {runtime.alpha:g})"),
        ("latency", "-" if last is None else f"{last['latency_ms']:.3f} ms median"
         + (f" (budget {runtime.budget_ms:g} ms)" if runtime.budget_ms else " (no budget)")),
        ("throughput", "-" if last is None else f"{last['throughput_per_s']:.0f} images/s"),
        ("load per CPU", "-" if load is None else f"{load:.2f} -> thermal {signals['thermal']}"),
        ("battery", "unknown (no psutil or no battery)" if battery is None
         else f"{100 * battery:.0f}%{', charging' if signals.get('charging') else ''}"),
        ("policy", "-" if last is None else last["reason"]),
        ("calls / switches", f"{trace.calls} / {sum(e['switch_ms'] is not None for e in trace.entries)}"),
        ("elapsed", f"{time.monotonic() - trace.started:.1f} s{load_note}"),
    ]
    for name, value in rows:
        table.add_row(name, Text(value))
    history = "".join(str(e["level"]) if e["level"] < 10 else "+" for e in trace.entries[-HISTORY:])
    return Group(table, Text(f"levels, oldest first: {history}"))


def serve(runtime: AdaptiveRuntime, trace: Trace, console: Console, duration: float | None, batch: int = 1,
          load_note: str = "") -> Trace:
    """Run until ``duration`` seconds have passed (None: until Ctrl-C), showing it live and
    recording into ``trace`` (which keeps what it has when Ctrl-C stops the run)."""
    images = bench_images(runtime.manifest, batch)
    try:
        with Live(display(runtime, trace, load_note), console=console, refresh_per_second=4) as live:
            while duration is None or time.monotonic() - trace.started < duration:
                _, step = runtime.infer(np.asarray(images))
                if trace.add(runtime, step, batch, time.monotonic()) is not None:
                    live.update(display(runtime, trace, load_note))
            live.update(display(runtime, trace, load_note))
    finally:
        if not console.is_terminal:
            console.line()  # a non-terminal Live leaves its last line open
    return trace


def trace_report(runtime: AdaptiveRuntime, trace: Trace, settings: dict[str, Any]) -> dict[str, Any]:
    """The ``--trace`` JSON: the run's settings, the levels and every entry."""
    return {"bundle": str(runtime.directory), "runtime": runtime.target.describe_runtime(), **settings,
            "levels": [{"alpha": level.alpha, "cost": level.cost} for level in runtime.levels],
            "calls": trace.calls, "entries": trace.entries}
