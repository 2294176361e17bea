"""What a Python host can tell the level policy about itself, read from this machine.

The shared policy (``lcs_export.policy``) takes battery, thermal state, low-power mode and
latency. A desktop or server host has no portable thermal API, so the adaptive runtime uses
the pressure it can measure, the 1-minute load average per CPU, as the policy's thermal
state (``LoadThresholds``: other processes competing for the cores is what the policy's
thermal caps are for on a phone). Battery comes from ``psutil.sensors_battery()`` where
psutil is installed and the machine has a battery; otherwise it is unknown, which the policy
treats as no constraint. Latency is measured by the runtime itself (``runtime.py``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

from lcs_train.errors import LcsError


@dataclass(frozen=True)
class HostReading:
    """One reading of the host (None: unknown)."""

    load_per_cpu: float | None
    battery_fraction: float | None = None
    charging: bool | None = None


class SignalSource(Protocol):
    """Anything that reads the host: ``HostSignals`` here, or a fixed sequence in tests."""

    def read(self) -> HostReading:
        """The host's state now."""
        ...


@dataclass(frozen=True)
class LoadThresholds:
    """Load average per CPU from which the host counts as fair, serious and critical."""

    fair: float = 1.0
    serious: float = 1.5
    critical: float = 3.0

    @classmethod
    def parse(cls, text: str) -> LoadThresholds:
        """From ``"FAIR,SERIOUS,CRITICAL"``: three ascending positive numbers."""
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values) or values != sorted(values):
            raise LcsError(f"--load-thresholds {text!r} is not three ascending positive numbers",
                           "give load per CPU for fair, serious and critical, e.g. --load-thresholds 1,1.5,3")
        return cls(*values)

    def thermal(self, load_per_cpu: float | None) -> str:
        """The policy's thermal state for a load per CPU (unknown: nominal)."""
        if load_per_cpu is None or not math.isfinite(load_per_cpu):
            return "nominal"
        for state, threshold in (("critical", self.critical), ("serious", self.serious), ("fair", self.fair)):
            if load_per_cpu >= threshold:
                return state
        return "nominal"


def _battery() -> tuple[float | None, bool | None]:
    """(fraction, charging) from psutil, or (None, None) without psutil or a battery."""
    try:
        import psutil  # optional: not every host has it, and a desktop has no battery
    except ImportError:
        return None, None
    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return None, None
    if battery is None:
        return None, None
    return max(0.0, min(1.0, float(battery.percent) / 100.0)), battery.power_plugged


class HostSignals:
    """Reads this machine: 1-minute load average over the CPU count, and the battery."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1

    def read(self) -> HostReading:
        try:
            load = os.getloadavg()[0] / self.cpus
        except (AttributeError, OSError):  # Windows has no load average
            load = None
        fraction, charging = _battery()
        return HostReading(load, fraction, charging)
