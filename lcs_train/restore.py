"""Rebuilding a subspace from a checkpoint's metadata, with no training code involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lcs_train.checkpoint import Checkpoint, load_checkpoint, load_model_state
from lcs_train.errors import LcsError
from lcs_train.methods import CompressionMethod, method_from_metadata
from lcs_train.shapes import shape_from_name
from lcs_train.subspace import build_subspace, mark_fixed_alpha, set_schedule


def model_from_metadata(metadata: dict[str, Any]) -> nn.Module:
    """An untrained subspace with the architecture, method and shape the metadata names."""
    try:
        method = method_from_metadata(metadata["method"])
        shape = shape_from_name(metadata["shape"])
        model = metadata["model"]
        # "batch": BatchNorms kept with per-level statistics (format 2); otherwise the method's norm.
        norm = "batch" if metadata.get("norm") == "batch" else None
        return build_subspace(model["name"], method, shape, norm, **model["arguments"])
    except (KeyError, TypeError, ValueError) as error:
        # The metadata was validated on load; this guards callers that build from a dict.
        raise LcsError(f"checkpoint metadata does not describe a network ({error})", "use a file written by lcs-train") from None


def load_subspace(path: str | Path) -> tuple[nn.Module, Checkpoint]:
    """Load a checkpoint into a ready-to-run subspace (eval mode, full compression).

    A ``--fixed-alpha`` baseline comes back at its one trained alpha and refuses any other
    (``lcs_train.subspace.check_model_alpha``).
    """
    checkpoint = load_checkpoint(path)
    model = model_from_metadata(checkpoint.metadata)
    load_model_state(model, checkpoint.model_state, str(path))
    set_schedule(model, 1.0, bool(checkpoint.metadata.get("activation_quantization", True)))
    mark_fixed_alpha(model, checkpoint.metadata["alpha"]["fixed"])
    model.eval()
    return model, checkpoint


def checkpoint_method(checkpoint: Checkpoint) -> CompressionMethod:
    """The compression method recorded in a checkpoint."""
    return method_from_metadata(checkpoint.metadata["method"])
