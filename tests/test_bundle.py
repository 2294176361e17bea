"""Levels parsing, the staged bundle directory, file digests and the manifest schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lcs_export.bundle import check_integrity, file_facts, is_bundle, sha256_of, staged_bundle
from lcs_export.levels import parse_levels
from lcs_export.manifest import manifest_schema, read_manifest, validate_manifest
from lcs_train.errors import LcsError
from lcs_train.methods import Quantized, Structured, Unstructured


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0,0.97", "outside the trained range [0, 0.95]"),
        ("0.0,1.5", "outside [0, 1]"),
        ("0.5,0.2", "sorted ascending"),
        ("0.2,0.2", "given twice"),
        ("0.0,,0.5", "empty entry"),
        ("zero", "'zero' is not a number"),
    ],
)
def test_bad_levels_name_the_value_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(LcsError) as caught:
        parse_levels(text, Unstructured(max_sparsity=0.95))
    assert message in caught.value.message
    assert caught.value.hint


def test_quantized_levels_must_be_whole_bit_widths_and_the_error_lists_them() -> None:
    with pytest.raises(LcsError) as caught:
        parse_levels("0.0,0.5", Quantized())
    assert "0.5 is not a level" in caught.value.message
    assert "0.2 (7 bits)" in caught.value.hint and "1 (3 bits)" in caught.value.hint


def test_good_levels_parse_and_quantized_ones_snap_to_the_exact_alpha() -> None:
    assert parse_levels(" 0.0, 0.25 ,0.75", Structured(min_width=0.25)) == [0.0, 0.25, 0.75]
    assert parse_levels("0,0.20000001,1", Quantized()) == [0.0, 0.2, 1.0]


def _fake_bundle(directory: Path) -> None:
    directory.mkdir()
    (directory / "manifest.json").write_text(json.dumps({"format": "lcs-bundle"}))
    (directory / "level.bin").write_bytes(b"old")


def test_a_failed_export_leaves_neither_the_output_nor_a_temporary_directory(tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    with pytest.raises(RuntimeError), staged_bundle(output) as staging:
        (staging / "half.onnx").write_bytes(b"partial")
        raise RuntimeError("exporter crashed")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_forced_export_keeps_the_old_bundle(tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    _fake_bundle(output)
    with pytest.raises(KeyboardInterrupt), staged_bundle(output, force=True):
        raise KeyboardInterrupt
    assert (output / "level.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_an_existing_output_is_refused_without_force(tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    _fake_bundle(output)
    with pytest.raises(LcsError, match="already exists"), staged_bundle(output):
        pass


def test_force_never_deletes_a_directory_lcs_did_not_write(tmp_path: Path) -> None:
    output = tmp_path / "photos"
    output.mkdir()
    (output / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(LcsError, match="not an lcs bundle"), staged_bundle(output, force=True):
        pass
    assert (output / "holiday.jpg").read_bytes() == b"precious"


def test_force_replaces_a_bundle_whole(tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    _fake_bundle(output)
    with staged_bundle(output, force=True) as staging:
        (staging / "manifest.json").write_text(json.dumps({"format": "lcs-bundle", "new": True}))
    assert is_bundle(output) and not (output / "level.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_directory_digest_covers_every_file_and_its_name(tmp_path: Path) -> None:
    package = tmp_path / "model.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    (package / "Data" / "weight.bin").write_bytes(b"\x00" * 4096)
    facts = file_facts(package)
    assert facts.bytes == 4096 + 2 and 0 < facts.gzip_bytes < facts.bytes
    assert sha256_of(package) == facts.sha256
    (package / "Data" / "weight.bin").write_bytes(b"\x00" * 4095 + b"\x01")
    assert sha256_of(package) != facts.sha256
    (package / "Data" / "weight.bin").write_bytes(b"\x00" * 4096)
    (package / "Data" / "weight.bin").rename(package / "Data" / "other.bin")
    assert sha256_of(package) != facts.sha256


def _listing(directory: Path, *names: str) -> dict:
    return {"artifacts": [{"path": name, "sha256": sha256_of(directory / name),
                           "bytes": (directory / name).stat().st_size} for name in names], "levels": []}


def test_integrity_reports_tampered_resized_and_missing_files(tmp_path: Path) -> None:
    for name in ("a.onnx", "b.onnx", "c.onnx"):
        (tmp_path / name).write_bytes(name.encode())
    manifest = _listing(tmp_path, "a.onnx", "b.onnx", "c.onnx")
    (tmp_path / "a.onnx").write_bytes(b"x.onnx")
    (tmp_path / "b.onnx").write_bytes(b"b.onnx and more")
    (tmp_path / "c.onnx").unlink()
    assert [(r.path, r.problem) for r in check_integrity(tmp_path, manifest)] == [
        ("a.onnx", "sha256 mismatch"), ("b.onnx", "has 15 bytes, the manifest says 6"), ("c.onnx", "missing")]


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../x", "./a.onnx", "a//b"])
def test_a_manifest_cannot_point_outside_its_bundle(tmp_path: Path, path: str) -> None:
    manifest = {"artifacts": [{"path": path, "sha256": "0" * 64, "bytes": 1}], "levels": []}
    (result,) = check_integrity(tmp_path, manifest)
    assert not result.ok and "relative path inside the bundle" in result.problem


def test_links_fifos_and_devices_in_a_bundle_are_never_read(tmp_path: Path) -> None:
    import os

    bundle = tmp_path / "bundle"
    (bundle / "pkg.mlpackage" / "Data").mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"outside")
    os.symlink(tmp_path / "secret", bundle / "out.onnx")
    os.symlink("/dev/zero", bundle / "zero.onnx")
    os.symlink(tmp_path / "secret", bundle / "pkg.mlpackage" / "Data" / "weight.bin")
    os.mkfifo(bundle / "fifo.onnx")
    (bundle / "inside.onnx").write_bytes(b"inside")
    os.symlink("inside.onnx", bundle / "link-in.onnx")
    names = ["out.onnx", "zero.onnx", "pkg.mlpackage", "fifo.onnx", "link-in.onnx"]
    manifest = {"artifacts": [{"path": n, "sha256": "0" * 64, "bytes": 7} for n in names], "levels": []}
    problems = {r.path: r.problem for r in check_integrity(bundle, manifest)}
    assert problems == {
        "out.onnx": "is a symbolic link, not a regular file", "zero.onnx": "is a symbolic link, not a regular file",
        "pkg.mlpackage": "holds Data/weight.bin, which is a symbolic link", "fifo.onnx": "is a FIFO, not a regular file",
        "link-in.onnx": "is a symbolic link, not a regular file"}


def test_every_path_named_in_details_must_be_a_checked_artifact(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"a")
    manifest = _listing(tmp_path, "a.onnx")
    manifest["artifacts"][0]["details"] = {"predict_path": "b.onnx", "nested": {"weights_path": "../x"},
                                           "function_files": {"f": "a.onnx"}}
    problems = [(r.path, r.problem) for r in check_integrity(tmp_path, manifest) if not r.ok]
    assert problems == [
        ("b.onnx", "named by artifacts[0].details.predict_path but not a listed artifact, so no sha256 covers it"),
        ("../x", "named by artifacts[0].details.nested.weights_path is not a plain relative path inside the bundle "
                 "(no '.', '..' or '//')")]


def test_schema_is_valid_draft_2020_12_and_rejects_a_bad_manifest(tmp_path: Path) -> None:
    import jsonschema

    schema = manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")
    with pytest.raises(LcsError, match="does not match the lcs bundle schema"):
        validate_manifest({"format": "lcs-bundle", "manifest_version": 1})
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "lcs-bundle", "manifest_version": 1}))
    with pytest.raises(LcsError, match="schema"):
        read_manifest(tmp_path)
    with pytest.raises(LcsError, match="does not exist"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(LcsError, match="is a file, expected a bundle directory"):
        read_manifest(tmp_path / "manifest.json")
