"""The adaptive runtime switches level when the policy's inputs change (host signals injected,
ONNX Runtime really running every level), and ``serve-demo`` refuses bad input."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import copy_bundle, run_cli

from lcs_export.host_signals import HostReading, HostSignals, LoadThresholds
from lcs_export.policy import levels_from_manifest
from lcs_export.runtime import AdaptiveRuntime


@dataclass
class InjectedSignals:
    """The host as a test sets it."""

    reading: HostReading

    def read(self) -> HostReading:
        return self.reading


class SteppedClock:
    """A clock that moves one second per reading: every dwell passes within a few calls."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _samples(manifest: dict) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    samples = manifest["samples"]
    return (np.asarray(samples["images"], np.float32),
            {entry["alpha"]: np.asarray(entry["values"], np.float32) for entry in samples["logits"]})


def _run(runtime: AdaptiveRuntime, images: np.ndarray, calls: int) -> list[int]:
    """Levels the runtime ran at, call by call; each call's logits checked against PyTorch's."""
    _, reference = _samples(runtime.manifest)
    levels = []
    for _ in range(calls):
        alpha = runtime.alpha
        logits, step = runtime.infer(images)
        np.testing.assert_allclose(logits, reference[alpha], atol=1e-3)  # the level's own file ran
        levels.append(step.level)
    return levels


def _expected(manifest: dict, cap: float) -> int:
    """The most accurate level whose cost is within ``cap`` of the most expensive one."""
    levels = levels_from_manifest(manifest)
    top = max(level.cost for level in levels)
    allowed = [i for i, level in enumerate(levels) if level.cost / top <= cap + 1e-9]
    return min(allowed, key=lambda i: levels[i].alpha)


def test_runtime_moves_down_under_load_and_back_up_when_it_ends(onnx_app_bundle: Path) -> None:
    signals = InjectedSignals(HostReading(load_per_cpu=0.2))
    with AdaptiveRuntime(onnx_app_bundle, signals=signals, clock=SteppedClock(), signal_interval_s=0) as runtime:
        images, _ = _samples(runtime.manifest)
        assert _run(runtime, images, 2) == [0, 0]
        signals.reading = HostReading(load_per_cpu=1.6)  # serious: rel cost <= 0.4
        serious = _expected(runtime.manifest, 0.4)
        assert serious != 0
        assert _run(runtime, images, 4)[-1] == serious
        signals.reading = HostReading(load_per_cpu=1.1)  # fair: rel cost <= 0.75
        fair = _expected(runtime.manifest, 0.75)
        assert _run(runtime, images, 6)[-1] == fair  # after the up-dwell when fair is dearer than serious
        signals.reading = HostReading(load_per_cpu=0.1)
        assert _run(runtime, images, 6)[-1] == 0


def test_runtime_moves_to_a_cheaper_level_on_low_battery_unless_charging(onnx_app_bundle: Path) -> None:
    signals = InjectedSignals(HostReading(load_per_cpu=0.2, battery_fraction=0.2, charging=True))
    with AdaptiveRuntime(onnx_app_bundle, signals=signals, clock=SteppedClock(), signal_interval_s=0) as runtime:
        images, _ = _samples(runtime.manifest)
        assert _run(runtime, images, 3)[-1] == 0
        signals.reading = HostReading(load_per_cpu=0.2, battery_fraction=0.2, charging=False)
        low = _run(runtime, images, 4)[-1]
        assert low == _expected(runtime.manifest, 0.5) and low != 0


def test_runtime_moves_down_when_latency_exceeds_the_budget(onnx_app_bundle: Path) -> None:
    signals = InjectedSignals(HostReading(load_per_cpu=0.2))
    # A budget no real call meets: the policy runs the cheapest level and says so.
    with AdaptiveRuntime(onnx_app_bundle, budget_ms=1e-6, signals=signals, clock=SteppedClock(),
                         signal_interval_s=0) as runtime:
        images, _ = _samples(runtime.manifest)
        levels = levels_from_manifest(runtime.manifest)
        cheapest = min(range(len(levels)), key=lambda i: levels[i].cost)
        assert _run(runtime, images, 1) == [0]  # no latency measured before the first call
        assert _run(runtime, images, 4)[-1] == cheapest
        _, step = runtime.infer(images)
        assert "latency budget" in step.decision.reason
    with AdaptiveRuntime(onnx_app_bundle, budget_ms=1e6, signals=signals, clock=SteppedClock(),
                         signal_interval_s=0) as runtime:
        assert _run(runtime, images, 5) == [0] * 5  # a budget every call meets changes nothing


def test_host_signals_read_this_machine() -> None:
    reading = HostSignals().read()
    assert reading.load_per_cpu is not None and math.isfinite(reading.load_per_cpu) and reading.load_per_cpu >= 0
    try:
        import psutil  # noqa: F401
    except ImportError:
        assert reading.battery_fraction is None and reading.charging is None  # unknown: no constraint
    thresholds = LoadThresholds(1.0, 1.5, 3.0)
    assert [thresholds.thermal(x) for x in (None, 0.5, 1.0, 2.0, 3.0)] == [
        "nominal", "nominal", "fair", "serious", "critical"]


@pytest.mark.parametrize("budget", ["0", "-1"])
def test_serve_demo_refuses_a_budget_of_zero_or_below(onnx_app_bundle: Path, tmp_path: Path, budget: str) -> None:
    result = run_cli("serve-demo", onnx_app_bundle, "--budget-ms", budget, "--duration", "1",
                     "--trace", tmp_path / "trace.json")
    assert result.code == 2
    assert f"--budget-ms {float(budget):g} is not a positive number" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "trace.json").exists()


def test_serve_demo_refuses_a_tampered_bundle(onnx_app_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(onnx_app_bundle, tmp_path / "bundle")
    (bundle / "level_alpha_0.0000.onnx").write_bytes(b"not the exported model")
    result = run_cli("serve-demo", bundle, "--duration", "1", "--trace", tmp_path / "trace.json")
    assert result.code == 1
    assert "level_alpha_0.0000.onnx" in result.stderr and "Nothing was run" in result.stderr
    assert not (tmp_path / "trace.json").exists()


def test_serve_demo_runs_and_writes_its_trace(onnx_app_bundle: Path, tmp_path: Path) -> None:
    result = run_cli("serve-demo", onnx_app_bundle, "--duration", "1.5", "--budget-ms", "1000",
                     "--trace", tmp_path / "trace.json")
    assert result.code == 0, result.stderr
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace["calls"] > 0 and trace["entries"]
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    for entry in trace["entries"]:
        assert entry["level"] in range(len(trace["levels"])) and entry["latency_ms"] > 0
        assert entry["throughput_per_s"] > 0 and entry["reason"]
        assert entry["signals"]["latency_budget_ms"] == 1000
        assert entry["signals"]["load_per_cpu"] == pytest.approx(load, abs=max(2.0, load))
    assert "lcs adaptive runtime" in result.stdout
