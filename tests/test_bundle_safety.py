"""Bundles under hostile and careless use: --force that fails, read-only and impossible
outputs, two processes on one bundle, leftovers of killed exports, modes, and the small
things a user sees (file names, messages, help).

Every command runs in-process through ``run_app`` (``bundle_helpers.run_cli``), as ``main`` does,
the code path of the ``lcs-export`` script, so stderr is exactly what a user would see.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bundle_helpers import copy_bundle, onnx_bundle, run_cli, tree_state
from lcs_export import atomic
from lcs_export.bundle import MANIFEST_NAME, PARITY_NAME, staged_bundle
from lcs_train.files import write_json_atomic
from lcs_export.manifest import MANIFEST_VERSION, read_manifest

#: One xdist worker runs this module, so its module-scoped exports are built once.
pytestmark = pytest.mark.xdist_group("bundle_safety")

SAMPLES = "40"


@pytest.fixture(scope="module")
def checkpoint(subspace_checkpoint: Callable[[str, str], Path]) -> Path:
    return subspace_checkpoint("unstructured", "line")


@pytest.fixture(scope="module")
def bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_bundle(tmp_path_factory, checkpoint)


def _one_line(result, *words: str) -> str:
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in line, line
    return line


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_force_with_failing_parity_keeps_the_old_bundle(bundle: Path, checkpoint: Path, tmp_path: Path) -> None:
    output = copy_bundle(bundle, tmp_path / "out")
    before = tree_state(output)
    result = run_cli("onnx", checkpoint, "--levels", "0.5", "-o", output, "--force", "--samples", SAMPLES,
                     "--max-logit-diff", "0", "--float-error-factor", "0")
    assert result.code == 1
    _one_line(result, "parity failed", f"nothing written at {output}")
    assert "parity" in result.stdout.lower()  # the failing table was still shown
    assert tree_state(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_new_output_that_fails_parity_is_not_created(checkpoint: Path, tmp_path: Path) -> None:
    result = run_cli("onnx", checkpoint, "--levels", "0", "-o", tmp_path / "new", "--samples", SAMPLES,
                     "--max-logit-diff", "0", "--float-error-factor", "0")
    assert result.code == 1 and not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["under_a_file", "in_proc", "is_a_file"])
def test_impossible_outputs_are_refused_before_any_work(checkpoint: Path, tmp_path: Path, where: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    output = {"under_a_file": tmp_path / "file" / "bundle", "in_proc": Path("/proc/self/lcs-bundle"),
              "is_a_file": tmp_path / "file"}[where]

    def loaded(*_: object) -> None:
        raise AssertionError("the checkpoint was loaded before the output was checked")

    monkeypatch.setattr("lcs_export.export.load_subspace", loaded)
    result = run_cli("onnx", checkpoint, "--levels", "0", "-o", output)
    assert result.code == 2
    _one_line(result, str(output))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _read_only_mount_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro none /mnt 2>/dev/null || "
                            "mount --bind / /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs unshare -rm to make a read-only bind mount")
def test_read_only_outputs_and_bundles(bundle: Path, checkpoint: Path, tmp_path: Path) -> None:
    """On a real read-only mount: export is refused before work; validate prints its
    results, says where they went instead, and exits 2; the bundle is unchanged."""
    read_only = tmp_path / "ro"
    copy_bundle(bundle, read_only / "bundle")
    before = tree_state(read_only)
    script = (
        f"mount --bind {read_only} {read_only} && mount -o remount,ro,bind {read_only} && "
        f"{sys.executable} -m lcs_export.cli onnx {checkpoint} --levels 0 -o {read_only}/new "
        f"2>{tmp_path}/export.err; echo $? > {tmp_path}/export.rc; "
        f"{sys.executable} -m lcs_export.cli validate {read_only}/bundle --samples {SAMPLES} "
        f">{tmp_path}/validate.out 2>{tmp_path}/validate.err; echo $? > {tmp_path}/validate.rc"
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, env=environment, timeout=300)
    export_error = (tmp_path / "export.err").read_text().strip().splitlines()
    assert (tmp_path / "export.rc").read_text().strip() == "2"
    assert len(export_error) == 1 and "Read-only file system" in export_error[0]
    validate_error = (tmp_path / "validate.err").read_text().strip().splitlines()
    assert (tmp_path / "validate.rc").read_text().strip() == "2"
    assert len(validate_error) == 1 and "could not be recorded" in validate_error[0], validate_error
    assert "pass" in (tmp_path / "validate.out").read_text()
    kept = Path(validate_error[0].split("written to ")[1].split(". Fix")[0].split(";")[0].strip())
    assert json.loads(kept.read_text())["status"] == "passed"
    assert tree_state(read_only) == before


def test_validate_on_a_bundle_it_cannot_write_keeps_the_results(bundle: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    copy = copy_bundle(bundle, tmp_path / "copy")
    before = tree_state(copy)

    def read_only(*_: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("lcs_export.validate.write_manifest", read_only)
    result = run_cli("validate", copy, "--samples", SAMPLES)
    assert result.code == 2
    line = _one_line(result, "could not be recorded", "Read-only file system")
    assert "alpha_predict.onnx" in result.stdout  # the parity table came first
    kept = Path(line.split("written to ")[1].split("; ")[0].split(". Fix")[0])
    assert json.loads(kept.read_text())["checks"] > 0
    assert tree_state(copy) == before


def test_validate_does_not_modify_a_core_ml_bundle(checkpoint: Path, tmp_path: Path) -> None:
    """coremltools rewrites a package's Manifest.json when it loads it: validation loads a
    verified private copy, so only manifest.json and parity.json of the bundle change."""
    output = tmp_path / "coreml"
    result = run_cli("coreml", checkpoint, "--levels", "0", "-o", output, "--no-validate")
    assert result.code == 0, result.stderr
    before = tree_state(output, skip=(MANIFEST_NAME, PARITY_NAME))
    result = run_cli("validate", output, "--samples", "16")
    assert result.code == 0, result.stderr
    assert tree_state(output, skip=(MANIFEST_NAME, PARITY_NAME)) == before
    assert read_manifest(output)["validation"]["status"] == "passed"


def test_a_bundle_in_use_is_refused_with_one_line(bundle: Path, checkpoint: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    output = copy_bundle(bundle, tmp_path / "out")
    before = tree_state(output)
    monkeypatch.setattr(atomic, "LOCK_WAIT_SECONDS", 0.2)
    with atomic.BundleLock(output, exclusive=True):
        for arguments in (["onnx", checkpoint, "--levels", "0", "-o", output, "--force"], ["validate", output],
                          ["inspect", output]):
            result = run_cli(*arguments)
            assert result.code == 2, (arguments, result.stderr)
            _one_line(result, "in use by another lcs-export process")
    assert tree_state(output) == before
    assert run_cli("inspect", output).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the lock file went with the last holder


def test_readers_share_the_lock_and_the_last_one_removes_it(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    with atomic.BundleLock(bundle, exclusive=False), atomic.BundleLock(bundle, exclusive=False):
        with pytest.raises(atomic.BundleBusyError):
            atomic.BundleLock(bundle, exclusive=True, wait=0).acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_stale_staging_of_dead_processes_is_removed_and_live_ones_kept(bundle: Path, tmp_path: Path) -> None:
    output = copy_bundle(bundle, tmp_path / "out")
    dead = _dead_pid()
    stale = [tmp_path / f".out.{dead}.0badc0de.partial", tmp_path / f".out.{dead}.0badc0de.old"]
    live = tmp_path / f".out.{os.getppid()}.0000beef.partial"
    other = tmp_path / f".other.{dead}.0badc0de.partial"  # another bundle's: not ours to judge
    for directory in [*stale, live, other]:
        (directory / "half").mkdir(parents=True)
    with pytest.raises(RuntimeError), staged_bundle(output, force=True):
        raise RuntimeError("stop before writing anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "out"])


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_bundle_files_and_directories_follow_the_umask(tmp_path: Path, mask: int) -> None:
    staging_like = tmp_path / "out"
    previous = os.umask(mask)
    try:
        with staged_bundle(staging_like) as staging:
            (staging / "pkg.mlpackage" / "weights").mkdir(parents=True, mode=0o700)  # as coremltools does
            fd = os.open(staging / "pkg.mlpackage" / "weights" / "weight.bin", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
            (staging / "level.onnx").write_bytes(b"x")
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
             for p in [staging_like, *staging_like.rglob("*")]}
    directory, file = 0o777 & ~mask, 0o666 & ~mask
    assert modes == {"out": directory, "out/pkg.mlpackage": directory, "out/pkg.mlpackage/weights": directory,
                     "out/pkg.mlpackage/weights/weight.bin": file, "out/level.onnx": file}


def test_json_files_follow_the_umask_and_a_failed_write_raises_os_error(tmp_path: Path) -> None:
    # lcs_export.validate keeps the results elsewhere on an OSError: it must not become an LcsError.
    previous = os.umask(0o027)
    try:
        written = write_json_atomic(tmp_path / PARITY_NAME, {"passed": True})
    finally:
        os.umask(previous)
    assert written.read_text() == '{\n  "passed": true\n}\n' and written.stat().st_mode & 0o777 == 0o640
    with pytest.raises(OSError):
        write_json_atomic(tmp_path / "missing" / PARITY_NAME, {})
    with pytest.raises(ValueError):
        write_json_atomic(written, {"nan": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == [PARITY_NAME] and "passed" in written.read_text()


def test_minus_zero_is_alpha_zero_in_file_names_and_the_manifest(checkpoint: Path, tmp_path: Path) -> None:
    result = run_cli("onnx", checkpoint, "--levels=-0", "-o", tmp_path / "out", "--no-validate")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["level_alpha_0.0000.onnx", MANIFEST_NAME]
    assert "-0" not in (tmp_path / "out" / MANIFEST_NAME).read_text().split('"levels"')[1].split('"artifacts"')[0]


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_a_file_given_as_a_bundle_says_so(tmp_path: Path, command: str) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    result = run_cli(command, tmp_path / "model.onnx")
    assert result.code == 2
    _one_line(result, "is a file, expected a bundle directory")


def test_an_integrity_failure_is_one_line_naming_each_file_once(bundle: Path, tmp_path: Path) -> None:
    copy = copy_bundle(bundle, tmp_path / "copy")
    (copy / "level_alpha_0.5000.onnx").write_bytes(b"tampered")
    for command in ("inspect", "validate"):
        result = run_cli(command, copy)
        assert result.code == 1
        line = _one_line(result, "level_alpha_0.5000.onnx: has 8 bytes")
        assert line.count("level_alpha_0.5000.onnx") == 1


def test_a_version_1_manifest_is_still_read_and_upgraded(bundle: Path, tmp_path: Path) -> None:
    copy = copy_bundle(bundle, tmp_path / "copy")
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["manifest_version"] = 1
    for entry in manifest["artifacts"]:
        if entry["kind"] == "alpha_predict":
            entry["kind"] = "alpha_input"  # what version 1 wrote
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    upgraded = read_manifest(copy)
    assert upgraded["manifest_version"] == MANIFEST_VERSION == 2
    assert {e["path"]: e["kind"] for e in upgraded["artifacts"]}["alpha_predict.onnx"] == "alpha_predict"
    assert run_cli("inspect", copy).code == 0


def test_help_uses_articles_and_shows_every_default(tmp_path: Path) -> None:
    texts = {name: run_cli(name, "--help").stdout for name in ("onnx", "coreml", "torchscript-lite", "validate")}
    assert "an ONNX bundle" in texts["onnx"] and "a Core ML bundle" in texts["coreml"]
    assert "a TorchScript Lite bundle" in texts["torchscript-lite"]
    for text in texts.values():
        # The old help lost "[default: ...]" to rich markup and left "images ." behind.
        assert "a onnx" not in text and not re.search(r"\w \.(\s|$)", text), text
    assert "[default: (all)]" in " ".join(texts["validate"].split())


def test_a_bad_command_line_is_one_line(checkpoint: Path) -> None:
    for arguments in (["onnx", checkpoint, "--samples", "abc", "-o", "x"], ["bogus"], ["inspect"],
                      ["onnx", checkpoint, "--no-such-flag"]):
        result = run_cli(*arguments)
        assert result.code == 2
        _one_line(result, "Fix: see lcs-export")


def test_a_data_directory_for_an_embedded_dataset_is_refused_not_ignored(tmp_path: Path) -> None:
    from lcs_export.validate import load_held_out
    from lcs_train.errors import LcsError

    with pytest.raises(LcsError, match="takes no directory"):
        load_held_out({"dataset": "digits", "data_dir": None}, ["batch", 1, 8, 8], data=str(tmp_path))
