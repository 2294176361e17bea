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

from lcs_export.policy import DEFAULT_POLICY, Decision, State, decide, initial_state, map_thermal

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
    assert "# fail 0" in output and f"# pass {len(CASES['decisions']) + 4}" in output, output
