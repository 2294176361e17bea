"""Data-parallel training across processes started by ``torchrun`` (one per GPU, or gloo on CPU).

Every rank runs the same Trainer: the same seeded epoch order, augmentation and alphas (all
drawn from the shared (seed, epoch) generator, never from rank-local state), so each rank
knows the step's global batch and takes its own contiguous slice of it. Gradients are summed
across ranks with one all-reduce per step; each rank's loss is its slice's summed loss over
the *global* batch size, so the sum is exactly the single-process mean.

Why not ``DistributedDataParallel``: an LCS step runs several forward/backward passes (one
per sampled alpha, four for the structured sandwich) and then the line regulariser's
backward; DDP's reducer expects one backward per forward. One explicit all-reduce after all
of them is simpler and keeps the arithmetic identical to one process (within float
summation order). The price is no overlap of communication with the backward pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lcs_train.errors import LcsError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``world`` processes, this one is ``rank``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints and reports."""
        return self.rank == 0

    def shard(self, size: int) -> slice:
        """This rank's contiguous part of a global batch of ``size`` (the first ``size %
        world`` ranks get one more), so that concatenating the ranks' parts in order gives
        the global batch."""
        base, extra = divmod(size, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def from_environment() -> Distributed:
    """The run's layout from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK); one process
    without them."""
    world = os.environ.get("WORLD_SIZE")
    if world is None or int(world) <= 1:
        return Distributed()
    try:
        return Distributed(int(os.environ["RANK"]), int(world), int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise LcsError("WORLD_SIZE is set but RANK is missing or not a number",
                       "start multi-process training with torchrun") from None


def initialise(layout: Distributed, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo for CPU) unless already joined."""
    if not layout.active or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=layout.rank, world_size=layout.world)


def device_for(layout: Distributed, name: str) -> str:
    """Under torchrun each rank takes the GPU of its LOCAL_RANK when asked for 'auto' or 'cuda'."""
    if layout.active and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{layout.local_rank}"
    return name


def settings_digest(settings: dict[str, Any]) -> bytes:
    """A sha256 of the settings every rank must share."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).digest()


def check_same_everywhere(layout: Distributed, settings: dict[str, Any], what: str, device: torch.device) -> None:
    """Refuse on every rank when any rank has other ``settings`` (ranks launched with
    different options, or different data): they would silently train different things."""
    if not layout.active:
        return
    mine = torch.tensor(list(settings_digest(settings)), dtype=torch.uint8, device=device)
    gathered = [torch.empty_like(mine) for _ in range(layout.world)]
    dist.all_gather(gathered, mine)
    differing = [rank for rank, digest in enumerate(gathered) if not torch.equal(digest, gathered[0])]
    if differing:
        raise LcsError(
            f"the {layout.world} training processes were started with different {what} "
            f"(rank {differing[0]} differs from rank 0; this is rank {layout.rank}: "
            f"{json.dumps(settings, sort_keys=True, default=str)[:300]})",
            "launch every rank with the same options and the same data",
        )


def broadcast_state(layout: Distributed, model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (seeded initialisation already makes
    them equal; this makes it a guarantee, whatever the ranks' hardware)."""
    if not layout.active:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        # Collectives want dense default-layout tensors; channels-last weights go via a copy.
        dense = tensor.data.contiguous()
        dist.broadcast(dense, src=0)
        if dense is not tensor.data:
            tensor.data.copy_(dense)


def sum_gradients(layout: Distributed, parameters: list[nn.Parameter]) -> None:
    """Sum every gradient across ranks in one flat all-reduce."""
    if not layout.active:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def sum_value(layout: Distributed, value: float, device: torch.device) -> float:
    """``value`` summed over ranks (a step's loss; every rank then sees the same number)."""
    if not layout.active:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


#: Set while a training step's forward passes run on every rank in step (see
#: ``statistics_across_ranks``); calibration or evaluation on one rank must not all-reduce.
_ranks_in_step = False


@contextlib.contextmanager
def statistics_across_ranks(layout: Distributed) -> Iterator[None]:
    """Within the block, batch statistics (``global_range``, ``global_moments``) cover the
    global batch."""
    global _ranks_in_step
    previous, _ranks_in_step = _ranks_in_step, layout.active
    try:
        yield
    finally:
        _ranks_in_step = previous


def global_range(low_high: Tensor) -> Tensor:
    """[min, max] of a batch -> [min, max] over every rank's slice of the global batch, so a
    running activation range moves exactly as in one process; unchanged outside a step."""
    if not _ranks_in_step:
        return low_high
    # One MIN all-reduce for both: the max is the min of the negated values.
    packed = torch.stack([low_high[0], -low_high[1]])
    dist.all_reduce(packed, op=dist.ReduceOp.MIN)
    return torch.stack([packed[0], -packed[1]])


def global_moments(x: Tensor) -> tuple[Tensor, Tensor] | None:
    """Per-channel mean and biased variance of ``x`` [N, C, ...] over every rank's slice of
    the global batch, as one process computes them over the whole batch (what a kept
    BatchNorm normalises with in training), differentiable through the all-reduces; None
    outside a data-parallel step, where the batch's own statistics are the global ones.

    Two passes (the mean, then the squared deviations from it), as a single-process batch
    norm computes them: E[x^2] - E[x]^2 in float32 loses digits when the mean is large."""
    if not _ranks_in_step:
        return None
    dims = [0, *range(2, x.dim())]
    values = x.float()
    count = torch.full((1,), values.numel() / values.shape[1], device=x.device)
    total = _all_reduce_with_gradient(torch.cat([values.sum(dims), count]))
    mean = total[:-1] / total[-1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    deviation = values - mean.reshape(shape)
    var = _all_reduce_with_gradient((deviation * deviation).sum(dims)) / total[-1]
    return mean, var


def _all_reduce_with_gradient(tensor: Tensor) -> Tensor:
    """The sum over ranks, whose backward all-reduces the gradient: what the sum of every
    rank's loss needs. torch marks this autograd-aware all-reduce deprecated in favour of the
    functional collectives, whose autograd support is not public; the warning would repeat
    for every layer of every step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)


def agree(layout: Distributed, ok: bool, device: torch.device) -> bool:
    """True on every rank only if ``ok`` on every rank (rank 0's save succeeded, ...)."""
    if not layout.active:
        return ok
    flag = torch.tensor([0 if ok else 1], dtype=torch.int32, device=device)
    dist.all_reduce(flag)
    return int(flag.item()) == 0


def finish(layout: Distributed) -> None:
    """Leave the process group (torchrun's processes then exit cleanly)."""
    if layout.active and dist.is_initialized():
        dist.destroy_process_group()
