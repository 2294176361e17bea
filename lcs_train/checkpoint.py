"""The subspace checkpoint: one safetensors file with JSON metadata, never a pickle.

Tensors: the model's state under ``model.``, training state (optimizer momentum) under
``train.``. Metadata key ``lcs`` holds JSON: architecture, method, shape, alpha range,
preprocessing, classes, training config and history, library versions, and a sha256 over
every tensor and the metadata itself, so that a tampered file is refused. Saves go to a temporary file in the same
directory and are renamed into place, so an interrupted save never leaves a corrupt file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from lcs_train.errors import LcsError

FORMAT = "lcs-subspace"
FORMAT_VERSION = 1
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
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path,
    metadata: dict[str, Any],
    model_state: dict[str, Tensor],
    train_state: dict[str, Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    for key, value in (train_state or {}).items():
        tensors[f"train.{key}"] = value.detach().cpu().contiguous()
    full = {**metadata, "format": FORMAT, "format_version": FORMAT_VERSION, "versions": library_versions()}
    full["content_sha256"] = content_digest(tensors, full)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={METADATA_KEY: json.dumps(full)})
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def load_checkpoint(path: str | Path, with_train_state: bool = False) -> Checkpoint:
    """Read and verify a checkpoint. Every failure is an ``LcsError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise LcsError(f"checkpoint {path} does not exist", "check the path (lcs-train writes runs/<name>.safetensors)")
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
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        raise LcsError(f"{path} has corrupt lcs metadata", "use an intact file written by lcs-train") from None
    if metadata.get("format") != FORMAT:
        raise LcsError(f"{path} is not an lcs subspace checkpoint", "pass a file written by lcs-train")
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise LcsError(f"{path} was written by a newer lcs (format {metadata['format_version']})", "upgrade lcs")
    if content_digest(tensors, metadata) != metadata.get("content_sha256"):
        raise LcsError(
            f"{path} failed its integrity check: its tensors or metadata were changed after it was saved",
            "use the checkpoint as lcs-train wrote it, or train again",
        )
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    train_state = (
        {k[len("train."):]: v for k, v in tensors.items() if k.startswith("train.")}
        if with_train_state
        else {}
    )
    return Checkpoint(metadata, model_state, train_state, path)


def load_model_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model``, turning any mismatch into one clear error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = (missing or unexpected or wrong)[:3]
        raise LcsError(
            f"{source} does not match the network its metadata describes "
            f"(first differing tensors: {', '.join(detail)})",
            "the file was edited or comes from another method or model; use the checkpoint as written",
        )
    model.load_state_dict(state)
