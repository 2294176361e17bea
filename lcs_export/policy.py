"""The level policy: which compression level an app should run, given device pressure.

``sample_apps/policy/README.md`` specifies the decision and ``sample_apps/policy/cases.json``
is its case table; this module, ``policy.mjs`` (web), ``Policy.kt`` (Android) and
``Policy.swift`` (iOS) implement the same rule and all run that table. JSON keys are
camelCase in every language (``Signals.from_json`` / ``State.to_json`` convert).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The default policy: the contents of ``sample_apps/policy/policy.json`` (a test checks they
#: are equal). Inlined because the policy folder is not part of the installed package.
DEFAULT_POLICY: dict[str, Any] = {
    "version": 1,
    "dwellDownMs": 2000,
    "dwellUpMs": 6000,
    "urgentThermal": ["critical"],
    "thermalCaps": {"nominal": 1.0, "fair": 0.75, "serious": 0.4, "critical": 0.0},
    "battery": {"low": 0.25, "critical": 0.1, "lowCap": 0.5, "criticalCap": 0.0},
    "batteryMargin": 0.05,
    "lowPowerCap": 0.5,
    "latencyMargin": 0.15,
    "thermalMap": {
        "ios": {
            "nominal": "nominal", "fair": "fair", "serious": "serious", "critical": "critical",
            "0": "nominal", "1": "fair", "2": "serious", "3": "critical",
        },
        "android": {
            "THERMAL_STATUS_NONE": "nominal", "THERMAL_STATUS_LIGHT": "fair",
            "THERMAL_STATUS_MODERATE": "serious", "THERMAL_STATUS_SEVERE": "serious",
            "THERMAL_STATUS_CRITICAL": "critical", "THERMAL_STATUS_EMERGENCY": "critical",
            "THERMAL_STATUS_SHUTDOWN": "critical",
            "0": "nominal", "1": "fair", "2": "serious", "3": "serious", "4": "critical", "5": "critical",
            "6": "critical",
        },
    },
}

THERMAL_STATES = ("nominal", "fair", "serious", "critical")
#: Cost ratios are not exact: a cap is met within this much rounding.
EPSILON = 1e-9


@dataclass(frozen=True)
class PolicyLevel:
    """One level of a bundle: its alpha and its relative cost (positive, only ratios matter)."""

    alpha: float
    cost: float


@dataclass(frozen=True)
class Signals:
    """What the device reports at one moment (None: unknown)."""

    now_ms: float | None
    battery_fraction: float | None = None
    charging: bool | None = None
    low_power_mode: bool = False
    thermal: str = "nominal"
    latency_ms: float | None = None
    latency_budget_ms: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signals:
        """From the camelCase JSON the case table and the apps use."""
        return cls(
            now_ms=data.get("nowMs"), battery_fraction=data.get("batteryFraction"), charging=data.get("charging"),
            low_power_mode=bool(data.get("lowPowerMode", False)), thermal=data.get("thermal", "nominal"),
            latency_ms=data.get("latencyMs"), latency_budget_ms=data.get("latencyBudgetMs"),
        )


@dataclass(frozen=True)
class State:
    """What one decision hands the next: the current level and when it was chosen."""

    level: int | None = None
    since_ms: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        """From ``{"level", "sinceMs"}``."""
        return cls(level=data.get("level"), since_ms=data.get("sinceMs"))

    def to_json(self) -> dict[str, Any]:
        """As ``{"level", "sinceMs"}``."""
        return {"level": self.level, "sinceMs": self.since_ms}


@dataclass(frozen=True)
class Decision:
    """The level to run (an index into the levels as given), the next state and why."""

    level: int
    state: State
    reason: str


def levels_from_manifest(manifest: Mapping[str, Any]) -> list[PolicyLevel]:
    """The policy's levels from a bundle manifest, in manifest order: alpha, and as cost the
    first positive finite number among ``stats.nonzero_flops``, ``flops`` and ``bytes`` (else 1)."""
    levels = []
    for level in manifest.get("levels", []):
        candidates = [(level.get("stats") or {}).get("nonzero_flops"), level.get("flops"), level.get("bytes")]
        cost = next((float(x) for x in candidates if _positive(x)), 1.0)
        levels.append(PolicyLevel(float(level["alpha"]), cost))
    return levels


def initial_state() -> State:
    """The state before the first decision."""
    return State()


def map_thermal(platform: str, value: Any, policy: Mapping[str, Any] | None = None) -> str:
    """A platform's thermal signal (name or integer) as nominal / fair / serious / critical.

    Unknown platforms and values map to ``nominal``: an unreadable signal never degrades the
    model on its own.
    """
    table = (policy or DEFAULT_POLICY)["thermalMap"].get(platform)
    if table is None or value is None or isinstance(value, bool):
        return "nominal"
    if isinstance(value, float):
        if not value.is_integer():
            return "nominal"
        value = int(value)
    return table.get(str(value), "nominal")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def _check_levels(levels: Sequence[PolicyLevel]) -> None:
    if not levels:
        raise ValueError("the bundle has no levels")
    for index, level in enumerate(levels):
        if not _positive(level.cost):
            raise ValueError(f"level {index} has cost {level.cost}; costs must be positive numbers")
        if not _finite(level.alpha):
            raise ValueError(f"level {index} has alpha {level.alpha}")


def _accuracy_order(levels: Sequence[PolicyLevel]) -> list[int]:
    """Indices by ascending alpha, ties by index (the sort is stable)."""
    return sorted(range(len(levels)), key=lambda i: levels[i].alpha)


def _failures(j: int, current: int | None, levels: Sequence[PolicyLevel], signals: Signals,
              policy: Mapping[str, Any], max_cost: float) -> list[str]:
    """Names of the constraints level ``j`` fails, in the README's order (empty: allowed)."""
    rel = levels[j].cost / max_cost
    # Upgrades are checked against stricter thresholds: that is what stops flapping.
    up = current is not None and levels[j].cost > levels[current].cost
    failed = []
    thermal = signals.thermal if signals.thermal in THERMAL_STATES else "nominal"
    if rel > policy["thermalCaps"][thermal] + EPSILON:
        failed.append(f"thermal {thermal}")
    battery = signals.battery_fraction
    if _finite(battery) and 0 <= battery <= 1 and signals.charging is not True:
        b = battery - (policy["batteryMargin"] if up else 0)
        if b <= policy["battery"]["critical"]:
            if rel > policy["battery"]["criticalCap"] + EPSILON:
                failed.append("battery critical")
        elif b <= policy["battery"]["low"] and rel > policy["battery"]["lowCap"] + EPSILON:
            failed.append("battery low")
    if signals.low_power_mode is True and rel > policy["lowPowerCap"] + EPSILON:
        failed.append("low power mode")
    if current is not None and _positive(signals.latency_ms) and _positive(signals.latency_budget_ms):
        estimate = signals.latency_ms * levels[j].cost / levels[current].cost
        limit = signals.latency_budget_ms * (1 - policy["latencyMargin"] if up else 1)
        if estimate > limit:
            failed.append("latency budget")
    return failed


