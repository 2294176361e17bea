"""``lcs-export bench``: latency, throughput, memory, size and switch cost of every artifact.

Order: the bundle's files are checked against their sha256 first (``bundle.verified_copy``,
the same check as validate) and nothing is timed when one differs; every runtime then loads
the verified private copy. Latencies are measured in interleaved bursts (every case runs a
burst in turn, round after round, as ``bench/export.py`` does), so the machine's drift hits
every case alike; median and 90th percentile per call, after a warm-up. Ratios are to the
level-0 artifact of the same bundle (``bench_cases.baseline_case``).

Switch cost (``switch_ms``), by how a host moves to the case:

- ``open file`` (level, multifunction): median time to load the artifact and run its first
  call, minus its steady batch-1 median;
- ``switch once`` and ``alpha per call`` (alpha graphs): median time of the first call at
  this alpha right after a call at another alpha, minus the steady batch-1 median. For the
  switch-once pair that is the weights graph plus opening the patched model; for the single
  alpha-input graph it is noise around 0 (clipped at 0), since it pays on every call instead:
  ``per_call_over_level_ms`` (its batch-1 median minus the level file's at the same alpha).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lcs_export.atomic import BundleLock
from lcs_export.bench_cases import Case, baseline_case, plan_cases
from lcs_export.bench_memory import MemoryProbe
from lcs_export.bundle import IntegrityResult, verified_copy
from lcs_export.installed import installed_target
from lcs_export.manifest import read_manifest
from lcs_train.errors import LcsError

#: The batch sizes the issue asks for.
BATCHES = (1, 8)
#: Fields compared with the baseline case: result key -> ratio key.
RATIO_FIELDS = {
    "latency_b1_median_ms": "latency_b1", "latency_b8_median_ms": "latency_b8",
    "throughput_b8_per_s": "throughput_b8", "peak_memory_bytes": "peak_memory",
    "file_bytes": "file_bytes", "gzip_bytes": "gzip_bytes", "nonzeros": "nonzeros",
    "nonzero_flops": "nonzero_flops",
}


@dataclass(frozen=True)
class BenchSettings:
    """How long to measure. Defaults take seconds per artifact on two busy cores."""

    rounds: int = 10  # interleaved rounds per batch size
    burst: int = 5  # calls per case per round
    warmup: int = 3  # calls per case before any timing
    repeats: int = 5  # opens / switches timed per case
    memory: bool = True  # peak memory, one child process per case

    def check(self) -> None:
        """Refuse counts that would measure nothing."""
        for name in ("rounds", "burst", "repeats"):
            if getattr(self, name) < 1:
                raise LcsError(f"--{name} {getattr(self, name)} must be at least 1", f"give --{name} 1 or more")
        if self.warmup < 0:
            raise LcsError(f"--warmup {self.warmup} is negative", "give --warmup 0 or more")


@dataclass
class BundleBench:
    """What benching one bundle found."""

    directory: Path
    target: str
    runtime: str
    integrity: list[IntegrityResult]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def integrity_ok(self) -> bool:
        return all(item.ok for item in self.integrity)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.directory), "target": self.target, "runtime": self.runtime,
                "integrity_ok": self.integrity_ok,
                "integrity": [{"path": i.path, "ok": i.ok, "problem": i.problem} for i in self.integrity],
                "rows": self.rows}


def bench_images(manifest: dict[str, Any], batch: int) -> np.ndarray:
    """A batch of the manifest's preprocessed held-out sample images (repeated to ``batch``),
    or zeros of the input shape when it carries none."""
    shape = [int(d) for d in manifest["input"]["shape"][1:]]
    samples = np.asarray(manifest.get("samples", {}).get("images") or [], dtype=np.float32)
    if samples.size == 0 or list(samples.shape[1:]) != shape:
        return np.zeros((batch, *shape), np.float32)
    return np.ascontiguousarray(np.resize(samples, (batch, *shape)))


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleaved_latencies(calls: list[Callable[[], object]], settings: BenchSettings) -> list[list[float]]:
    """Seconds per call of each callable, from interleaved bursts after a warm-up."""
    for call in calls:
        for _ in range(settings.warmup):
            call()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(settings.rounds):
        for index, call in enumerate(calls):
            samples[index].extend(_timed(call) for _ in range(settings.burst))
    return samples


def _other_alpha(case: Case, manifest: dict[str, Any]) -> float:
    """An alpha to switch away to: the far end of the trained range."""
    low, high = float(manifest["alpha_input"]["min"]), float(manifest["alpha_input"]["max"])
    return high if abs(case.alpha - high) > abs(case.alpha - low) else low


def _switch_seconds(case: Case, runner: Any, load: Callable[[], Any], image: np.ndarray,
                    manifest: dict[str, Any], repeats: int) -> list[float]:
    """Times of moving to ``case`` and running its first call (see the module's docstring)."""
    if case.reopens:
        return [_timed(lambda: load().run(image, case.alpha)) for _ in range(repeats)]
    other, times = _other_alpha(case, manifest), []
    for _ in range(repeats):
        runner.run(image, other)
        times.append(_timed(lambda: runner.run(image, case.alpha)))
    return times


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 4)


