"""The bundle manifest: building it, and reading / writing it against the JSON Schema.

The schema (``lcs_export/schemas/manifest.schema.json``, draft 2020-12) is the contract with
the sample apps; every read and every write is checked against it, so a manifest that
Python accepts is one the apps can rely on.
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from lcs_export.bundle import BUNDLE_FORMAT, MANIFEST_NAME, FileFacts, file_facts, read_bundle_file
from lcs_train.errors import LcsError
from lcs_train.files import write_json_atomic
from targets.onnx.offsets import check_constant_offsets

#: Version 2 gave the switch-once inference graph its own kind, ``alpha_predict`` (version 1
#: listed it as ``alpha_input`` although it takes no alpha). Version 1 manifests are still
#: read: ``read_manifest`` upgrades them in memory (see ``upgrade_manifest``).
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: What an app should accept between its logits and the recorded sample logits.
SAMPLE_TOLERANCE = 1e-3
#: Kinds whose artifact serves any alpha in the trained range (checked over a sweep of alphas).
ALPHA_INPUT_KINDS = ("alpha_input", "alpha_weights", "alpha_predict")
#: Deepest JSON nesting a manifest may have (lcs-export writes about 8).
MAX_DEPTH = 64
#: Largest integer magnitude accepted anywhere in a manifest (int64, what every app reads).
MAX_INTEGER = 2**63 - 1


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The manifest JSON Schema shipped inside the package."""
    text = resources.files("lcs_export").joinpath("schemas/manifest.schema.json").read_text()
    return json.loads(text)


def _manifest_error(source: str, problem: str) -> LcsError:
    return LcsError(f"{source} {problem}", "re-export the bundle with this version of lcs-export")


def validate_manifest(manifest: dict[str, Any], source: str = MANIFEST_NAME) -> None:
    """Raise ``LcsError`` naming the first schema violation (with its JSON path), or the first
    inconsistency the schema cannot express (see ``check_consistency``)."""
    check_schema(manifest, source)
    check_consistency(manifest, source)


