"""The web app end to end, in a real browser, and its JavaScript unit tests.

A fresh ONNX bundle (levels 0, 0.5, 0.9 and the alpha-input graphs) is exported from the tiny
trained fixture, laid out by ``lcs-export app --platform web``, served on 127.0.0.1 and driven
in Debian's headless Chromium by ``sample_apps/web/e2e/browser-check.mjs`` (playwright-core).
Every logit the page computed is compared with PyTorch's at the same alpha. The test prints
the in-browser latency per level and the cost of a switch both ways, and writes them with the
screenshots to ``runs/web-app-test/``.

Nothing here is skipped: ``make test`` (``make setup-apps``) runs ``npm ci`` and installs Debian's
Chromium when missing; without them the tests fail with that instruction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from bundle_helpers import APP_LEVELS
from lcs_export.app import make_server
from lcs_export.cli import build_app
from lcs_train import at_alpha, load_subspace
from targets.onnx import patch_constants

#: One xdist worker runs this module, so its module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("web_app")

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "sample_apps" / "web"
CHROMIUM = Path("/usr/bin/chromium")
REPORT_DIR = REPO / "runs" / "web-app-test"
#: In-between alphas the switch-once and alpha-input paths are checked at.
ALPHAS = [0.25, 0.7]
#: The alpha the JavaScript byte-patching test reproduces Python's bytes at.
FIXTURE_ALPHA = 0.3
MAX_LOGIT_DIFF = 1e-4
runner = CliRunner()


def require_browser_tools() -> None:
    """Fail (never skip) with the one command that installs what is missing."""
    missing = [what for what, ok in (
        ("node", shutil.which("node") is not None),
        (str(CHROMIUM), CHROMIUM.exists()),
        ("sample_apps/web/node_modules (npm ci)", (WEB / "node_modules" / "playwright-core").is_dir()
         and (WEB / "node_modules" / "onnxruntime-web").is_dir()),
    ) if not ok]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run make setup-apps (or sh sample_apps/web/install-deps.sh)")


def invoke(*arguments: Any) -> Any:
    return runner.invoke(build_app(), [str(a) for a in arguments])


@pytest.fixture(scope="module")
def checkpoint(subspace_checkpoint: Callable[[str, str], Path]) -> Path:
    return subspace_checkpoint("unstructured", "line")


@pytest.fixture(scope="module")
def onnx_bundle(onnx_app_bundle: Path) -> Path:
    """Three level files plus the single alpha graph and the switch-once pair, validated; the
    pruned levels (0.5, 0.9) store their weights as a bit mask plus values (folded at load)."""
    manifest = json.loads((onnx_app_bundle / "manifest.json").read_text())
    assert [level["alpha"] for level in manifest["levels"]] == [float(a) for a in APP_LEVELS.split(",")]
    storage = [a["details"]["weight_storage"] for a in manifest["artifacts"] if a["kind"] == "level"]
    assert storage == ["float32", "float32_bitmask", "float32_bitmask"]
    return onnx_app_bundle


@pytest.fixture(scope="module")
def pytorch_logits(checkpoint: Path) -> Callable[[np.ndarray, float], np.ndarray]:
    """PyTorch's logits for images at an alpha, from the checkpoint itself."""
    model, _ = load_subspace(checkpoint)
    model.eval()

    def logits(images: np.ndarray, alpha: float) -> np.ndarray:
        with torch.no_grad(), at_alpha(model, float(alpha)):
            return model(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).numpy()

    return logits


