"""The subspace checkpoint: one safetensors file with JSON metadata, never a pickle.

Tensors: the model's state under ``model.``, training state (optimizer momentum) under
``train.``. Metadata key ``lcs`` holds JSON: architecture, method, shape, alpha range,
preprocessing, classes, training config and history, library versions, and a sha256 over
every tensor and the metadata itself, so that a file edited without recomputing it is refused;
the metadata is then validated field by field (``lcs_train.metadata``), since anyone can
recompute a digest. Saves hold the output's lock, go to a temporary file in the same directory,
are fsynced and renamed into place (``lcs_train.files``), so an interrupted save never leaves a
corrupt file and a reader never sees a partial one.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize
from torch import Tensor, nn

from lcs_train.errors import LcsError
from lcs_train.files import atomic_write_bytes, exclusive_output
from lcs_train.metadata import FORMAT, FORMAT_VERSION, format_version_for, reject_non_finite, validate_metadata

METADATA_KEY = "lcs"


@dataclass
class Checkpoint:
    """What a checkpoint file holds, loaded."""

    metadata: dict[str, Any]
    model_state: dict[str, Tensor]
    train_state: dict[str, Tensor] = field(default_factory=dict)
    path: Path | None = None


def library_versions() -> dict[str, str]:
    """Versions of what produced a file, recorded for reproducibility."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        versions["lcs"] = version("lcs")
    except PackageNotFoundError:
        versions["lcs"] = "unknown"
    return versions


def content_digest(tensors: dict[str, Tensor], metadata: dict[str, Any]) -> str:
    """sha256 over the metadata (canonical JSON, without the digest itself) and the names,
    dtypes, shapes and bytes of ``tensors`` in name order: any edit to either is caught."""
    digest = hashlib.sha256()
    described = {k: v for k, v in metadata.items() if k != "content_sha256"}
    digest.update(json.dumps(described, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        # reshape(-1): a 0-dim tensor of a multi-byte dtype cannot be viewed as bytes directly
        # (a hostile file made that crash); the bytes, and so every digest, are unchanged.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path,
    metadata: dict[str, Any],
    model_state: dict[str, Tensor],
    train_state: dict[str, Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename, fsync of the directory),
    holding the output's lock: a second writer of the same file is refused, a reader sees the
    old file or the new one, and an interruption at any point keeps the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    for key, value in (train_state or {}).items():
        tensors[f"train.{key}"] = value.detach().cpu().contiguous()
    full = {**metadata, "format": FORMAT, "format_version": format_version_for(metadata), "versions": library_versions()}
    full["content_sha256"] = content_digest(tensors, full)
    data = serialize(tensors, metadata={METADATA_KEY: json.dumps(full, allow_nan=False)})
    with exclusive_output(path):
        atomic_write_bytes(path, data)
    return path


def load_checkpoint(path: str | Path, with_train_state: bool = False) -> Checkpoint:
    """Read and verify a checkpoint. Every failure is an ``LcsError`` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise LcsError(f"checkpoint {path} is a directory", "give the .safetensors file lcs-train wrote, not its directory")
    if not path.exists():
        raise LcsError(f"checkpoint {path} does not exist", "check the path (lcs-train writes runs/<name>.safetensors)")
    if not path.is_file():
        raise LcsError(f"checkpoint {path} is not a regular file", "give the .safetensors file lcs-train wrote")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise LcsError(
            f"{path} is not a readable safetensors checkpoint ({error})",
            "the file is truncated or not a checkpoint; use an intact file written by lcs-train",
        ) from None
    if raw is None:
        raise LcsError(f"{path} is a safetensors file but not an lcs subspace checkpoint", "pass a file written by lcs-train")
    try:
        metadata = json.loads(raw, parse_constant=reject_non_finite)
    except (ValueError, RecursionError) as error:
        # ValueError covers bad JSON and NaN / Infinity; RecursionError a hostile nesting depth.
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:120]
        raise LcsError(f"{path} has corrupt lcs metadata ({reason})", "use an intact file written by lcs-train") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise LcsError(f"{path} is not an lcs subspace checkpoint", "pass a file written by lcs-train")
    version = metadata.get("format_version")
    if isinstance(version, int | float) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise LcsError(f"{path} was written by a newer lcs (format_version {version:g})", "upgrade lcs")
    try:
        digest = content_digest(tensors, metadata)
    except RecursionError:
        raise LcsError(f"{path} has corrupt lcs metadata (nested too deeply)", "use an intact file written by lcs-train") from None
    if digest != metadata.get("content_sha256"):
        raise LcsError(
            f"{path} failed its integrity check: its tensors or metadata were changed after it was saved",
            "use the checkpoint as lcs-train wrote it, or train again",
        )
    validate_metadata(metadata, tensors, str(path))
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    train_state = (
        {k[len("train."):]: v for k, v in tensors.items() if k.startswith("train.")}
        if with_train_state
        else {}
    )
    return Checkpoint(metadata, model_state, train_state, path)


def load_model_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model``, turning any mismatch into one clear error."""
    check_model_state(model.state_dict(), state, source)
    model.load_state_dict(state)


def check_model_state(expected: dict[str, Tensor], state: dict[str, Tensor], source: str) -> None:
    """Refuse ``state`` unless it has exactly the names, shapes and dtypes of ``expected`` (a
    model's ``state_dict()``, which may live on the meta device)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    common = set(expected) & set(state)
    reshaped = sorted(k for k in common if expected[k].shape != state[k].shape)
    retyped = sorted(k for k in common if expected[k].dtype != state[k].dtype)
    if missing or unexpected or reshaped or retyped:
        kind, detail = next((kind, names[:3]) for kind, names in (
            ("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped), ("of another dtype", retyped),
        ) if names)
        hint = _field_hint(detail[0]) if kind == "of another shape" else ""
        raise LcsError(
            f"{source} does not match the network its metadata describes "
            f"(tensors {kind}: {', '.join(detail)}{hint})",
            "the file was edited or comes from another method or model; use the checkpoint as written",
        )


def _field_hint(tensor_name: str) -> str:
    """Which metadata field a mismatching tensor points at, where one does."""
    if tensor_name.startswith("classifier."):
        return "; check model.arguments.num_classes"
    if tensor_name.startswith("stem."):
        return "; check model.arguments.in_channels"
    return ""
