"""The adaptive runtime for Python hosts: run a bundle and let the shared policy pick its level.

``AdaptiveRuntime`` opens a bundle with whatever runtime its target uses (ONNX Runtime, the
lite interpreter, or any target registered in ``targets``: it only calls the target's
``load`` and the runner's ``run``), after checking every sha256; runtimes load a verified
private copy, as ``validate`` does. After every inference it asks ``lcs_export.policy``
which level to run, with the host's signals (``host_signals``: load average as the thermal
state, battery through psutil where present) and the median latency of the last calls at the
current level against the budget, as the sample apps do. The levels are the bundle's level
files (``manifest.levels``); a level's artifact is opened the first time it is chosen and
kept open.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcs_export.atomic import BundleLock
from lcs_export.bundle import verified_copy
from lcs_export.console import integrity_summary
from lcs_export.host_signals import HostReading, HostSignals, LoadThresholds, SignalSource
from lcs_export.installed import installed_target
from lcs_export.manifest import read_manifest
from lcs_export.policy import Decision, Signals, State, decide, initial_state, levels_from_manifest
from lcs_train.errors import LcsError

#: Calls in the moving latency statistic (a median, as the web app: one slow call does not move it).
LATENCY_WINDOW = 8


class IntegrityError(Exception):
    """A bundle file does not match its manifest's sha256 (a failed check: exit 1)."""


def check_budget(budget_ms: float | None) -> float | None:
    """A latency budget in milliseconds: None (no budget) or a positive finite number."""
    if budget_ms is not None and (not math.isfinite(budget_ms) or budget_ms <= 0):
        raise LcsError(f"--budget-ms {budget_ms:g} is not a positive number of milliseconds",
                       "give a budget above 0, e.g. --budget-ms 5, or leave it out for no latency budget")
    return budget_ms


@dataclass(frozen=True)
class Step:
    """What one inference saw and decided."""

    now_ms: float
    level: int  # the level this inference ran at
    latency_ms: float  # this call
    moving_latency_ms: float | None  # the statistic the policy saw
    reading: HostReading
    thermal: str
    decision: Decision
    switched_ms: float | None  # time to open the new level's artifact, when the decision changed level


class AdaptiveRuntime:
    """A bundle, its levels and the policy's state. Use as a context manager (it holds a
    temporary verified copy of the bundle)."""

    def __init__(self, directory: Path, *, budget_ms: float | None = None, signals: SignalSource | None = None,
                 thresholds: LoadThresholds = LoadThresholds(), policy: Mapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, signal_interval_s: float = 0.5) -> None:
        self.directory = Path(directory)
        self.budget_ms = check_budget(budget_ms)
        self.signals = signals or HostSignals()
        self.thresholds, self.policy, self.clock = thresholds, policy, clock
        self.signal_interval_s = signal_interval_s
        self._stack = contextlib.ExitStack()
        self._runners: dict[str, Any] = {}
        self._recent: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._reading: HostReading | None = None
        self._read_at = -math.inf
        self.state: State = initial_state()
        self.level = 0

    # --- opening -------------------------------------------------------------------------------

    def __enter__(self) -> AdaptiveRuntime:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._runners.clear()
        self._stack.close()

    def _open(self) -> None:
        with BundleLock(self.directory, exclusive=False):  # held while copying only: a runtime lives long
            self.manifest = read_manifest(self.directory)
            self.copy, integrity = self._stack.enter_context(verified_copy(self.directory, self.manifest))
        if not all(item.ok for item in integrity):
            raise IntegrityError(f"{self.directory}: {integrity_summary(integrity)}")
        self.target = installed_target(self.manifest["target"]["name"], str(self.directory))
        if not self.manifest["levels"]:
            raise LcsError(f"{self.directory} has no level files; the adaptive runtime switches between levels",
                           "export the bundle with --levels, e.g. --levels 0.0,0.5,0.9")
        self.levels = levels_from_manifest(self.manifest)
        by_path = {entry["path"]: entry for entry in self.manifest["artifacts"]}
        self.entries = [by_path[level["path"]] for level in self.manifest["levels"]]
        first = self.decide_now(None)
        self.level, self.state = first.level, first.state
        self._runner(self.level)

    def _runner(self, level: int) -> Any:
        path = self.entries[level]["path"]
        if path not in self._runners:
            self._runners[path] = self.target.load(self.copy, self.entries[level])
        return self._runners[path]

    # --- deciding ------------------------------------------------------------------------------

    def read_host(self) -> HostReading:
        """The host's signals, read at most every ``signal_interval_s`` (psutil is not free)."""
        now = self.clock()
        if self._reading is None or now - self._read_at >= self.signal_interval_s:
            self._reading, self._read_at = self.signals.read(), now
        return self._reading

    @property
    def moving_latency_ms(self) -> float | None:
        return statistics.median(self._recent) if self._recent else None

    def policy_signals(self, reading: HostReading) -> Signals:
        """The policy's inputs from a host reading and the latency statistic."""
        return Signals(now_ms=self.clock() * 1000.0, battery_fraction=reading.battery_fraction,
                       charging=reading.charging, thermal=self.thresholds.thermal(reading.load_per_cpu),
                       latency_ms=self.moving_latency_ms, latency_budget_ms=self.budget_ms)

    def decide_now(self, state: State | None) -> Decision:
        """The policy's decision for the host as it is now."""
        return decide(self.levels, self.policy_signals(self.read_host()), state or initial_state(), self.policy)

    # --- running -------------------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        return self.levels[self.level].alpha

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, Step]:
        """Logits of ``images`` at the current level, then the policy's decision (which may
        change the level for the next call)."""
        level, runner = self.level, self._runner(self.level)
        start = time.perf_counter()
        logits = runner.run(images, self.levels[level].alpha)
        latency_ms = (time.perf_counter() - start) * 1000.0
        self._recent.append(latency_ms)
        reading = self.read_host()
        signals = self.policy_signals(reading)
        decision = decide(self.levels, signals, self.state, self.policy)
        self.state, switched_ms = decision.state, None
        if decision.level != self.level:
            start = time.perf_counter()
            self._runner(decision.level)
            switched_ms = (time.perf_counter() - start) * 1000.0
            self.level = decision.level
            self._recent.clear()  # the statistic is of the current level (policy README)
        return logits, Step(signals.now_ms or 0.0, level, latency_ms, signals.latency_ms, reading, signals.thermal,
                            decision, switched_ms)
