"""The bundle manifest: building it, and reading / writing it against the JSON Schema.

The schema (``lcs_export/schemas/manifest.schema.json``, draft 2020-12) is the contract with
the sample apps; every read and every write is checked against it, so a manifest that
Python accepts is one the apps can rely on.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from lcs_export.bundle import BUNDLE_FORMAT, MANIFEST_NAME, FileFacts, file_facts, write_json_atomic
from lcs_train.errors import LcsError

MANIFEST_VERSION = 1
#: What an app should accept between its logits and the recorded sample logits.
SAMPLE_TOLERANCE = 1e-3
ALPHA_INPUT_KINDS = ("alpha_input", "alpha_weights")


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The manifest JSON Schema shipped inside the package."""
    text = resources.files("lcs_export").joinpath("schemas/manifest.schema.json").read_text()
    return json.loads(text)


def validate_manifest(manifest: dict[str, Any], source: str = MANIFEST_NAME) -> None:
    """Raise ``LcsError`` naming the first schema violation (with its JSON path)."""
    validator = jsonschema.Draft202012Validator(manifest_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise LcsError(
            f"{source} does not match the lcs bundle schema at {where}: {error.message}",
            "re-export the bundle with this version of lcs-export",
        )


def read_manifest(directory: Path) -> dict[str, Any]:
    """Load and schema-check ``directory/manifest.json``."""
    path = Path(directory) / MANIFEST_NAME
    if not Path(directory).is_dir():
        raise LcsError(f"bundle directory {directory} does not exist", "give the directory lcs-export wrote (its -o/--out)")
    if not path.is_file():
        raise LcsError(f"{directory} is not an lcs bundle (no {MANIFEST_NAME})", "give the directory lcs-export wrote")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as error:
        raise LcsError(f"{path} is not valid JSON ({error})", "re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise LcsError(f"{path} is not an lcs bundle manifest", "give the directory lcs-export wrote")
    if manifest.get("manifest_version", 0) > MANIFEST_VERSION:
        raise LcsError(
            f"{path} has manifest version {manifest['manifest_version']}, newer than this lcs-export understands",
            "upgrade lcs",
        )
    validate_manifest(manifest, str(path))
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
        "data": {"dataset": metadata["data"]["dataset"], "data_dir": metadata["data"].get("data_dir")},
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
                   "are clamped in the graph" + ("; bits = round(high - (high - low) * alpha)" if alpha.get("discrete") else ""),
    }


def artifact_usage(kind: str, details: dict[str, Any]) -> str | None:
    """How a host uses an artifact: the target's own words when it gave them."""
    for key in ("usage", "how_to_use", "note"):
        if isinstance(details.get(key), str):
            return details[key]
    defaults = {
        "level": "run it as a plain classifier: input image -> logits",
        "multifunction": "load the function named for the level you want (see details) and run it",
        "alpha_input": "feed alpha (float32 [1]) with every image; switching level is changing that input",
        "alpha_weights": "switch-once companion: run it once per level switch with alpha (float32 [1]) "
                         "to compute the weights, then feed them to the inference graph with every image",
    }
    return defaults.get(kind)


def artifact_entry(directory: Path, artifact: Any) -> dict[str, Any]:
    """A ``targets.base.Artifact`` written into ``directory`` as a manifest entry."""
    facts: FileFacts = file_facts(Path(directory) / artifact.path)
    return {
        "path": artifact.path, "kind": artifact.kind, "alphas": [float(a) for a in artifact.alphas],
        "bytes": facts.bytes, "gzip_bytes": facts.gzip_bytes, "sha256": facts.sha256,
        "details": _jsonable(artifact.details), "usage": artifact_usage(artifact.kind, artifact.details),
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
