"""Fuzzing lcs-train with hostile checkpoints and options: a seeded generator, a bounded count.

For every generated case: exit 1 or 2, exactly one line on stderr, no traceback, and nothing
written at the output (no report, no temporary, no lock file; a checkpoint given to
``--resume`` stays byte for byte what it was). Option cases are built to be invalid and must
be refused during validation, before any training (a stub makes reaching training fail the
test), so they take milliseconds.

Checkpoint mutations, each with the sha256 recomputed as an attacker would unless the case
is about the digest itself: JSON types swapped at every checked field, impossible values,
missing fields, NaN / Infinity, non-object metadata, deep nesting, truncation, flipped bytes,
NaN / inf in tensors, tensors of another dtype or shape, tensors missing or extra.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save as serialize

import lcs_train.cli as cli_module
from lcs_train.checkpoint import METADATA_KEY, content_digest
from train_helpers import CliResult, read_checkpoint_raw, run_cli

SEED = 20261129
CHECKPOINT_CASES = 400
RESUME_EVERY = 8  # one case in this many is also given to --resume (it loads the dataset first)
OPTION_CASES = 800

# Fields whose content is free text or bookkeeping no code relies on: not type-checked.
FREE_FIELDS = ("training", "alpha.line_position", "alpha.meaning", "alpha.levels", "input.name", "input.formula",
               "data.split_seed", "data.train_size", "data.held_out_size")


def _json_class(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "list", dict: "dict", type(None): "null"}[type(value)]


# Replacements of another JSON type; numbers are out of every checked range.
OTHER_TYPES = ["x", "", 7, -1.5, 10**30, True, False, None, [], [1, 2], {}, {"a": 1}]


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path inside ``value`` (containers and leaves) that validation must type-check."""
    dotted = ".".join(str(p) for p in path if not isinstance(p, int))
    if path and (dotted.startswith(FREE_FIELDS) or dotted == "content_sha256"):
        return
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _put(data: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


IMPOSSIBLE = {
    ("model", "arguments", "num_classes"): [0, 1, 9, 11, 10**9, -10],
    ("model", "arguments", "in_channels"): [0, 3, 65, 10**6],
    ("model", "name"): ["resnet999", ""],
    ("input", "shape"): [[1, 1, 8], [1, 1, 8, 8, 8], [2, 1, 8, 8], [1, 3, 8, 8], [1, 1, 0, 8], [1, 1, 10**7, 8], [1, 1, 16, 16]],
    ("input", "mean"): [[], [0.1, 0.2]],
    ("input", "std"): [[0.0], [-1.0], [0.1, 0.1]],
    ("input", "pixel_scale"): [0, -1],
    ("input", "dtype"): ["float16"],
    ("input", "layout"): ["NHWC"],
    ("format_version",): [0, 3, 10**20, -1],
    ("format",): ["lcs-bundle"],
    ("alpha", "max"): [0, 1.5, -0.5, 0.5],
    ("alpha", "min"): [0.1, -0.1],
    ("alpha", "fixed"): [1.5, -0.1, 0.97],
    ("alpha", "discrete"): [[0.0, 1.0], [0.5], [2.0, 3.0]],
    ("method", "name"): ["lowrank", "structured", "quantized"],
    ("method", "max_sparsity"): [0, 1.5, -1, 0.5],
    ("classes",): [[], ["0"], [str(i) for i in range(11)], [str(i) for i in range(9)]],
    ("shape",): ["plane", "line"],
    ("norm",): ["batch", "instance"],
    ("data", "dataset"): ["imagenet", "mnist", "cifar10"],
    ("epoch",): [-1],
    ("history", 0, "epoch"): [0, -1],
    ("history", 0, "seconds"): [-1],
    ("history", 0, "accuracy", "0"): [1.5, -0.1],
    ("content_sha256",): ["", "abc", "G" * 64],
}


class CheckpointFuzzer:
    """Seeded mutations of one real checkpoint, each returning the bytes of a hostile file."""

    def __init__(self, source: Path, rng: random.Random) -> None:
        self.raw = source.read_bytes()
        self.metadata, self.tensors = read_checkpoint_raw(source)
        self.rng = rng
        self.model_tensors = sorted(k for k in self.tensors if k.startswith("model."))
        self.float_tensors = sorted(k for k in self.tensors if self.tensors[k].is_floating_point() and self.tensors[k].numel())
        self.paths = list(_leaves(self.metadata))
        header = int.from_bytes(self.raw[:8], "little")
        # Flip only bytes that carry meaning: not the header's trailing padding spaces.
        self.flip_ranges = [(0, 8 + len(self.raw[8:8 + header].rstrip())), (8 + header, len(self.raw))]

    def _pack(self, metadata: Any, tensors: dict[str, torch.Tensor], recompute: bool = True, text: str | None = None) -> bytes:
        if recompute and isinstance(metadata, dict):
            metadata["content_sha256"] = content_digest(tensors, metadata)
        text = text if text is not None else json.dumps(metadata)
        return serialize({k: v.contiguous() for k, v in tensors.items()}, metadata={METADATA_KEY: text})

    def _copy(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return json.loads(json.dumps(self.metadata)), dict(self.tensors)

    def swap_type(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        path = self.rng.choice(self.paths)
        current = _json_class(_get(metadata, path))
        value = self.rng.choice([v for v in OTHER_TYPES if _json_class(v) != current])
        _put(metadata, path, value)
        return f"type {path}={value!r}", self._pack(metadata, tensors)

    def impossible_value(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        path = self.rng.choice(sorted(IMPOSSIBLE, key=str))
        value = self.rng.choice(IMPOSSIBLE[path])
        _put(metadata, path, value)
        return f"value {path}={value!r}", self._pack(metadata, tensors, recompute=path != ("content_sha256",))

    def missing_field(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        path = self.rng.choice([p for p in self.paths if isinstance(p[-1], str) and len(p) <= 3 and p[0] not in ("versions", "history")])
        del _get(metadata, path[:-1])[path[-1]]
        return f"missing {path}", self._pack(metadata, tensors)

    def non_finite(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        numbers = [p for p in self.paths if _json_class(_get(metadata, p)) == "number"] + [("training", "lr")]
        path = self.rng.choice(numbers)
        _put(metadata, path, self.rng.choice([math.nan, math.inf, -math.inf]))
        metadata["content_sha256"] = content_digest(tensors, metadata)
        return f"non-finite {path}", self._pack(metadata, tensors, recompute=False, text=json.dumps(metadata))

    def not_an_object(self) -> tuple[str, bytes]:
        text = self.rng.choice(['[]', '"lcs"', '7', 'null', '[' * 50_000 + ']' * 50_000, '{"a":' * 30_000 + '1' + '}' * 30_000, '{', ''])
        return f"metadata {text[:12]!r}", self._pack(None, dict(self.tensors), recompute=False, text=text)

    def stale_digest(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        metadata["history"][0]["loss"] = metadata["history"][0]["loss"] + 1.0
        return "edit without digest", self._pack(metadata, tensors, recompute=False)

    def truncate(self) -> tuple[str, bytes]:
        cut = self.rng.randrange(0, len(self.raw))
        return f"truncated at {cut}", self.raw[:cut]

    def flip(self) -> tuple[str, bytes]:
        data = bytearray(self.raw)
        start, end = self.rng.choice(self.flip_ranges)
        position = self.rng.randrange(start, end)
        data[position] ^= self.rng.randrange(1, 256)
        return f"flip at {position}", bytes(data)

    def tensor_value(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        name = self.rng.choice(self.float_tensors)
        tensor = tensors[name].clone()
        tensor.view(-1)[self.rng.randrange(tensor.numel())] = self.rng.choice([math.nan, math.inf, -math.inf])
        tensors[name] = tensor
        return f"non-finite in {name}", self._pack(metadata, tensors)

    def tensor_dtype(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        name = self.rng.choice(self.model_tensors)
        dtype = self.rng.choice([d for d in (torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.uint8) if d != tensors[name].dtype])
        tensors[name] = tensors[name].to(dtype)
        return f"{name} as {dtype}", self._pack(metadata, tensors)

    def tensor_shape(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        name = self.rng.choice(self.model_tensors)
        tensor = tensors[name]
        choice = self.rng.choice(["unsqueeze", "slice", "grow"])
        if choice == "unsqueeze" or tensor.dim() == 0 or tensor.shape[0] < 2:
            tensors[name] = tensor.unsqueeze(0).clone()
        elif choice == "slice":
            tensors[name] = tensor[: tensor.shape[0] - 1].clone()
        else:
            tensors[name] = torch.cat([tensor, tensor[:1]])
        return f"{name} reshaped ({choice})", self._pack(metadata, tensors)

    def tensor_set(self) -> tuple[str, bytes]:
        metadata, tensors = self._copy()
        if self.rng.random() < 0.5:
            name = self.rng.choice(self.model_tensors)
            del tensors[name]
            return f"without {name}", self._pack(metadata, tensors)
        tensors["model.extra.weight"] = torch.zeros(3)
        return "extra tensor", self._pack(metadata, tensors)

    def cases(self, count: int) -> Iterator[tuple[str, bytes]]:
        kinds = [self.swap_type, self.swap_type, self.impossible_value, self.impossible_value, self.missing_field,
                 self.non_finite, self.not_an_object, self.stale_digest, self.truncate, self.flip, self.flip,
                 self.tensor_value, self.tensor_dtype, self.tensor_shape, self.tensor_set]
        for _ in range(count):
            yield self.rng.choice(kinds)()


def _check(result: CliResult, case: str) -> int:
    assert result.code in (1, 2), (case, result.code, result.stdout[-1500:], result.stderr[-1500:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (case, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, case
    return result.code


@pytest.fixture()
def training_forbidden(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts and forbids reaching past validation: --resume cases may build a Trainer (it
    loads the checkpoint), option cases may not."""
    reached = []
    real = cli_module.Trainer

    def guarded(config: Any, output: Any, resume: bool = False) -> Any:
        reached.append(1)
        if not resume:
            raise AssertionError("an invalid option reached training")
        trainer = real(config, output, resume=resume)
        raise AssertionError(f"a hostile checkpoint was resumed: {output}")

    monkeypatch.setattr(cli_module, "Trainer", guarded)
    return reached


@pytest.mark.xdist_group("trained")  # mutates a trained run's history: the trained fixture
def test_fuzz_hostile_checkpoints(
    trained_checkpoint: Callable[[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    training_forbidden: list[int],
) -> None:
    fuzzer = CheckpointFuzzer(trained_checkpoint("unstructured", "point"), random.Random(SEED))
    started, codes = time.perf_counter(), Counter()
    for index, (case, data) in enumerate(fuzzer.cases(CHECKPOINT_CASES)):
        directory = tmp_path / f"case{index}"
        directory.mkdir()
        hostile = directory / "subspace.safetensors"
        hostile.write_bytes(data)
        report = directory / "report.json"
        codes[_check(run_cli(capsys, "eval", str(hostile), "--alphas", "0,0.5", "--out", str(report)), case)] += 1
        if index % RESUME_EVERY == 0:
            result = run_cli(capsys, "--model", "cpreresnet11", "--dataset", "digits", "--shape", "point",
                             "--epochs", "3", "--out", str(hostile), "--resume", "--no-evaluate")
            _check(result, f"--resume {case}")
        assert hostile.read_bytes() == data, case
        assert sorted(p.name for p in directory.iterdir()) == ["subspace.safetensors"], case
        shutil.rmtree(directory)
    print(f"\n{CHECKPOINT_CASES} hostile checkpoints (+{CHECKPOINT_CASES // RESUME_EVERY} via --resume) "
          f"in {time.perf_counter() - started:.1f} s, exit codes {dict(codes)}")


# --- options ------------------------------------------------------------------------------------

# option: (values that are valid with any other valid option, values that are always invalid)
TRAIN_OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    "--model": (["cpreresnet11"], ["resnet", "", "CPRERESNET11"]),
    "--method": (["unstructured", "structured"], ["", "lowrank", "Unstructured"]),
    "--shape": (["line", "point"], ["plane", ""]),
    "--dataset": (["digits"], ["imagenet", "", "cifar100"]),
    "--recipe": (["quick", "paper"], ["fast", ""]),
    "--epochs": (["1", "3"], ["0", "-1", "1.5", "abc", "", "1e3"]),
    "--batch-size": (["32", "64"], ["0", "-3", "x", "2.5"]),
    "--lr": (["0.1", "1e-3"], ["0", "-0.1", "nan", "inf", "-inf", "abc", "", "1e400"]),
    "--momentum": (["0", "0.9"], ["-0.1", "1", "1.5", "nan", "inf"]),
    "--weight-decay": (["0", "5e-4"], ["-1e-4", "nan", "inf", "-inf"]),
    "--warmup-epochs": (["0", "1"], ["-1", "0.5", "x"]),
    "--compression-warmup": (["0", "0.8", "1"], ["-0.1", "1.01", "nan", "inf"]),
    "--beta": (["0", "1"], ["-1", "nan", "inf"]),
    "--augment-shift": (["0", "2"], ["-1", "x", "1.5"]),
    "--label-smoothing": (["0", "0.1"], ["1", "2", "-0.1", "nan", "inf"]),
    "--max-alpha": (["0.5", "0.7"], ["0", "1.5", "-1", "nan", "inf", "-0"]),
    "--fixed-alpha": (["0.5"], ["-0.1", "1.5", "nan", "inf", "-inf"]),
    "--seed": (["0", "42"], ["-1", str(2**33), "x", "1.5"]),
    "--device": (["cpu", "auto"], ["tpu", "cuda:x", "gpu", "", "cpu:0"]),
    "--threads": (["1", "2"], ["0", "-1", "100000", "x"]),
    "--data-dir": ([], ["/tmp"]),
}


def _option_cases(rng: random.Random, sandbox: Path, checkpoint: Path) -> Iterator[list[str]]:
    a_file = sandbox / "a-file"
    bad_outputs = [str(sandbox), str(a_file / "x.safetensors"), "/proc/lcs-fuzz/x.safetensors", "/proc/x.safetensors"]
    bad_checkpoints = [str(sandbox / "missing.safetensors"), str(sandbox), str(a_file), "/dev/null", "/dev/zero",
                       "/proc/self/status", str(sandbox / "empty.safetensors")]
    bad_alphas = ["", ",", "nan", "inf", "-0.1", "1.5", "0,abc", "1e400", "0.5;0.7", "0.99"]
    while True:
        if rng.random() < 0.7:
            names = rng.sample(sorted(TRAIN_OPTIONS), rng.randint(1, 5))
            invalid = rng.sample(names, rng.randint(1, min(2, len(names))))
            invalid = [n for n in invalid if TRAIN_OPTIONS[n][1]] or ["--epochs"]
            args = []
            for name in names:
                valid, wrong = TRAIN_OPTIONS[name]
                if name in invalid or not valid:
                    args += [name, rng.choice(wrong)]
                else:
                    args += [name, rng.choice(valid)]
            extra = rng.random()
            if extra < 0.15:
                args += ["--out", rng.choice(bad_outputs)]
            elif extra < 0.25:
                args += [rng.choice(["--bogus", "--epoch", "-x", "train", "--resume=3"])]
            else:
                args += ["--out", str(sandbox / "out" / "x.safetensors")]
            yield args
        else:
            checkpoint_arg = rng.choice([*bad_checkpoints, str(checkpoint)])
            args = ["eval", checkpoint_arg]
            broken = checkpoint_arg != str(checkpoint)
            if rng.random() < 0.6 or not broken:
                alphas = rng.choice(bad_alphas) if (rng.random() < 0.7 or not broken) else "0,0.5"
                broken = broken or alphas != "0,0.5"
                args += ["--alphas", alphas]
            if rng.random() < 0.3:
                args += ["--out", rng.choice(bad_outputs).replace(".safetensors", ".json")]
                broken = True
            else:
                args += ["--out", str(sandbox / "out" / "report.json")]
            if rng.random() < 0.2:
                args += ["--baseline", rng.choice(bad_checkpoints)]
                broken = True
            if rng.random() < 0.1:
                args += ["--bogus"]
                broken = True
            if broken:
                yield args


def test_fuzz_invalid_options_are_refused_before_training(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    training_forbidden: list[int],
) -> None:
    checkpoint = subspace_checkpoint("unstructured", "point")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "a-file").write_text("x")
    (sandbox / "empty.safetensors").write_bytes(b"")
    before = sorted(p.name for p in sandbox.iterdir())
    checkpoint_bytes = checkpoint.read_bytes()
    rng = random.Random(SEED)
    started = time.perf_counter()
    cases = _option_cases(rng, sandbox, checkpoint)
    for _ in range(OPTION_CASES):
        args = next(cases)
        _check(run_cli(capsys, *args), " ".join(args))
        assert sorted(p.name for p in sandbox.iterdir()) == before, args
    assert training_forbidden == []
    assert checkpoint.read_bytes() == checkpoint_bytes
    print(f"\n{OPTION_CASES} invalid option sets in {time.perf_counter() - started:.1f} s")
