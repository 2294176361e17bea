"""Mixed precision for training: ``--precision fp32 | bf16 | fp16`` as an autocast context.

The weights, the optimizer state and the checkpoint stay float32 whatever the precision;
autocast only runs matmuls and convolutions in the lower precision. fp16's narrow range needs
loss scaling (``torch.amp.GradScaler``), whose scale is part of the training state so that a
resumed run continues exactly; bf16 has float32's range and needs none.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from lcs_train.errors import LcsError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse an unknown precision, or fp16 where autocast cannot run it (CPU)."""
    if precision not in PRECISIONS:
        raise LcsError(f"unknown --precision {precision!r}", f"use one of: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise LcsError("--precision fp16 needs a CUDA device (CPU autocast computes in bf16, not fp16)",
                       "use --precision bf16 or fp32 on CPU, or --device cuda")


def autocast(precision: str, device: torch.device) -> ContextManager[object]:
    """The context a forward pass runs in: autocast to the precision, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (None otherwise: bf16 and fp32 need no scaling)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def scaler_state(scaler: torch.amp.GradScaler | None) -> dict[str, torch.Tensor]:
    """The scaler's state as tensors, for the checkpoint's training state."""
    if scaler is None or not scaler.is_enabled():
        return {}
    state = scaler.state_dict()
    if not state:  # no step taken yet: nothing to keep
        return {}
    return {"scaler.scale": torch.tensor([float(state["scale"])], dtype=torch.float64),
            "scaler.growth_tracker": torch.tensor([int(state["_growth_tracker"])], dtype=torch.int64)}


def load_scaler_state(scaler: torch.amp.GradScaler | None, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Restore ``scaler_state`` output; refuse it for a run that has no scaler."""
    if not tensors:
        return
    if scaler is None:
        raise LcsError(f"cannot resume {source}: it holds an fp16 loss scale but this run is not fp16",
                       "resume with the --precision it was trained with")
    state = scaler.state_dict()
    state["scale"] = float(tensors["scaler.scale"].item())
    state["_growth_tracker"] = int(tensors["scaler.growth_tracker"].item())
    scaler.load_state_dict(state)
