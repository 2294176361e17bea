"""``lcs-export app``: a sample app laid out with a bundle, and every bad input refused with
one message, the right exit code (2; 1 for a sha256 mismatch) and nothing written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import lcs_export.app as app_module
from lcs_export.bundle import check_integrity, sha256_of
from lcs_export.cli import build_app
from lcs_export.manifest import read_manifest

#: One xdist worker runs this module, so its module-scoped exports are built once.
pytestmark = pytest.mark.xdist_group("app_command")

runner = CliRunner()
SAMPLE_APPS = Path(__file__).resolve().parents[1] / "sample_apps"


def invoke(*arguments: Any) -> Any:
    return runner.invoke(build_app(), [str(a) for a in arguments])


@pytest.fixture(scope="module")
def bundle(onnx_app_bundle: Path) -> Path:
    """The shared ONNX bundle of the sample apps' tests (never changed here: see broken_copy)."""
    return onnx_app_bundle


def broken_copy(bundle: Path, tmp_path: Path, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of ``bundle`` whose manifest (or files) ``edit`` changes."""
    copy = tmp_path / "broken"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def assert_refused(result: Any, code: int, output: Path, *phrases: str) -> None:
    """One error naming the problem; nothing at ``output`` and no staging left beside it."""
    assert result.exit_code == code, result.output
    text = " ".join(result.output.split())
    for phrase in phrases:
        assert phrase in text, text
    assert "Traceback" not in result.output
    assert not output.exists()
    assert not list(output.parent.glob(f".{output.name}.*"))


def test_web_app_holds_the_app_the_policy_the_schema_the_runtime_and_the_checked_bundle(bundle: Path, tmp_path: Path) -> None:
    output = tmp_path / "web"
    result = invoke("app", bundle, "--platform", "web", "-o", output)
    assert result.exit_code == 0, result.output
    assert "wrote the web app" in result.output and "--serve" in result.output
    for path in ("index.html", "style.css", "src/app.mjs", "src/patch.mjs", "policy/policy.mjs",
                 "vendor/onnxruntime-web/ort.wasm.min.mjs", "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm",
                 "vendor/ajv/ajv2020.min.js"):
        assert (output / path).is_file(), path
    assert not (output / "node_modules").exists() and not (output / "test").exists()
    assert (output / "schema/manifest.schema.json").read_bytes() == (
        Path(app_module.__file__).parent / "schemas/manifest.schema.json").read_bytes()
    assert (output / "policy/policy.mjs").read_bytes() == (SAMPLE_APPS / "policy/policy.mjs").read_bytes()
    copied = read_manifest(output / "bundle")
    assert all(item.ok for item in check_integrity(output / "bundle", copied))
    marker = json.loads((output / "lcs-app.json").read_text())
    assert marker["platform"] == "web" and marker["manifest_sha256"] == sha256_of(bundle / "manifest.json")
    assert not list(tmp_path.glob(".web.*"))


def test_force_replaces_an_app_it_wrote_and_nothing_else(bundle: Path, tmp_path: Path) -> None:
    output = tmp_path / "web"
    assert invoke("app", bundle, "--platform", "web", "-o", output).exit_code == 0
    (output / "stale.txt").write_text("from the previous app")
    again = invoke("app", bundle, "--platform", "web", "-o", output)
    assert again.exit_code == 2 and "exists and is not empty" in again.output and "--force" in again.output
    assert (output / "stale.txt").exists()
    replaced = invoke("app", bundle, "--platform", "web", "-o", output, "--force")
    assert replaced.exit_code == 0, replaced.output
    assert not (output / "stale.txt").exists() and (output / "index.html").is_file()

    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    refused = invoke("app", bundle, "--platform", "web", "-o", users, "--force")
    assert refused.exit_code == 2 and "not written by lcs-export app" in " ".join(refused.output.split())
    assert (users / "notes.txt").read_text() == "mine" and len(list(users.iterdir())) == 1


def test_an_empty_output_directory_is_used(bundle: Path, tmp_path: Path) -> None:
    output = tmp_path / "empty"
    output.mkdir()
    assert invoke("app", bundle, "--platform", "web", "-o", output).exit_code == 0
    assert (output / "bundle" / "manifest.json").is_file()


@pytest.mark.parametrize("case", ["schema", "newer", "missing", "coreml_for_web", "onnx_for_ios"])
def test_a_bundle_that_does_not_suit_is_refused_with_exit_2(bundle: Path, tmp_path: Path, case: str) -> None:
    platform = "ios" if case == "onnx_for_ios" else "web"
    edits: dict[str, Callable[[dict[str, Any], Path], None]] = {
        "schema": lambda m, d: m["artifacts"][0].update(sha256="xyz"),
        "newer": lambda m, d: m.update(manifest_version=3),
        "missing": lambda m, d: (d / m["artifacts"][1]["path"]).unlink(),
        "coreml_for_web": lambda m, d: m["target"].update(name="coreml"),
        "onnx_for_ios": lambda m, d: None,
    }
    phrases = {
        "schema": ["does not match the lcs bundle schema at artifacts/0/sha256", "re-export"],
        "newer": ["manifest version 3, newer than this lcs-export understands", "upgrade lcs"],
        "missing": ["lists level_alpha_0.5000.onnx but the file is not there", "copy the whole bundle"],
        "coreml_for_web": ["is a bundle for coreml; the web app runs onnx bundles", "lcs-export onnx"],
        "onnx_for_ios": ["is a bundle for onnx; the ios app runs coreml bundles", "lcs-export coreml"],
    }
    source = broken_copy(bundle, tmp_path, edits[case])
    output = tmp_path / "app"
    result = invoke("app", source, "--platform", platform, "-o", output)
    assert_refused(result, 2, output, str(source), *phrases[case])


def test_a_changed_artifact_fails_the_integrity_check_with_exit_1(bundle: Path, tmp_path: Path) -> None:
    def tamper(manifest: dict[str, Any], directory: Path) -> None:
        level = directory / manifest["artifacts"][0]["path"]
        data = bytearray(level.read_bytes())
        data[100] ^= 0xFF
        level.write_bytes(bytes(data))

    source = broken_copy(bundle, tmp_path, tamper)
    output = tmp_path / "app"
    result = invoke("app", source, "--platform", "web", "-o", output)
    assert_refused(result, 1, output, "level_alpha_0.0000.onnx: sha256 mismatch", "re-export")


def test_bad_arguments_are_user_errors(bundle: Path, tmp_path: Path) -> None:
    output = tmp_path / "app"
    assert_refused(invoke("app", bundle, "--platform", "windows", "-o", output), 2, output,
                   "--platform 'windows' is not one of web, android, ios")
    assert_refused(invoke("app", bundle, "--platform", "android", "-o", output, "--serve"), 2, output,
                   "--serve serves the web app, not android")
    assert_refused(invoke("app", tmp_path / "nowhere", "--platform", "web", "-o", output), 2, output,
                   "does not exist")
    (tmp_path / "file").write_text("x")
    result = invoke("app", bundle, "--platform", "web", "-o", tmp_path / "file")
    assert result.exit_code == 2 and "exists and is not a directory" in " ".join(result.output.split())


def test_without_npm_ci_the_web_app_says_how_to_get_onnxruntime_web(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkout where ``npm ci`` never ran: the sample apps without node_modules."""
    checkout = tmp_path / "sample_apps"
    shutil.copytree(SAMPLE_APPS / "web", checkout / "web", ignore=shutil.ignore_patterns("node_modules"))
    shutil.copytree(SAMPLE_APPS / "policy", checkout / "policy")
    monkeypatch.setattr(app_module, "sample_apps_root", lambda: checkout)
    output = tmp_path / "app"
    assert_refused(invoke("app", bundle, "--platform", "web", "-o", output), 2, output,
                   "onnxruntime-web and ajv-dist are not installed", f"npm ci --prefix {checkout / 'web'}")


def test_android_project_gets_the_bundle_in_its_assets(bundle: Path, tmp_path: Path) -> None:
    output = tmp_path / "android"
    result = invoke("app", bundle, "--platform", "android", "-o", output)
    assert result.exit_code == 0, result.output
    assets = output / "android/app/src/main/assets/bundle"
    assert sorted(p.name for p in assets.iterdir()) == sorted(p.name for p in bundle.iterdir())
    assert all(item.ok for item in check_integrity(assets, read_manifest(assets)))
    assert (output / "android/settings.gradle.kts").is_file() and "Android Studio" in result.output
    # lcs-core's Gradle test task reads the case table at ../../policy, as in the repository.
    assert "../../policy" in (output / "android/lcs-core/build.gradle.kts").read_text()
    assert (output / "android/lcs-core/../../policy/cases.json").resolve().is_file()
    assert not list(output.rglob("build")), "build outputs are not copied"


def test_ios_project_gets_a_core_ml_bundle_as_a_resource(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path,
) -> None:
    coreml = tmp_path / "coreml"
    exported = invoke("coreml", subspace_checkpoint("unstructured", "line"), "--levels", "0.0", "-o", coreml, "--no-validate")
    assert exported.exit_code == 0, exported.output
    web = tmp_path / "web"
    assert_refused(invoke("app", coreml, "--platform", "web", "-o", web), 2, web,
                   "is a bundle for coreml; the web app runs onnx bundles")
    output = tmp_path / "ios"
    result = invoke("app", coreml, "--platform", "ios", "-o", output)
    assert result.exit_code == 0, result.output
    resource = output / app_module.BUNDLE_PLACES["ios"]
    assert all(item.ok for item in check_integrity(resource, read_manifest(resource)))
    assert (output / "ios/Package.swift").is_file() and "Xcode" in result.output
    # PolicyCasesTests finds the case table three folders above its own file, as in the repository.
    assert (output / "ios/Tests/LcsCoreTests/../../../policy/cases.json").resolve().is_file()


def test_serve_on_a_busy_port_writes_nothing(bundle: Path, tmp_path: Path) -> None:
    from lcs_export.app import make_server

    busy = make_server(tmp_path, port=0)
    try:
        output = tmp_path / "app"
        assert_refused(invoke("app", bundle, "--platform", "web", "-o", output, "--serve", "--port", busy.server_address[1]),
                       2, output, f"cannot serve on 127.0.0.1:{busy.server_address[1]}", "--port 0")
    finally:
        busy.server_close()
