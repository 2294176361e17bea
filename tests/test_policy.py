"""The level policy: the shared case table through Python, JavaScript (node --test) and Kotlin,
and Kotlin's switch-once byte patching against the bytes Python writes for the same alpha."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from lcs_export.policy import (
    DEFAULT_POLICY, Decision, PolicyLevel, State, decide, initial_state, levels_from_manifest, map_thermal,
)

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "sample_apps" / "policy"
KOTLIN_CORE = ROOT / "sample_apps" / "android" / "lcs-core"
CASES = json.loads((POLICY_DIR / "cases.json").read_text())
BASE_SIGNALS = {"nowMs": 0, "batteryFraction": None, "charging": None, "lowPowerMode": False,
                "thermal": "nominal", "latencyMs": None, "latencyBudgetMs": None}


def schema_for(definition: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((POLICY_DIR / "policy.schema.json").read_text())
    return jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})


def test_policy_json_matches_its_schema_and_the_inlined_default() -> None:
    policy = json.loads((POLICY_DIR / "policy.json").read_text())
    schema_for("policy").validate(policy)
    assert policy == DEFAULT_POLICY


def test_case_table_matches_its_schema() -> None:
    schema_for("caseTable").validate(CASES)
    assert len(CASES["decisions"]) >= 40


def test_schema_refuses_a_policy_without_dwell() -> None:
    broken = {k: v for k, v in DEFAULT_POLICY.items() if k != "dwellUpMs"}
    assert not schema_for("policy").is_valid(broken)


def run_case(case: dict[str, Any]) -> list[tuple[int, Decision]]:
    """Every step of one case, state handed from step to step through its JSON form."""
    policy = {**DEFAULT_POLICY, **case.get("policy", {})}
    state: Any = case.get("state", initial_state().to_json())
    signals = dict(BASE_SIGNALS)
    results = []
    for index, step in enumerate(case["steps"]):
        signals.update(step["signals"])
        if signals["latencyMs"] == "NaN":  # JSON has no NaN
            signals["latencyMs"] = math.nan
        decision = decide(case["levels"], signals, state, policy)
        results.append((index, decision))
        state = json.loads(json.dumps(decision.state.to_json()))
    return results


@pytest.mark.parametrize("case", CASES["decisions"], ids=[c["name"] for c in CASES["decisions"]])
def test_decision_case(case: dict[str, Any]) -> None:
    for (index, decision), step in zip(run_case(case), case["steps"], strict=True):
        expect = step["expect"]
        where = f"step {index} {step['signals']}: {decision.reason}"
        assert decision.level == expect["level"], where
        assert decision.state.level == decision.level, where
        if "reasonHas" in expect:
            assert expect["reasonHas"] in decision.reason, where
        if "sinceMs" in expect:
            assert decision.state.since_ms == expect["sinceMs"], where


def test_thermal_mapping_cases() -> None:
    for case in CASES["thermal"]:
        assert map_thermal(case["platform"], case["value"]) == case["expect"], case


@pytest.mark.parametrize("levels", [[], [{"alpha": 0.0, "cost": 0.0}], [{"alpha": 0.0, "cost": math.nan}]])
def test_decide_refuses_a_bundle_without_usable_levels(levels: list[dict[str, float]]) -> None:
    with pytest.raises(ValueError):
        decide(levels, BASE_SIGNALS, State())


def test_levels_from_manifest_prefer_nonzero_flops_then_flops_then_bytes() -> None:
    manifest = {"levels": [
        {"alpha": 0.5, "flops": 100, "bytes": 10, "stats": {"nonzero_flops": 40}},
        {"alpha": 0.0, "flops": 100, "bytes": 10, "stats": {"nonzero_flops": 0}},
        {"alpha": 0.9, "flops": 0, "bytes": 7, "stats": {}},
        {"alpha": 0.95, "flops": 0, "bytes": 0},
    ]}
    assert levels_from_manifest(manifest) == [
        PolicyLevel(0.5, 40.0), PolicyLevel(0.0, 100.0), PolicyLevel(0.9, 7.0), PolicyLevel(0.95, 1.0)]


def run_tool(command: list[str], env: dict[str, str] | None = None, timeout: int = 600) -> str:
    """Run a test runner of another language; on failure the assertion shows its output."""
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                               env={**os.environ, **(env or {})})
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{' '.join(command)} failed ({completed.returncode}):\n{output}"
    return output


def test_javascript_policy_runs_every_case() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is missing: install Node.js 20 (make setup)")
    output = run_tool(["node", "--test", "sample_apps/policy/"])
    assert "# fail 0" in output and f"# pass {len(CASES['decisions']) + 5}" in output, output


@pytest.fixture(scope="module")
def switch_once_fixture(onnx_app_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real switch-once ONNX bundle plus, per alpha, the weights graph's outputs as raw
    little-endian float32 files and the predict graph's bytes as Python patches them."""
    import onnxruntime as ort

    from targets.onnx import patch_constants

    root = tmp_path_factory.mktemp("switch-once")
    shutil.copytree(onnx_app_bundle, root / "bundle")
    manifest = json.loads((root / "bundle" / "manifest.json").read_text())
    predict = next(a for a in manifest["artifacts"] if a["kind"] == "alpha_predict")
    details = predict["details"]
    weights = ort.InferenceSession(str(root / "bundle" / details["weights_path"]), providers=["CPUExecutionProvider"])
    assert [output.name for output in weights.get_outputs()] == details["constants"]
    predict_bytes = (root / "bundle" / predict["path"]).read_bytes()
    offsets = {entry["name"]: entry for entry in details["constant_offsets"]}
    # Inside the range, both ends, and one outside it (clamped in the weights graph).
    alphas = [0.0, 0.3, 0.95, 1.0]
    for key, alpha in enumerate(alphas):
        values = weights.run(None, {"alpha": np.array([alpha], dtype=np.float32)})
        directory = root / f"alpha_{key}"
        directory.mkdir()
        for index, value in enumerate(values):
            assert value.dtype == np.float32
            (directory / f"{index}.f32").write_bytes(value.astype("<f4").tobytes())
        patched = patch_constants(predict_bytes, offsets, dict(zip(details["constants"], values)))
        (directory / "expected.onnx").write_bytes(patched)
    (root / "alphas.txt").write_text("".join(f"{key} {alpha}\n" for key, alpha in enumerate(alphas)))
    return root


def test_kotlin_core_runs_the_cases_and_patches_like_python(switch_once_fixture: Path, tmp_path: Path) -> None:
    """lcs-core (Android's platform-free Kotlin): the case table, manifest checks and the
    switch-once bytes for every alpha identical to Python's."""
    for tool in ("kotlinc", "java"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run make setup-apps (or sh sample_apps/android/lcs-core/install-deps.sh)")
    output = run_tool(["sh", str(KOTLIN_CORE / "test.sh")],
                      env={"LCS_SWITCH_ONCE_DIR": str(switch_once_fixture), "LCS_CORE_BUILD": str(tmp_path / "build")})
    assert f"policy cases: {len(CASES['decisions'])} cases" in output, output
    assert "switch-once bytes: 4 alphas identical to Python" in output, output
    assert "real bundle: " in output and "\nOK (" in output, output