@pytest.fixture(scope="module")
def served_app(onnx_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """``lcs-export app --platform web`` output, plus two broken bundles beside it, served."""
    require_browser_tools()
    directory = tmp_path_factory.mktemp("web-app") / "app"
    result = invoke("app", onnx_bundle, "--platform", "web", "-o", directory)
    assert result.exit_code == 0, result.output
    assert "wrote the web app" in result.output
    make_broken_bundles(directory)
    server = make_server(directory, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield directory, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def make_broken_bundles(app: Path) -> None:
    """bad-sha/: one artifact changed after export; newer/: a manifest from a future lcs."""
    changed = app / "bad-sha"
    shutil.copytree(app / "bundle", changed)
    level = changed / "level_alpha_0.5000.onnx"
    data = bytearray(level.read_bytes())
    data[-1] ^= 1
    level.write_bytes(bytes(data))
    newer = app / "newer"
    shutil.copytree(app / "bundle", newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["manifest_version"] = 3
    (newer / "manifest.json").write_text(json.dumps(manifest))


def test_javascript_unit_tests_pass_against_python_bytes(
    onnx_bundle: Path, pytorch_logits: Callable[[np.ndarray, float], np.ndarray], tmp_path: Path,
) -> None:
    """``node --test sample_apps/web/test/`` with a fixture Python wrote: the weights graph's
    outputs and the predict file Python patched at one alpha. No JS test may be skipped."""
    require_browser_tools()
    manifest = json.loads((onnx_bundle / "manifest.json").read_text())
    weights = next(a for a in manifest["artifacts"] if a["kind"] == "alpha_weights")
    offsets = weights["details"]["constant_offsets"]
    session = ort.InferenceSession(str(onnx_bundle / weights["path"]), providers=["CPUExecutionProvider"])
    values = session.run(None, {"alpha": np.array([FIXTURE_ALPHA], dtype=np.float32)})
    names = [output.name for output in session.get_outputs()]
    assert names == [entry["name"] for entry in offsets]
    patched = patch_constants((onnx_bundle / weights["details"]["predict_path"]).read_bytes(),
                              {entry["name"]: entry for entry in offsets}, dict(zip(names, values)))
    shutil.copytree(onnx_bundle, tmp_path / "bundle")
    (tmp_path / "values.bin").write_bytes(b"".join(np.ascontiguousarray(v, "<f4").tobytes() for v in values))
    (tmp_path / "patched.onnx").write_bytes(patched)
    images = np.asarray(manifest["samples"]["images"], dtype=np.float32)
    (tmp_path / "fixture.json").write_text(json.dumps({
        "alpha": FIXTURE_ALPHA, "values_file": "values.bin", "patched_file": "patched.onnx",
        "reference_logits": pytorch_logits(images, FIXTURE_ALPHA).tolist(),
    }))
    completed = subprocess.run(["node", "--test", "test/"], cwd=WEB, capture_output=True, text=True, timeout=180,
                               env={**os.environ, "LCS_WEB_FIXTURE": str(tmp_path)})
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    counts = {key: int(value) for key, value in re.findall(r"^# (pass|fail|skipped) (\d+)$", output, re.M)}
    assert counts["fail"] == 0 and counts["skipped"] == 0 and counts["pass"] >= 19, output[-2000:]


def run_browser(url: str, work: Path) -> dict[str, Any]:
    """Run the node driver and return what it recorded."""
    config = {"url": url, "alphas": ALPHAS, "screenshots": str(work), "userDataDir": str(work / "chromium-profile"),
              "chromium": str(CHROMIUM), "switchRepeats": 3, "benchRuns": 20,
              "badBundles": {"changed artifact": "bad-sha/", "newer manifest": "newer/"}}
    (work / "config.json").write_text(json.dumps(config))
    completed = subprocess.run(
        ["node", "e2e/browser-check.mjs", str(work / "config.json"), str(work / "result.json")],
        cwd=WEB, capture_output=True, text=True, timeout=240,
    )
    result = json.loads((work / "result.json").read_text()) if (work / "result.json").exists() else {}
    assert completed.returncode == 0 and not result.get("error"), (
        f"driver failed: {result.get('error')}\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return result


def switch_costs(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Median switch time per path: to the cheapest level ("down") and back to level 0 ("up")."""
    costs = {}
    for path, switches in result["switch_costs"].items():
        down = [s["ms"] for s in switches if s["to"]["level"] != 0]
        up = [s["ms"] for s in switches if s["to"]["level"] == 0]
        costs[path] = {"down_ms": statistics.median(down), "up_ms": statistics.median(up), "switches": len(switches)}
    return costs


def test_web_app_in_headless_chromium(
    served_app: tuple[Path, str], pytorch_logits: Callable[[np.ndarray, float], np.ndarray], tmp_path: Path,
) -> None:
    app_dir, url = served_app
    manifest = json.loads((app_dir / "bundle" / "manifest.json").read_text())
    result = run_browser(url, tmp_path)
    assert result["console_errors"] == []
    assert result["paths"] == ["levels", "switch_once", "alpha_input"]
    assert result["levels"] == [0.0, 0.5, 0.9]

    # Every logit the page computed, against PyTorch at the same alpha.
    images = np.asarray(manifest["samples"]["images"], dtype=np.float32)
    drawn = np.asarray(result["drawn_input"], dtype=np.float32).reshape(1, *images.shape[1:])
    assert np.abs(drawn).max() > 0, "the drawing reached the model as a blank image"
    checked, worst = set(), 0.0
    for run in result["runs"]:
        alpha = run["alpha"]
        browser = np.asarray([s["logits"] for s in run["samples"]] + [run["drawn"]["logits"]])
        reference = pytorch_logits(np.concatenate([images, drawn]), alpha)
        difference = float(np.abs(browser - reference).max())
        assert difference <= MAX_LOGIT_DIFF, f"{run['path']} at alpha {alpha}: max |diff| {difference}"
        assert (browser.argmax(1) == reference.argmax(1)).all(), f"{run['path']} at alpha {alpha}: top-1 differs"
        assert [s["top1"] for s in run["samples"]] == reference[:-1].argmax(1).tolist()
        checked.add((run["path"], round(alpha, 6)))
        worst = max(worst, difference)
    expected = {("levels", a) for a in (0.0, 0.5, 0.9)} | {
        (path, a) for path in ("switch_once", "alpha_input") for a in (0.0, 0.5, 0.9, *ALPHAS)}
    assert checked == expected

    # Auto mode: simulated thermal pressure moves to a cheaper level, its end brings level 0 back.
    auto = result["auto"]
    assert auto["level_before"] == "0"
    assert int(auto["level_under_pressure"]) > 0
    assert "thermal critical" in auto["policy_text_under_pressure"]
    assert auto["level_after"] == "0"
    pressured = [d for d in auto["decisions"] if d["pressure"] == "thermal-critical"]
    assert pressured and all(d["level"] > 0 for d in pressured)

    # Broken bundles are explained on screen, not crashed on.
    bad = result["bad_bundles"]
    assert bad["changed artifact"]["state"] == "error"
    assert re.search(r"level_alpha_0\.5000\.onnx does not match the manifest: sha256", bad["changed artifact"]["message"])
    assert bad["newer manifest"]["state"] == "error"
    assert "manifest version 3" in bad["newer manifest"]["message"]
    assert all(item["hint"].startswith("Fix:") for item in bad.values())

    screenshots = sorted(tmp_path.glob("web-app-level-*.png"))
    assert len(screenshots) == 2
    for shot in screenshots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    report = {
        "latency_ms_median": {path: {f"{result['levels'][i]:g}": statistics.median(times) for i, times in enumerate(per_level)}
                              for path, per_level in result["latency"].items()},
        "switch_ms_median": switch_costs(result),
        "runs_checked": len(result["runs"]),
        "max_abs_logit_diff_vs_pytorch": worst,
        "auto": {key: auto[key] for key in ("level_before", "level_under_pressure", "level_after")},
    }
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for shot in screenshots:
        shutil.copy2(shot, REPORT_DIR / shot.name)
    print_report(report)


def print_report(report: dict[str, Any]) -> None:
    print("\nin-browser latency per inference, batch 1, median of 20 (onnxruntime-web WASM, headless Chromium):")
    for path, per_level in report["latency_ms_median"].items():
        print(f"  {path:12s} " + "  ".join(f"alpha {alpha}: {ms:.3f} ms" for alpha, ms in per_level.items()))
    print("switch cost, median of 3 each way (level 0 <-> cheapest level):")
    for path, cost in report["switch_ms_median"].items():
        print(f"  {path:12s} to cheaper {cost['down_ms']:.1f} ms, back to level 0 {cost['up_ms']:.1f} ms")
    print(f"{report['runs_checked']} settings checked against PyTorch: max |logit diff| "
          f"{report['max_abs_logit_diff_vs_pytorch']:.2e}, same top-1 on every sample")
    print(f"report: {REPORT_DIR / 'report.json'}")
