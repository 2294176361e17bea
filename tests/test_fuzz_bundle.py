"""Fuzz: mutated manifests, bundle trees and command lines against ``lcs-export``.

A seeded generator (``SEED``, fixed counts) mutates a real bundle: manifest values (types,
NaN, infinities, huge integers, deep nesting, version, kinds, paths with ``..``, absolute
paths, names of links, offsets, sizes, digests), the manifest file itself (truncated, not
UTF-8, a link, a FIFO), and the tree (links leading out and in, to /dev/zero, FIFOs, extra,
missing and resized files, a link inside an ``.mlpackage``). Command lines get bad numbers,
options and outputs. For every case:

- the exit code is 1 (integrity, parity) or 2 (user error); 0 only for a mutation that
  leaves a valid bundle (an extra file, a kind no check depends on);
- stderr holds exactly one line when it fails and none when it passes; no traceback;
- nothing outside the given paths is opened: an inotify watch on the directory of decoy
  files outside the bundle (independent of lcs, it sees opens by any library, C included)
  stays silent, and a Python audit hook sees no absolute path to them or to /dev/zero;
- the bundle is unchanged by ``inspect`` (and, but for manifest.json and parity.json, by
  ``validate``); a refused export leaves its output as it was and no staging behind.

The counts and the time are printed (``pytest -s``); the note of issue 8 quotes them.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bundle_helpers import copy_bundle, onnx_bundle, run_cli, tree_state
from lcs_export.bundle import MANIFEST_NAME, PARITY_NAME, file_facts

#: One xdist worker runs this module, so its module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("fuzz_bundle")

SEED = 20261129
INSPECT_CASES = 300
VALIDATE_CASES = 24
OPTION_CASES = 80
PACKAGE = "pkg.mlpackage"

_IN_OPEN, _IN_ACCESS = 0x20, 0x01
_audit_seen: list[str] = []
_audit_on = [False]


def _audit(event: str, arguments: tuple) -> None:
    if _audit_on[0] and event == "open" and arguments and isinstance(arguments[0], str | bytes):
        path = os.fsdecode(arguments[0])
        if os.path.isabs(path):
            _audit_seen.append(path)


sys.addaudithook(_audit)


class OpenWatch:
    """inotify on a directory: did anything open or read a file in it?"""

    def __init__(self, directory: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        for path in [directory, *[p for p in directory.rglob("*") if p.is_dir()]]:
            if self.libc.inotify_add_watch(self.fd, os.fsencode(path), _IN_OPEN | _IN_ACCESS) < 0:
                raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def events(self) -> int:
        count = 0
        while True:
            try:
                count += len(os.read(self.fd, 65536))
            except BlockingIOError:
                return count


@pytest.fixture(scope="module")
def world(subspace_checkpoint: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The real bundle (plus a small package-shaped artifact), decoys outside, and the watch."""
    checkpoint = subspace_checkpoint("unstructured", "line")
    root = tmp_path_factory.mktemp("fuzz")
    plain = copy_bundle(onnx_bundle(tmp_path_factory, checkpoint), root / "plain")
    with_package = copy_bundle(plain, root / "with-package")
    weights = with_package / PACKAGE / "Data" / "com.apple.CoreML" / "weights"
    weights.mkdir(parents=True)
    (with_package / PACKAGE / "Manifest.json").write_text("{}")
    (weights.parent / "model.mlmodel").write_bytes(b"model" * 10)
    (weights / "weight.bin").write_bytes(bytes(range(256)) * 8)
    manifest = json.loads((with_package / MANIFEST_NAME).read_text())
    facts = file_facts(with_package / PACKAGE)
    manifest["artifacts"].append({"path": PACKAGE, "kind": "level", "alphas": [0.25], "bytes": facts.bytes,
                                  "gzip_bytes": facts.gzip_bytes, "sha256": facts.sha256, "details": {},
                                  "usage": None, "parity": []})
    (with_package / MANIFEST_NAME).write_text(json.dumps(manifest))
    outside = root / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret").write_bytes(b"s" * 64)
    (outside / "dir" / "weight.bin").write_bytes(b"w" * 64)
    os.mkfifo(outside / "fifo")
    assert run_cli("inspect", with_package).code == 0
    watch = OpenWatch(outside)
    (outside / "secret").read_bytes()
    assert watch.events() > 0  # the watch does see a read
    return {"checkpoint": checkpoint, "plain": plain, "package": with_package, "outside": outside,
            "watch": watch, "root": root}