def check_schema(manifest: dict[str, Any], source: str = MANIFEST_NAME) -> None:
    """Raise ``LcsError`` naming the first schema violation (with its JSON path)."""
    check_values(manifest, source)
    validator = jsonschema.Draft202012Validator(manifest_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        raise LcsError(
            f"{source} does not match the lcs bundle schema at {where}: {message}",
            "re-export the bundle with this version of lcs-export",
        )


def check_values(value: Any, source: str, where: str = "", depth: int = 0) -> None:
    """Refuse what JSON allows but no consumer can use: NaN and infinities, integers beyond
    int64, and nesting deeper than ``MAX_DEPTH`` (each would crash some reader)."""
    if depth > MAX_DEPTH:
        shown = where if len(where) <= 60 else where[:60] + "..."
        raise _manifest_error(source, f"is nested deeper than {MAX_DEPTH} levels (at {shown})")
    if isinstance(value, dict):
        for key, item in value.items():
            check_values(item, source, f"{where}/{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_values(item, source, f"{where}/{index}", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _manifest_error(source, f"holds {value} at {where or 'top level'}; only finite numbers are allowed")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        raise _manifest_error(source, f"holds an integer beyond int64 at {where or 'top level'}")


def check_consistency(manifest: dict[str, Any], source: str = MANIFEST_NAME) -> None:
    """What the schema cannot say: unique artifact paths, levels served by a level artifact of
    the same file facts, the switch-once pair naming each other, and constant offsets that
    lie inside the predict file without overlapping."""
    artifacts = {}
    for index, entry in enumerate(manifest["artifacts"]):
        if entry["path"] in artifacts:
            raise _manifest_error(source, f"lists {entry['path']!r} twice (artifacts/{index})")
        artifacts[entry["path"]] = entry
        if entry["kind"] == "level" and len(entry["alphas"]) != 1:
            raise _manifest_error(source, f"gives level artifact {entry['path']!r} {len(entry['alphas'])} alphas, not 1")
    for index, level in enumerate(manifest["levels"]):
        serving = artifacts.get(level["path"])
        if serving is None or serving["kind"] not in ("level", "multifunction"):
            raise _manifest_error(source, f"has level {index} served by {level['path']!r}, which is not a level artifact")
        if not any(abs(level["alpha"] - alpha) < 1e-9 for alpha in serving["alphas"]):
            raise _manifest_error(source, f"has level alpha {level['alpha']:g}, which {level['path']!r} does not serve")
        if (level["sha256"], level["bytes"]) != (serving["sha256"], serving["bytes"]):
            raise _manifest_error(source, f"has level {index} whose sha256 or size differs from artifact {level['path']!r}")
    for entry in manifest["artifacts"]:
        if entry["kind"] == "alpha_weights":
            _check_pair(entry, artifacts, "predict_path", "alpha_predict", source)
        elif entry["kind"] == "alpha_predict":
            _check_pair(entry, artifacts, "weights_path", "alpha_weights", source)
            check_constant_offsets(entry["details"].get("constant_offsets"), entry["bytes"], f"{source}: {entry['path']}")


def _check_pair(entry: dict[str, Any], artifacts: dict[str, Any], key: str, kind: str, source: str) -> None:
    partner = artifacts.get(entry["details"].get(key))
    if partner is None or partner["kind"] != kind:
        raise _manifest_error(source, f"has {entry['kind']} artifact {entry['path']!r} whose details.{key} "
                                      f"does not name an {kind} artifact of the bundle")


def upgrade_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A version 1 manifest as version 2: the switch-once predict graph gets kind ``alpha_predict``."""
    if manifest.get("manifest_version") == 1:
        for entry in manifest.get("artifacts", []):
            if entry.get("kind") == "alpha_input" and entry.get("details", {}).get("mode") == "switch_once":
                entry["kind"] = "alpha_predict"
        manifest["manifest_version"] = MANIFEST_VERSION
    return manifest


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number lcs accepts")


def parse_manifest(data: bytes, source: str) -> dict[str, Any]:
    """JSON text to a manifest dict, refusing NaN / Infinity and overflowing numbers."""
    try:
        manifest = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise _manifest_error(source, f"is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise LcsError(f"{source} is not valid JSON ({str(error)[:200]})", "re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise LcsError(f"{source} is not an lcs bundle manifest", "give the directory lcs-export wrote")
    version = manifest.get("manifest_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _manifest_error(source, f"has manifest_version {str(version)[:40]!r}, which is not a whole number")
    if version > MANIFEST_VERSION:
        raise LcsError(f"{source} has manifest version {version}, newer than this lcs-export understands",
                       "upgrade lcs")
    if version not in READABLE_VERSIONS:
        raise _manifest_error(source, f"has manifest version {version}, which no lcs-export wrote")
    check_values(manifest, source)
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    """Load, check and (if older) upgrade ``directory/manifest.json``."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    try:
        data = read_bundle_file(directory, MANIFEST_NAME)
    except FileNotFoundError:
        raise LcsError(f"{directory} is not an lcs bundle (no {MANIFEST_NAME})", "give the directory lcs-export wrote") \
            from None
    manifest = parse_manifest(data, str(path))
    check_schema(manifest, str(path))
    manifest = upgrade_manifest(manifest)
    check_consistency(manifest, str(path))
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Schema-check ``manifest`` and write it atomically into ``directory``."""
    validate_manifest(manifest)
    return write_json_atomic(Path(directory) / MANIFEST_NAME, manifest)


def created_by(runtime: str) -> dict[str, str]:
    """Versions of what wrote the bundle."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("lcs", "onnxruntime", "coremltools", "onnx"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown" if package == "lcs" else "absent"
    versions["runtime"] = runtime
    return {k: v for k, v in versions.items() if v != "absent"}


def now() -> str:
    """UTC now, ISO 8601, seconds."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def source_section(checkpoint_path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Where the bundle came from: the checkpoint file and the facts of its subspace."""
    facts = file_facts(checkpoint_path)
    alpha = metadata["alpha"]
    return {
        "checkpoint": {"path": str(Path(checkpoint_path).resolve()), "sha256": facts.sha256, "bytes": facts.bytes},
        "model": metadata["model"],
        "method": metadata["method"],
        "shape": metadata["shape"],
        "alpha": {"min": alpha.get("min", 0.0), "max": alpha["max"], "discrete": alpha.get("discrete")},
        "classes": [str(name) for name in metadata["classes"]],
        "data": {"dataset": metadata["data"]["dataset"], "data_dir": metadata["data"].get("data_dir"),
                 **({"image_size": metadata["data"]["image_size"]} if metadata["data"].get("image_size") else {})},
    }


def input_section(metadata: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's input spec with the batch dimension marked dynamic."""
    spec = dict(metadata["input"])
    spec["shape"] = ["batch", *spec["shape"][1:]]
    return spec


def output_section(metadata: dict[str, Any]) -> dict[str, Any]:
    """Logits, one per class, before softmax."""
    return {"name": "logits", "shape": ["batch", len(metadata["classes"])], "dtype": "float32",
            "meaning": "unnormalised class scores in the order of source.classes"}


def alpha_input_section(metadata: dict[str, Any]) -> dict[str, Any]:
    """The convention every alpha-input artifact follows."""
    alpha = metadata["alpha"]
    return {
        "name": "alpha", "dtype": "float32", "shape": [1],
        "min": alpha.get("min", 0.0), "max": alpha["max"], "clamped": True,
        "discrete": alpha.get("discrete"),
        "meaning": "0 is the most accurate end, larger is more compressed; values outside [min, max] "
                   "are clamped in the graph, and NaN runs as min" + ("; bits = round(high - (high - low) * alpha)" if alpha.get("discrete") else ""),
    }


def artifact_usage(kind: str, usage: str | None) -> str | None:
    """How a host uses an artifact: the target's own words when it gave them (``Artifact.usage``),
    else what every artifact of that kind is for."""
    if usage:
        return usage
    defaults = {
        "level": "run it as a plain classifier: input image -> logits",
        "multifunction": "load the function named for the level you want (see details) and run it",
        "alpha_input": "feed alpha (float32 [1]) with every image; switching level is changing that input",
        "alpha_weights": "switch-once companion: run it once per level switch with alpha (float32 [1]) "
                         "to compute the weights, then place them into the alpha_predict graph",
        "alpha_predict": "switch-once inference graph: input image -> logits, with the constants the "
                         "alpha_weights graph computed placed into it at each level switch",
    }
    return defaults.get(kind)


def artifact_entry(directory: Path, artifact: Any) -> dict[str, Any]:
    """A ``targets.base.Artifact`` written into ``directory`` as a manifest entry."""
    facts: FileFacts = file_facts(Path(directory) / artifact.path)
    return {
        "path": artifact.path, "kind": artifact.kind, "alphas": [float(a) for a in artifact.alphas],
        "bytes": facts.bytes, "gzip_bytes": facts.gzip_bytes, "sha256": facts.sha256,
        "details": _jsonable(artifact.details), "usage": artifact_usage(artifact.kind, artifact.usage),
        "parity": [],
    }


def level_entries(levels: list[Any], artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per exported level, repeating the facts of the first file that serves it."""
    entries = []
    for level in levels:
        serving = [a for a in artifacts if a["kind"] in ("level", "multifunction")
                   and any(abs(level.alpha - x) < 1e-9 for x in a["alphas"])]
        if not serving:
            raise RuntimeError(f"the target wrote no artifact for level {level.alpha:g}")
        file = serving[0]
        stats = _jsonable(level.stats)
        entries.append({
            "alpha": float(level.alpha), "compression": _jsonable(level.compression),
            "parameters": int(stats.get("parameters", 0)), "nonzeros": int(stats.get("nonzeros", 0)),
            "flops": stats.get("flops", 0),
            "stats": {k: v for k, v in stats.items() if k not in ("parameters", "nonzeros", "flops")},
            "path": file["path"], "bytes": file["bytes"], "gzip_bytes": file["gzip_bytes"], "sha256": file["sha256"],
            "parity": [],
        })
    return entries


def samples_section(images: np.ndarray, labels: np.ndarray, logits_by_alpha: dict[float, np.ndarray]) -> dict[str, Any]:
    """A few preprocessed held-out images with PyTorch's logits, for apps to self-test."""
    return {
        "preprocessed": True,
        "images": images.astype(np.float32).tolist(),
        "labels": [int(x) for x in labels],
        "logits": [{"alpha": float(a), "values": np.asarray(v, dtype=np.float32).tolist()}
                   for a, v in sorted(logits_by_alpha.items())],
        "tolerance": SAMPLE_TOLERANCE,
    }


def _jsonable(value: Any) -> Any:
    """Plain JSON types from target details and stats (numpy scalars, tuples, paths)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
