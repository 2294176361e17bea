"""``lcs-export bench``: every field for every artifact of a real ONNX bundle, run in ONNX
Runtime; a tampered bundle is refused (exit 1) before anything is timed; a bundle whose
runtime is not installed names the package to install (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_helpers import copy_bundle, run_cli

#: One xdist worker runs this module, so its module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("bench")

ROOT = Path(__file__).resolve().parent.parent
#: Short settings: the fields are what is tested, not the figures.
QUICK = ["--rounds", "1", "--burst", "2", "--warmup", "1", "--repeats", "3"]
TIMED_FIELDS = ("latency_b1_median_ms", "latency_b1_p90_ms", "latency_b8_median_ms", "latency_b8_p90_ms",
                "throughput_b1_per_s", "throughput_b8_per_s")


@pytest.fixture(scope="module")
def bench_run(onnx_app_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """One bench of the sample-app bundle (level files, single alpha graph, switch-once pair)."""
    out = tmp_path_factory.mktemp("bench")
    result = run_cli("bench", onnx_app_bundle, *QUICK, "--json", out / "bench.json", "--plot", out / "bench.png")
    assert result.code == 0, result.stderr
    return out / "bench.json", out / "bench.png", result


def test_bench_reports_every_field_for_every_artifact(bench_run: tuple[Path, Path, object],
                                                      onnx_app_bundle: Path) -> None:
    json_path, plot_path, result = bench_run
    manifest = json.loads((onnx_app_bundle / "manifest.json").read_text())
    report = json.loads(json_path.read_text())
    (bundle,) = report["bundles"]
    rows = bundle["rows"]
    assert bundle["integrity_ok"] and bundle["runtime"].startswith("onnxruntime")
    # Every artifact is measured, at every level alpha for the alpha graphs.
    assert {path for row in rows for path in row["artifacts"]} == {a["path"] for a in manifest["artifacts"]}
    level_alphas = sorted(level["alpha"] for level in manifest["levels"])
    for kind in ("level", "alpha_input", "alpha_predict"):
        assert sorted(row["alpha"] for row in rows if row["kind"] == kind) == level_alphas
    entries = {a["path"]: a for a in manifest["artifacts"]}
    levels = {level["alpha"]: level for level in manifest["levels"]}
    for row in rows:
        for field in TIMED_FIELDS:
            assert row[field] > 0, (row["artifact"], field)
        assert row["latency_b1_p90_ms"] >= row["latency_b1_median_ms"]
        assert row["latency_b8_p90_ms"] >= row["latency_b8_median_ms"]
        assert row["peak_memory_bytes"] > 0, row["artifact"]
        assert row["file_bytes"] == sum(entries[p]["bytes"] for p in row["artifacts"])
        assert row["gzip_bytes"] == sum(entries[p]["gzip_bytes"] for p in row["artifacts"])
        assert row["switch_ms"] >= 0 and row["switch_how"]
        level = levels[row["alpha"]]
        assert (row["nonzeros"], row["flops"], row["nonzero_flops"]) == (
            level["nonzeros"], level["flops"], level["stats"]["nonzero_flops"])
        assert all(value is not None and value > 0 for value in row["ratios"].values()), row["ratios"]
    # Ratios are to the level-0 file, and equal the absolute figures' quotients.
    base = next(row for row in rows if row["kind"] == "level" and row["alpha"] == 0.0)
    assert all(row["baseline"] == base["artifact"] for row in rows)
    assert set(base["ratios"].values()) == {1.0}
    for row in rows:
        assert row["ratios"]["file_bytes"] == pytest.approx(row["file_bytes"] / base["file_bytes"], abs=1e-4)
        assert row["ratios"]["nonzeros"] == pytest.approx(row["nonzeros"] / base["nonzeros"], abs=1e-4)
    # Switching the switch-once pair runs the weights graph and opens a session: never free.
    assert all(row["switch_ms"] > 0 for row in rows if row["switch_how"] == "switch once")
    assert all(row["per_call_over_level_ms"] is not None for row in rows if row["kind"] != "level")
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The table names every artifact (the switch-once pair by its predict file).
    for path, entry in entries.items():
        assert (path if entry["kind"] != "alpha_weights" else "(+ weights)") in result.stdout


def test_bench_refuses_a_tampered_bundle_before_timing(onnx_app_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(onnx_app_bundle, tmp_path / "bundle")
    level = bundle / "level_alpha_0.5000.onnx"
    data = bytearray(level.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    level.write_bytes(bytes(data))
    result = run_cli("bench", bundle, *QUICK, "--json", tmp_path / "bench.json", "--plot", tmp_path / "bench.png")
    assert result.code == 1, result.stderr
    assert "level_alpha_0.5000.onnx: sha256 mismatch" in result.stderr
    assert "Nothing was timed" in result.stderr
    assert not (tmp_path / "bench.json").exists() and not (tmp_path / "bench.png").exists()
    assert "b1 ms" not in result.stdout  # no table of timings


def test_bench_names_the_package_when_the_runtime_is_missing(onnx_app_bundle: Path, tmp_path: Path) -> None:
    # A fresh interpreter in which onnxruntime cannot be imported, as on a host without it.
    script = ("import sys; sys.modules['onnxruntime'] = None\n"
              "from lcs_export.cli import main; main()")
    result = subprocess.run(
        [sys.executable, "-c", script, "bench", str(onnx_app_bundle), "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 2, result.stderr
    assert "the onnx runtime (onnxruntime) is not installed" in result.stderr
    assert "pip install" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b.json").exists()


def test_bench_refuses_counts_that_measure_nothing(onnx_app_bundle: Path, tmp_path: Path) -> None:
    result = run_cli("bench", onnx_app_bundle, "--rounds", "0", "--json", tmp_path / "b.json")
    assert result.code == 2 and "--rounds 0 must be at least 1" in result.stderr
    assert not (tmp_path / "b.json").exists()
