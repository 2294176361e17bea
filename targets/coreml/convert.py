"""From a torch module to an (unsaved) Core ML ML program with a flexible batch dimension.

``torch.export`` (after ``run_decompositions({})``) is the capture path: it names weight
constants after their parameters and keeps spatial sizes static while the batch is dynamic.
coremltools 9.0's GroupNorm lowering builds a constant reshape shape from the batch
dimension, which fails when that dimension is symbolic; :func:`_flexible_batch_group_norm`
swaps in a lowering that reshapes with -1 instead, for the duration of one conversion only.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from targets.coreml.options import CoreMLOptions
from targets.coreml.private_api import private

OUTPUT_NAME = "logits"


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[Any]:
    """coremltools, with its untested-torch / Linux / progress-bar chatter silenced.

    Its progress bars ("Running MIL ... pipeline", "Converting PyTorch Frontend ==> MIL
    Ops") are tqdm bars that would interleave with lcs's own rich progress on stderr.
    tqdm reads its ``TQDM_DISABLE`` variable once, when tqdm is imported, so an environment
    variable set now would come too late; instead each coremltools module's own ``tqdm``
    name is pointed at a disabled bar for the duration of the block.
    """
    previous = logging.getLogger("coremltools").level
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct

        restore = _silence_tqdm()
        try:
            yield ct
        finally:
            for module, name, original in restore:
                setattr(module, name, original)
            logging.getLogger("coremltools").setLevel(previous)


def _silence_tqdm() -> list[tuple[Any, str, Any]]:
    """Replace ``tqdm`` in every loaded coremltools module by a disabled one; returns what to restore."""
    import functools
    import sys

    from tqdm import tqdm

    private("coremltools.converters.mil.frontend.torch:ops")  # load the modules that use tqdm
    private("coremltools.converters.mil.mil.passes:pass_pipeline")

    restore = []
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("coremltools") or module is None:
            continue
        for name in ("tqdm", "_tqdm"):
            if getattr(module, name, None) is tqdm:
                restore.append((module, name, tqdm))
                setattr(module, name, functools.partial(tqdm, disable=True))
    return restore


def convert_module(
    module: nn.Module,
    example: Sequence[Tensor],
    input_names: Sequence[str],
    options: CoreMLOptions,
    target: Any = None,
) -> Any:
    """Convert ``module`` (inputs ``example``) to an ML program; returns an unloaded MLModel.

    The first input's batch dimension is flexible (1..``options.max_batch``); every other
    input keeps its example shape. ``target`` overrides the options' minimum target.
    """
    module = module.eval()
    batch = torch.export.Dim("batch", min=1, max=options.max_batch)
    dynamic = ({0: batch},) + (None,) * (len(example) - 1)
    with torch.no_grad(), warnings.catch_warnings():
        # An alpha-input module sets each layer's alpha (a plain attribute) from its input in
        # forward; torch.export warns about that assignment, which is the intent here.
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        program = torch.export.export(module, tuple(example), dynamic_shapes=dynamic).run_decompositions({})
    with quiet_coremltools() as ct, _flexible_batch_group_norm():
        inputs = [
            ct.TensorType(
                name=name,
                shape=(ct.RangeDim(1, options.max_batch, 1), *t.shape[1:]) if index == 0 else tuple(t.shape),
                dtype=np.float32,
            )
            for index, (name, t) in enumerate(zip(input_names, example))
        ]
        # A BatchNorm stays its own op: folded into the conv before it, it would change the
        # conv's weights, which then no longer hold the level's (the sparse or integer
        # storage of ``targets.coreml.weights`` finds each weight by its values).
        passes = ct.PassPipeline.DEFAULT
        passes.remove_passes(["common::fuse_conv_batchnorm"])
        return ct.convert(
            program,
            convert_to="mlprogram",
            pass_pipeline=passes,
            inputs=inputs,
            outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
            minimum_deployment_target=target if target is not None else options.coreml_target(),
            compute_precision=options.coreml_precision(),
            skip_model_load=True,  # prediction needs macOS; the runner loads it when it can
        )


@contextlib.contextmanager
def _flexible_batch_group_norm() -> Iterator[None]:
    ops = private("coremltools.converters.mil.frontend.torch:ops")
    original = private("coremltools.converters.mil.frontend.torch.ops:_group_norm_impl")
    mb = private("coremltools.converters.mil:Builder")
    any_symbolic = private("coremltools.converters.mil.mil.types.symbolic:any_symbolic")

    def lowering(x: Any, num_groups: int, weight: Any, bias: Any, eps: float) -> Any:
        if not any_symbolic(x.shape[:1]) or any_symbolic(x.shape[1:]):
            return original(x, num_groups, weight, bias, eps)
        channels, rest = x.shape[1], [int(d) for d in x.shape[2:]]
        groups = min(num_groups, channels)
        axes = list(range(2, 3 + len(rest)))
        y = mb.reshape(x=x, shape=[-1, groups, channels // groups, *rest])
        mean = mb.reduce_mean(x=y, axes=axes, keep_dims=True)
        centered = mb.sub(x=y, y=mean)
        variance = mb.reduce_mean(x=mb.mul(x=centered, y=centered), axes=axes, keep_dims=True)
        y = mb.real_div(x=centered, y=mb.sqrt(x=mb.add(x=variance, y=eps)))
        y = mb.reshape(x=y, shape=[-1, channels, *rest])
        affine_shape = [1, channels] + [1] * len(rest)
        if weight is not None:
            y = mb.mul(x=y, y=mb.reshape(x=weight, shape=affine_shape))
        if bias is not None:
            y = mb.add(x=y, y=mb.reshape(x=bias, shape=affine_shape))
        return y

    ops._group_norm_impl = lowering
    try:
        yield
    finally:
        ops._group_norm_impl = original