# --- manifest mutations: each returns True when the bundle can no longer be valid ----------


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))] or [path]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value[:3]) for leaf in _leaves(item, (*path, index))] or [path]
    return [path]


def _set(manifest: dict, path: tuple, value: Any) -> None:
    target = manifest
    for key in path[:-1]:
        target = target[key]
    if path:
        target[path[-1]] = value


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


DEEP_MARKER = "__deep_nesting__"
BAD_VALUES = [float("nan"), float("inf"), -float("inf"), 10**30, -(10**30), "deep", "very deep"]
ODD_VALUES = [-1, "1", None, [], {}, True, 0.5, "", "x" * 5000]


def m_leaf(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    path = rng.choice(_leaves(manifest))
    if rng.random() < 0.5:
        value = rng.choice(BAD_VALUES)
        # 3000 levels is past what json.dumps can write: a marker is replaced in the text.
        value = _deep(100) if value == "deep" else DEEP_MARKER if value == "very deep" else value
        _set(manifest, path, value)
        return True
    _set(manifest, path, rng.choice(ODD_VALUES))
    return False


def m_version(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    manifest["manifest_version"] = rng.choice(["1", "2", 1.5, 3, 0, -1, True, None, 2**70, [2], {"v": 2}])
    return True


def m_kind(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    entry = rng.choice(manifest["artifacts"])
    entry["kind"] = rng.choice([k for k in ("level", "alpha_input", "alpha_weights", "alpha_predict",
                                            "multifunction", "Level", "", 3) if k != entry["kind"]])
    return entry["kind"] not in ("alpha_input", "multifunction", "level", "alpha_weights", "alpha_predict")


def _hostile_path(world: dict, bundle: Path, rng: random.Random) -> str:
    choice = rng.choice(["dotdot", "absolute", "secret", "passwd", "updown", "missing", "empty", "link-out",
                         "zero", "fifo", "dot", "link-in", "dir-link", "outside-fifo"])
    if choice == "link-out":
        os.symlink(world["outside"] / "secret", bundle / "link-out.onnx")
        return "link-out.onnx"
    if choice == "zero":
        os.symlink("/dev/zero", bundle / "zero.onnx")
        return "zero.onnx"
    if choice == "fifo":
        os.mkfifo(bundle / "fifo.onnx")
        return "fifo.onnx"
    if choice == "link-in":
        os.symlink("level_alpha_0.0000.onnx", bundle / "link-in.onnx")
        return "link-in.onnx"
    if choice == "dir-link":
        os.symlink(world["outside"] / "dir", bundle / "dir-link")
        return "dir-link/weight.bin"
    return {"dotdot": "../outside/secret", "absolute": str(world["outside"] / "secret"), "secret": "../../secret",
            "passwd": "/etc/passwd", "updown": "a/../../outside/secret", "missing": "missing.onnx", "empty": "",
            "dot": "./level_alpha_0.0000.onnx", "outside-fifo": "../outside/fifo"}[choice]


def m_path(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    entries = manifest["artifacts"] + manifest["levels"]
    rng.choice(entries)["path"] = _hostile_path(world, bundle, rng)
    return True


def m_named_path(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    entry = rng.choice(manifest["artifacts"])
    key = rng.choice(["predict_path", "weights_path", "extra_path", "function_files", "data_file"])
    value = _hostile_path(world, bundle, rng)
    entry["details"][key] = {"f": value} if key.endswith("files") else value
    return True


def m_offsets(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    predict = next(a for a in manifest["artifacts"] if a["kind"] == "alpha_predict")
    table = predict["details"]["constant_offsets"]
    item = rng.choice(table)
    change = rng.choice(["far", "negative", "overlap", "bytes", "dtype", "shape", "name", "gone", "type", "shift"])
    if change == "far":
        item["offset"] = predict["bytes"] + rng.choice([1, 10**9])
    elif change == "negative":
        item["offset"] = -rng.choice([1, 10**9])
    elif change == "overlap":
        other = rng.choice([t for t in table if t is not item])
        item["offset"] = other["offset"] + 1
    elif change == "bytes":
        item["bytes"] += rng.choice([4, -4, 10**12])
    elif change == "dtype":
        item["dtype"] = rng.choice(["float64", "complex", None, 4])
    elif change == "shape":
        item["shape"] = rng.choice([[-1], ["a"], [10**6, 10**6], None])
    elif change == "name":
        item["name"] = rng.choice([t for t in table if t is not item])["name"]
    elif change == "gone":
        predict["details"].pop("constant_offsets")
    elif change == "type":
        predict["details"]["constant_offsets"] = rng.choice([{}, "x", [1, 2], None])
    else:  # a plausible but wrong place: caught only when the file is read (validate)
        item["offset"] += rng.choice([1, -1])
        return False
    return True


def m_facts(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    entry = rng.choice(manifest["artifacts"] + manifest["levels"])
    change = rng.choice(["plus", "minus", "huge", "negative", "digest", "bad-digest", "string"])
    if change == "plus":
        entry["bytes"] += 1
    elif change == "minus":
        entry["bytes"] -= 1
    elif change == "huge":
        entry["bytes"] = 10**15
    elif change == "negative":
        entry["bytes"] = -1
    elif change == "digest":
        entry["sha256"] = "%064x" % rng.getrandbits(256)
    elif change == "bad-digest":
        entry["sha256"] = "xyz"
    else:
        entry["bytes"] = str(entry["bytes"])
    return True


def m_structure(manifest: dict, world: dict, bundle: Path, rng: random.Random) -> bool:
    change = rng.choice(["drop", "unknown", "duplicate", "no-artifacts", "levels-type"])
    if change == "drop":
        manifest.pop(rng.choice([k for k in manifest if k != "format"]))
    elif change == "unknown":
        manifest["surprise"] = 1
    elif change == "duplicate":
        manifest["artifacts"].append(dict(manifest["artifacts"][0]))
    elif change == "no-artifacts":
        manifest["artifacts"] = []
    else:
        manifest["levels"] = {"0": manifest["levels"]}
    return True


MANIFEST_MUTATIONS = [m_leaf, m_version, m_kind, m_path, m_named_path, m_offsets, m_facts, m_structure]


# --- raw manifest file and tree mutations ----------------------------------------------------


def _regular(path: Path) -> Path:
    """``path`` if it is a regular file (an earlier mutation may have made it a link to
    /dev/zero, which the test itself must not read either)."""
    if path.is_symlink() or not path.is_file():
        raise FileNotFoundError(path)
    return path


def t_manifest_file(world: dict, bundle: Path, rng: random.Random) -> bool:
    path = _regular(bundle / MANIFEST_NAME)
    change = rng.choice(["truncate", "binary", "empty", "array", "null", "dir", "link-out", "zero", "fifo",
                         "nan-token", "huge-number"])
    text = path.read_bytes()
    path.unlink()
    if change == "truncate":
        path.write_bytes(text[: rng.randrange(1, len(text))])
    elif change == "binary":
        path.write_bytes(b"\xff\xfe" + text)
    elif change == "empty":
        path.write_bytes(b"")
    elif change == "array":
        path.write_text("[]")
    elif change == "null":
        path.write_text("null")
    elif change == "dir":
        path.mkdir()
    elif change == "link-out":
        os.symlink(world["outside"] / "secret", path)
    elif change == "zero":
        os.symlink("/dev/zero", path)
    elif change == "fifo":
        os.mkfifo(path)
    elif change == "nan-token":
        path.write_bytes(text.replace(b'"alpha": 0.0', b'"alpha": NaN', 1))
    else:
        path.write_bytes(text.replace(b'"alpha": 0.0', b'"alpha": 1e999', 1))
    return True


def _artifact(bundle: Path, rng: random.Random) -> Path:
    return bundle / rng.choice(["level_alpha_0.0000.onnx", "level_alpha_0.5000.onnx", "alpha_weights.onnx",
                                "alpha_predict.onnx", "alpha_input.onnx"])


def t_artifact(world: dict, bundle: Path, rng: random.Random) -> bool:
    path = _regular(_artifact(bundle, rng))
    change = rng.choice(["link-out", "zero", "link-in", "fifo", "dir", "gone", "truncate", "flip", "grow"])
    if change in ("truncate", "flip", "grow"):
        data = bytearray(path.read_bytes())
        if change == "truncate":
            data = data[: len(data) // 2]
        elif change == "flip":
            data[rng.randrange(len(data))] ^= 0x40
        else:
            data += b"\0"
        path.write_bytes(bytes(data))
        return True
    path.unlink()
    if change == "link-out":
        os.symlink(world["outside"] / "secret", path)
    elif change == "zero":
        os.symlink("/dev/zero", path)
    elif change == "link-in":
        os.symlink(MANIFEST_NAME, path)
    elif change == "fifo":
        os.mkfifo(path)
    elif change == "dir":
        path.mkdir()
    return True


def t_package(world: dict, bundle: Path, rng: random.Random) -> bool:
    data = bundle / PACKAGE / "Data" / "com.apple.CoreML"
    change = rng.choice(["weight-link", "weight-zero", "data-link", "extra", "fifo", "gone", "package-link"])
    if change == "weight-link":
        (data / "weights" / "weight.bin").unlink()
        os.symlink(world["outside"] / "dir" / "weight.bin", data / "weights" / "weight.bin")
    elif change == "weight-zero":
        (data / "weights" / "weight.bin").unlink()
        os.symlink("/dev/zero", data / "weights" / "weight.bin")
    elif change == "data-link":
        shutil.rmtree(data / "weights")
        os.symlink(world["outside"] / "dir", data / "weights")
    elif change == "extra":
        (data / "extra.json").write_text("{}")
    elif change == "fifo":
        os.mkfifo(data / "pipe")
    elif change == "gone":
        shutil.rmtree(bundle / PACKAGE)
    else:
        shutil.rmtree(bundle / PACKAGE)
        os.symlink(world["outside"] / "dir", bundle / PACKAGE)
    return True


def t_harmless(world: dict, bundle: Path, rng: random.Random) -> bool:
    change = rng.choice(["extra", "extra-dir", "unreadable"])
    if change == "extra":
        (bundle / "notes.txt").write_text("mine")
    elif change == "extra-dir":
        (bundle / "more").mkdir()
        os.symlink(world["outside"] / "secret", bundle / "more" / "unlisted-link")
    else:
        # As root this still reads; as a user it is one "cannot be opened" line, exit 1.
        os.chmod(_regular(_artifact(bundle, rng)), 0)
    return False


TREE_MUTATIONS = [t_manifest_file, t_artifact, t_package, t_harmless]


#: For validate: mutations that keep the files intact, so that the artifacts get loaded and run.
RUNNING_MUTATIONS = [m_kind, m_offsets, m_leaf]


def _mutate(world: dict, bundle: Path, rng: random.Random, manifest_mutations: list = MANIFEST_MUTATIONS,
            tree_mutations: list = TREE_MUTATIONS) -> tuple[list[str], bool]:
    """Apply one or two mutations; returns their names and whether the bundle must fail."""
    names, must_fail = [], False
    for _ in range(rng.choice([1, 1, 2])):
        if rng.random() < 0.6:
            mutation = rng.choice(manifest_mutations)
            path = bundle / MANIFEST_NAME
            if not path.is_file() or path.is_symlink():
                continue
            try:
                manifest = json.loads(path.read_text())
            except ValueError:
                continue
            if not isinstance(manifest, dict) or not manifest.get("artifacts"):
                continue
            try:
                fails = mutation(manifest, world, bundle, rng)
            except (KeyError, TypeError, StopIteration, ValueError, IndexError, AttributeError, OSError):
                continue  # an earlier mutation removed what this one edits
            text = json.dumps(manifest).replace(json.dumps(DEEP_MARKER), "[" * 3000 + "0" + "]" * 3000)
            path.write_text(text)
        else:
            mutation = rng.choice(tree_mutations)
            try:
                fails = mutation(world, bundle, rng)
            except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError):
                continue
        names.append(mutation.__name__)
        must_fail = must_fail or fails
    return names, must_fail


def _check(result: Any, must_fail: bool, what: str) -> None:
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, f"{what}: {everything[-3000:]}"
    assert result.code in ((1, 2) if must_fail else (0, 1, 2)), f"{what}: exit {result.code} {result.stderr}"
    expected_lines = 0 if result.code == 0 else 1
    assert len(result.error_lines) == expected_lines, f"{what}: {result.stderr!r}"


def _no_outside_opens(world: dict, what: str) -> None:
    assert world["watch"].events() == 0, f"{what}: a file outside the bundle was opened (inotify)"
    outside = str(world["outside"])
    bad = [p for p in _audit_seen if p.startswith(outside) or p in ("/dev/zero", "/etc/passwd")]
    assert not bad, f"{what}: opened {bad}"


def _bundle_cases(world: dict, tmp_path: Path, command: str, template: str, count: int, seed: int,
                  mutations: tuple[list, list] = (MANIFEST_MUTATIONS, TREE_MUTATIONS)) -> dict[int, int]:
    """Run ``count`` mutated cases; returns how many ended with each exit code."""
    rng = random.Random(seed)
    codes: dict[int, int] = {}
    for index in range(count):
        bundle = copy_bundle(world[template], tmp_path / f"{command}-{index}")
        names, must_fail = _mutate(world, bundle, rng, *mutations)
        skip = (MANIFEST_NAME, PARITY_NAME) if command == "validate" else ()
        before = tree_state(bundle, skip=skip)
        world["watch"].events()
        _audit_seen.clear()
        _audit_on[0] = True
        try:
            arguments = [command, bundle] + (["--samples", "12"] if command == "validate" else [])
            result = run_cli(*arguments)
        finally:
            _audit_on[0] = False
        what = f"{command} case {index} {names}"
        _check(result, must_fail, what)
        _no_outside_opens(world, what)
        assert tree_state(bundle, skip=skip) == before, f"{what}: the bundle was modified"
        codes[result.code] = codes.get(result.code, 0) + 1
        shutil.rmtree(bundle, ignore_errors=True)
        if os.path.lexists(bundle):
            os.unlink(bundle)
    return codes


def test_fuzz_inspect_on_mutated_bundles(world: dict, tmp_path: Path) -> None:
    started = time.monotonic()
    codes = _bundle_cases(world, tmp_path, "inspect", "package", INSPECT_CASES, SEED)
    print(f"\nfuzz inspect: {INSPECT_CASES} cases in {time.monotonic() - started:.1f} s, exit codes {codes}")


def test_fuzz_validate_on_mutated_bundles(world: dict, tmp_path: Path) -> None:
    started = time.monotonic()
    codes = _bundle_cases(world, tmp_path, "validate", "plain", VALIDATE_CASES, SEED + 1,
                          (RUNNING_MUTATIONS, [t_harmless]))
    print(f"\nfuzz validate: {VALIDATE_CASES} cases in {time.monotonic() - started:.1f} s, exit codes {codes}")


# --- command lines -------------------------------------------------------------------------

BAD_OPTIONS = [
    ["--opset", "99"], ["--opset", "3"], ["--opset", "abc"], ["--opset", "-1"], ["--opset", "1e3"],
    ["--option", "opset=abc"], ["--option", "opset=18.5"], ["--option", "opset=NaN"], ["--option", "=x"],
    ["--option", "novalue"], ["--option", "single_graph=maybe"], ["--max-logit-diff", "inf"],
    ["--max-logit-diff", "nan"], ["--max-logit-diff", "-1"], ["--min-agreement", "nan"], ["--min-agreement", "2"],
    ["--min-agreement-quantized", "-0.5"], ["--max-accuracy-drop", "inf"], ["--float-error-factor", "inf"],
    ["--float-error-factor", "-2"], ["--samples", "0"],
    ["--samples", "abc"], ["--sample-inputs", "-1"], ["--levels", ""], ["--levels", "nan"], ["--levels", "inf"],
    ["--levels", "0,,1"], ["--levels", "2"], ["--levels", "0.5,0.2"], ["--levels", "x"], ["--data", "/nope"],
    ["--no-such-flag"], ["--levels"],
]


def _output(world: dict, case: Path, rng: random.Random) -> tuple[Path, bool]:
    """An output path (sometimes itself the bad input), and whether it is bad on its own."""
    choice = rng.choice(["new", "new", "new", "under-file", "proc", "user-dir", "bundle-no-force"])
    (case / "file").write_text("x")
    if choice == "under-file":
        return case / "file" / "out", True
    if choice == "proc":
        return Path("/proc/self/lcs-out"), True
    if choice == "user-dir":
        (case / "mine").mkdir()
        (case / "mine" / "photo.jpg").write_bytes(b"precious")
        return case / "mine", True
    if choice == "bundle-no-force":
        return copy_bundle(world["plain"], case / "old"), True
    return case / "out", False


def test_fuzz_export_command_lines(world: dict, tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    started = time.monotonic()
    for index in range(OPTION_CASES):
        case = tmp_path / f"options-{index}"
        case.mkdir()
        output, bad_output = _output(world, case, rng)
        extra = [item for option in rng.sample(BAD_OPTIONS, rng.choice([1, 1, 2, 3])) for item in option]
        if not bad_output and not any(o in extra for o in ("--levels",)):
            extra = ["--levels", "0", *extra]
        checkpoint = world["checkpoint"]
        if rng.random() < 0.2:  # a checkpoint that cannot be one; a FIFO would block a reader
            os.mkfifo(case / "fifo")
            checkpoint = rng.choice([case, case / "fifo", Path("/dev/zero"), case / "missing.safetensors"])
        before_case = tree_state(case)
        before_output = tree_state(output)
        result = run_cli("onnx", checkpoint, "-o", output, *extra)
        what = f"options case {index}: {checkpoint} -o {output} {extra}"
        assert result.code == 2, f"{what}: exit {result.code} {result.stderr}"
        _check(result, True, what)
        assert tree_state(case) == before_case, f"{what}: something was written"
        assert tree_state(output) == before_output, what
    print(f"\nfuzz command lines: {OPTION_CASES} cases in {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("change", ["offset_shift", "kind_swap"])
def test_an_artifact_that_cannot_run_is_a_failed_check_not_a_crash(world: dict, tmp_path: Path, change: str) -> None:
    """Edits no schema or consistency check can see: the constant table moved by one byte
    (each range still inside the file), or an alpha graph declared as another kind."""
    bundle = copy_bundle(world["plain"], tmp_path / "bundle")
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    if change == "offset_shift":
        predict = next(a for a in manifest["artifacts"] if a["kind"] == "alpha_predict")
        predict["details"]["constant_offsets"][0]["offset"] += 1
        expected = "where the predict graph does not hold that initializer"
    else:
        next(a for a in manifest["artifacts"] if a["kind"] == "alpha_input")["kind"] = "multifunction"
        expected = "cannot load artifact kind 'multifunction'"
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert run_cli("inspect", bundle).code == 0  # nothing inspect can know without running it
    result = run_cli("validate", bundle, "--samples", "12", "--json")  # tables go to stderr with --json
    assert result.code == 1 and "Traceback" not in result.stderr
    assert result.error_lines[-1].startswith("parity failed:")
    failures = [f for r in json.loads(result.stdout)["reports"] for f in r["failures"]]
    assert any(expected in failure for failure in failures), failures