def _cost_facts(case: Case) -> dict[str, Any]:
    level = case.level or {}
    return {"nonzeros": level.get("nonzeros"), "flops": level.get("flops"),
            "nonzero_flops": (level.get("stats") or {}).get("nonzero_flops", level.get("flops"))}


def _add_ratios(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> None:
    for row in rows:
        row["ratios"] = {
            ratio: (round(row[key] / baseline[key], 4) if row.get(key) and baseline.get(key) else None)
            for key, ratio in RATIO_FIELDS.items()
        }
        row["baseline"] = baseline["artifact"]


def _per_call_over_level(rows: list[dict[str, Any]]) -> None:
    levels = {round(r["alpha"], 9): r for r in rows if r["switch_how"] == "open file"}
    for row in rows:
        level = levels.get(round(row["alpha"], 9))
        row["per_call_over_level_ms"] = (None if row["switch_how"] == "open file" or level is None
                                         else round(row["latency_b1_median_ms"] - level["latency_b1_median_ms"], 4))


def measure_cases(copy: Path, manifest: dict[str, Any], target: Any, settings: BenchSettings,
                  progress: Any = None) -> list[dict[str, Any]]:
    """Every field of every case, measured on the verified copy ``copy``."""
    cases = plan_cases(manifest)
    if not cases:
        raise LcsError(f"{manifest['target']['name']} bundle lists no artifact to run", "export the bundle again")
    images = {batch: bench_images(manifest, batch) for batch in BATCHES}
    task = progress.add_task("loading", total=len(cases) * 3) if progress is not None else None

    def step(description: str) -> None:
        if progress is not None:
            progress.update(task, description=description)
            progress.advance(task)

    runners = []
    for case in cases:
        runners.append(target.load(copy, case.entry))
        runners[-1].run(images[1], case.alpha)  # a switch-once runner switches to its alpha here
        step(f"loaded {case.label} at alpha {case.alpha:g}")
    for batch in BATCHES:
        calls = [lambda r=runner, c=case, b=batch: r.run(images[b], c.alpha) for runner, case in zip(runners, cases)]
        for case, seconds in zip(cases, interleaved_latencies(calls, settings)):
            case.results[f"latency_b{batch}_median_ms"] = _ms(statistics.median(seconds))
            case.results[f"latency_b{batch}_p90_ms"] = _ms(float(np.percentile(seconds, 90)))
            case.results[f"throughput_b{batch}_per_s"] = round(batch / statistics.median(seconds), 2)
    probe = MemoryProbe() if settings.memory else None
    rows = []
    for runner, case in zip(runners, cases):
        step(f"switch cost and memory of {case.label} at alpha {case.alpha:g}")
        switch = _switch_seconds(case, runner, lambda c=case: target.load(copy, c.entry), images[1], manifest,
                                 settings.repeats)
        steady = case.results["latency_b1_median_ms"]
        memory = (probe.peak_bytes(copy, manifest["target"]["name"], case.entry, case.alpha, images[8])
                  if probe is not None else None)
        step(f"measured {case.label} at alpha {case.alpha:g}")
        rows.append({
            "artifact": case.label, "artifacts": case.paths, "kind": case.kind, "alpha": case.alpha,
            **case.results, "peak_memory_bytes": memory, "file_bytes": case.file_bytes,
            "gzip_bytes": case.gzip_bytes, "switch_how": case.switch_how,
            "switch_ms": max(0.0, round(_ms(statistics.median(switch)) - steady, 4)), **_cost_facts(case),
        })
    _per_call_over_level(rows)
    base = baseline_case(cases)
    _add_ratios(rows, next(r for r in rows if r["artifact"] == base.label and r["alpha"] == base.alpha))
    return rows


def bench_bundles(directories: list[Path], settings: BenchSettings = BenchSettings(),
                  progress: Any = None) -> list[BundleBench]:
    """Verify every bundle and, only when every sha256 of every bundle matches, measure every
    case (nothing is timed otherwise: the results would describe other files).

    Holds each bundle's lock shared (as ``inspect``), so an export cannot swap files meanwhile.
    """
    settings.check()
    with contextlib.ExitStack() as stack:
        found = []
        # A bundle named twice is measured once (and its lock taken once).
        unique: dict[Path, Path] = {}
        for given in directories:
            unique.setdefault(Path(given).resolve(), Path(given))
        for directory in unique.values():
            stack.enter_context(BundleLock(directory, exclusive=False))
            manifest = read_manifest(directory)
            copy, integrity = stack.enter_context(verified_copy(directory, manifest))
            found.append((BundleBench(directory, manifest["target"]["name"], manifest["target"].get("runtime", ""),
                                      integrity), manifest, copy))
        if not all(result.integrity_ok for result, _, _ in found):
            return [result for result, _, _ in found]
        loaded = [(result, manifest, copy, installed_target(result.target, str(result.directory)))
                  for result, manifest, copy in found]
        for result, manifest, copy, target in loaded:
            result.runtime = target.describe_runtime()
            result.rows = measure_cases(copy, manifest, target, settings, progress)
    return [result for result, _, _, _ in loaded]