def _target(levels: Sequence[PolicyLevel], signals: Signals, current: int | None,
            policy: Mapping[str, Any]) -> tuple[int, str]:
    """The level the signals ask for, and its reason, before the dwell rule."""
    order = _accuracy_order(levels)
    max_cost = max(level.cost for level in levels)
    for position, j in enumerate(order):
        if not _failures(j, current, levels, signals, policy, max_cost):
            if position == 0:
                return j, "most accurate level"
            before = _failures(order[position - 1], current, levels, signals, policy, max_cost)
            return j, "limited by " + ", ".join(before)
    cheapest = min(order, key=lambda i: levels[i].cost)  # min keeps the first of equal costs
    failed = _failures(cheapest, current, levels, signals, policy, max_cost)
    return cheapest, "no level meets " + ", ".join(failed) + "; using the cheapest"


def decide(levels: Sequence[PolicyLevel | Mapping[str, float]], signals: Signals | Mapping[str, Any],
           state: State | Mapping[str, Any] | None, policy: Mapping[str, Any] | None = None) -> Decision:
    """Decide the level to run (sample_apps/policy/README.md).

    ``levels`` in manifest order (any alpha order), as ``PolicyLevel`` or ``{"alpha", "cost"}``;
    ``signals`` and ``state`` as dataclasses or their camelCase JSON. Raises ``ValueError`` for
    an empty level list or a cost that is not a positive finite number.
    """
    policy = policy or DEFAULT_POLICY
    levels = [lv if isinstance(lv, PolicyLevel) else PolicyLevel(lv["alpha"], lv["cost"]) for lv in levels]
    signals = signals if isinstance(signals, Signals) else Signals.from_json(signals)
    state = state if isinstance(state, State) else State.from_json(state or {})
    _check_levels(levels)
    now = signals.now_ms
    valid = isinstance(state.level, int) and not isinstance(state.level, bool) and 0 <= state.level < len(levels)
    current = state.level if valid else None
    wanted, reason = _target(levels, signals, current, policy)
    since = state.since_ms if valid and _finite(state.since_ms) else None

    def change() -> Decision:
        return Decision(wanted, State(wanted, now if _finite(now) else None), reason)

    def hold(why: str, since_ms: float | None) -> Decision:
        return Decision(current, State(current, since_ms), f"{why} (wants level {wanted}): {reason}")

    if current is None:
        return change()
    if wanted == current:
        return Decision(current, State(current, since), reason)
    down = levels[wanted].cost <= levels[current].cost
    if down and signals.thermal in policy["urgentThermal"]:
        return change()
    if not _finite(now):
        return hold("no clock", since)
    if since is not None and now < since:
        return hold("clock went backwards", now)
    dwell = policy["dwellDownMs"] if down else policy["dwellUpMs"]
    if since is None or now - since >= dwell:
        return change()
    return hold("holding for dwell", since)
