"""Rebuilding a subspace from a checkpoint's metadata, with no training code involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)

from lcs_train.checkpoint import Checkpoint, check_model_state, load_checkpoint, load_model_state
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
    skeleton = _skeleton(checkpoint.metadata)
    if skeleton is not None:
        check_model_state(skeleton.state_dict(), checkpoint.model_state, str(path))
    model = model_from_metadata(checkpoint.metadata)
    load_model_state(model, checkpoint.model_state, str(path))
    set_schedule(model, 1.0, bool(checkpoint.metadata.get("activation_quantization", True)))
    mark_fixed_alpha(model, checkpoint.metadata["alpha"]["fixed"])
    model.eval()
    return model, checkpoint


def _skeleton(metadata: dict[str, Any]) -> nn.Module | None:
    """The network the metadata names with every parameter and buffer on the meta device
    (shapes and dtypes, no memory), so that a file whose metadata names another or a huge
    network is refused before any real allocation: a hostile edit naming
    ``torchvision:regnet_y_128gf`` over a small file took 10 s and 8 GB to build before its
    tensors were compared. Each tensor is moved as its module registers it (a builder's own
    arithmetic, such as torchvision's RegNet widths, still runs on real values), so the peak
    is one layer. None where a builder cannot run on meta tensors: the real build then does
    the same check."""
    def to_meta(_: nn.Module, __: str, tensor: Tensor | None) -> Tensor | None:
        if tensor is None or tensor.is_meta:
            return None
        meta = tensor.to("meta")
        return nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta

    hooks = [register_module_parameter_registration_hook(to_meta), register_module_buffer_registration_hook(to_meta)]
    try:
        return model_from_metadata(metadata)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    finally:
        for hook in hooks:
            hook.remove()


def checkpoint_method(checkpoint: Checkpoint) -> CompressionMethod:
    """The compression method recorded in a checkpoint."""
    return method_from_metadata(checkpoint.metadata["method"])
