"""Real compression inside a Core ML package: sparse and integer weight storage.

A level's prunable weights are found in the converted program by value and their ``const``
ops replaced with the decompression op built from the level's *own* numbers, so the weight
Core ML decompresses is exactly the one PyTorch multiplies with:

- unstructured: ``constexpr_sparse_to_dense`` whose mask is the level's zero pattern
  (coremltools' pruners choose their own mask and skip tensors under ``weight_threshold``);
- quantized: the level's integer codes, per-tensor scale and zero point, as
  ``constexpr_affine_dequantize`` over uint8 (iOS16/17) or ``constexpr_blockwise_shift_scale``
  over uint8 / uint4 (iOS18). ``linear_quantize_weights`` would recompute scale and zero
  point from the dequantized values and so move every weight off the level's grid.

The first conv and the classifier are not prunable and stay float; structured levels are
already narrower networks and need no rewrite.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lcs_train.errors import LcsError
from lcs_train.level_layers import QuantizedWeight
from targets.inputs import Level
from targets.coreml.options import CoreMLOptions
from targets.coreml.private_api import private

#: Ops whose ``weight`` input is a prunable layer's weight.
WEIGHT_CONSUMERS = ("conv", "linear")


@dataclass
class WeightPlan:
    """How one prunable layer's weight is stored in the package."""

    layer: str  # module name in the level, e.g. "stages.0.conv1"
    reference: np.ndarray  # float32 weight exactly as PyTorch computes it
    storage: str  # "sparse", "uint8" or "uint4"
    codes: np.ndarray | None = None  # quantized storage only
    scale: float = 1.0
    zero_point: int = 0
    bits: int = 32

    @property
    def sparsity(self) -> float:
        return float(np.mean(self.reference == 0))


def plan_weights(level: Level, options: CoreMLOptions) -> list[WeightPlan]:
    """The storage of every prunable weight of a materialised level (empty: all float)."""
    module = level.module
    plans = []
    for name in level.prunable:
        layer = module.get_submodule(name)
        weight = layer.weight
        if isinstance(weight, QuantizedWeight):
            plans.append(_quantized_plan(name, weight, level.alpha, options))
            continue
        reference = weight.detach().float().numpy()
        if "sparsity" in level.compression and np.any(reference == 0):
            plans.append(WeightPlan(name, reference.copy(), "sparse"))
    return plans


def _quantized_plan(name: str, weight: Any, alpha: float, options: CoreMLOptions) -> WeightPlan:
    bits = int(weight.bits)
    storage = "uint8" if bits > 4 else "uint4"
    if storage == "uint4" and options.target_version < 18:
        raise LcsError(
            f"level alpha={alpha:g} stores {bits}-bit weights, which Core ML holds as 4-bit integers "
            f"only from iOS18 (minimum target {options.minimum_target} was asked for)",
            "pass --minimum-target iOS18, or export only levels of 5 bits or more",
        )
    with torch.no_grad():
        reference = weight().float().numpy()
    return WeightPlan(
        name, reference, storage, codes=weight.codes.numpy().astype(np.uint8),
        scale=float(weight.scale), zero_point=int(weight.zero_point), bits=bits,
    )


def store_weights(mlmodel: Any, plans: list[WeightPlan], options: CoreMLOptions) -> tuple[Any, dict[str, str]]:
    """``mlmodel`` with each planned weight stored compressed; also layer -> MIL op name.

    Applied as a graph pass on the program read back from the model's spec, the way
    coremltools' own ``prune_weights`` / ``linear_quantize_weights`` work, then serialised
    without running the main pass pipeline again: the same program (only generated op names
    differ) as ``_apply_graph_pass``'s default, which ran all of it a second time, and 0.3 to
    0.5 s less per compressed level of a digits cPreResNet11 (of 1.6 to 2.9 s). Raises
    RuntimeError when a planned weight is not found in the program, or when the program's
    constant differs from PyTorch's weight (the conversion changed it).
    """
    if not plans:
        return mlmodel, {}
    _apply_graph_pass = private("coremltools.models.utils:_apply_graph_pass")
    mil_convert = private("coremltools.converters.mil.converter:mil_convert")

    graph_pass = _store_weights_pass()(plans, options)
    spec = mlmodel.get_spec()
    with _quiet() as ct:
        program = _apply_graph_pass(mlmodel, graph_pass, spec_version=spec.specificationVersion,
                                    skip_model_load=True, return_pymil_prog=True)
        # Serialised without the main pass pipeline: the program was optimised when it was
        # converted, and running all of it again (what _apply_graph_pass does by default) took
        # most of the time this step took.
        stored = mil_convert(
            program, convert_to="mlprogram", convert_from="milinternal",
            specification_version=spec.specificationVersion, compute_units=mlmodel.compute_unit,
            model_description=spec.description, skip_model_load=True, pass_pipeline=ct.PassPipeline.EMPTY,
        )
    return stored, graph_pass.located


def _quiet() -> Any:
    from targets.coreml.convert import quiet_coremltools

    return quiet_coremltools()


@functools.cache
def _store_weights_pass() -> type:
    """The graph pass class, built on first use: its base class is coremltools', and importing
    coremltools (3 s) belongs to a Core ML export, not to every lcs-export start."""
    AbstractGraphPass = private("coremltools.converters.mil.mil.passes.graph_pass:AbstractGraphPass")  # noqa: N806

    class StoreWeightsPass(AbstractGraphPass):  # type: ignore[misc,valid-type]
        """Replace each planned weight const of the main function with its decompression op."""

        def __init__(self, plans: list[WeightPlan], options: CoreMLOptions) -> None:
            super().__init__()
            self.plans, self.options = plans, options
            self.located: dict[str, str] = {}

        def apply(self, prog: Any) -> None:
            function = prog.functions["main"]
            candidates = _weight_consts(function.operations)
            for plan in self.plans:
                op = _match(plan, candidates, self.options)
                candidates.remove(op)
                self.located[plan.layer] = _replace(op, plan)

    return StoreWeightsPass


def _weight_consts(operations: Iterable[Any]) -> list[Any]:
    consts = []
    for op in operations:
        if op.op_type in WEIGHT_CONSUMERS:
            source = op.weight.op
            if source is not None and source.op_type == "const" and source not in consts:
                consts.append(source)
    return consts


def _match(plan: WeightPlan, candidates: list[Any], options: CoreMLOptions) -> Any:
    """The const holding ``plan``'s weight: same shape, closest values, within rounding."""
    best, best_error = None, np.inf
    for op in candidates:
        value = np.asarray(op.outputs[0].val)
        if value.shape != plan.reference.shape:
            continue
        error = float(np.max(np.abs(value.astype(np.float32) - plan.reference)))
        if error < best_error:
            best, best_error = op, error
    magnitude = float(np.max(np.abs(plan.reference))) or 1.0
    # fp16 programs hold fp16-rounded weights (relative step 2^-11).
    allowed = magnitude * (1e-3 if options.compute_precision == "float16" else 1e-6)
    if best is None or best_error > allowed:
        raise RuntimeError(
            f"the weight of {plan.layer} {tuple(plan.reference.shape)} was not found in the converted "
            f"program (closest constant differs by {best_error:.3g})"
        )
    return best


def _replace(op: Any, plan: WeightPlan) -> str:
    """Swap ``op`` (a weight const) for the decompression op of ``plan``; return its name."""
    mb = private("coremltools.converters.mil:Builder")

    block = op.enclosing_block
    dtype = np.asarray(op.outputs[0].val).dtype  # float32, or float16 in an fp16 program
    ios18 = block.opset_version is not None and block.opset_version >= _ios18()
    name = f"{op.name}_{plan.storage}"
    with block:
        if plan.storage == "sparse":
            new = _sparse(op, plan, dtype, ios18, name)
        elif ios18:
            new = _blockwise(op, plan, dtype, name)
        else:
            new = mb.constexpr_affine_dequantize(
                quantized_data=plan.codes, zero_point=np.uint8(plan.zero_point),
                scale=dtype.type(plan.scale), axis=0, before_op=op, name=name,
            )
    block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new, no_check_var_types=True)
    block.remove_ops([op])
    return name


def _sparse(op: Any, plan: WeightPlan, dtype: np.dtype, ios18: bool, name: str) -> Any:
    mb = private("coremltools.converters.mil:Builder")
    types = private("coremltools.converters.mil.mil:types")

    keep = plan.reference != 0  # the level's own mask, not a re-derived one
    values = np.asarray(op.outputs[0].val).astype(dtype)[keep]
    if ios18:
        return mb.constexpr_sparse_to_dense(
            nonzero_data=values, mask=keep.astype(types.np_uint1_dtype), before_op=op, name=name,
        )
    return mb.constexpr_sparse_to_dense(
        nonzero_data=values, mask=np.packbits(keep.ravel(), bitorder="little"),
        shape=np.array(keep.shape, dtype=np.uint32), before_op=op, name=name,
    )


def _blockwise(op: Any, plan: WeightPlan, dtype: np.dtype, name: str) -> Any:
    mb = private("coremltools.converters.mil:Builder")
    types = private("coremltools.converters.mil.mil:types")

    storage = types.np_uint4_dtype if plan.storage == "uint4" else np.uint8
    ones = (1,) * plan.codes.ndim  # one block spanning the whole tensor: per-tensor
    return mb.constexpr_blockwise_shift_scale(
        data=plan.codes.astype(storage),
        scale=np.full(ones, plan.scale, dtype=dtype),
        offset=np.full(ones, plan.zero_point, dtype=np.uint8).astype(storage),
        before_op=op, name=name,
    )


def _ios18() -> Any:
    import coremltools as ct

    return ct.target.iOS18


def weights_evidence(package: Path | str, function_name: str | None = None) -> dict[str, dict[str, Any]]:
    """Per compressed weight of a saved package, what its storage proves.

    Read with ``coremltools.optimize.coreml.get_weights_metadata(weight_threshold=0)`` (so no
    tensor is hidden by size): for every conv / linear weight, the decompression op feeding
    it, the sparsity of the stored tensor, its storage dtype, and the number of distinct
    integer codes. Keys are the names of the conv / linear ops consuming the weights.
    """
    from targets.coreml.convert import quiet_coremltools

    with quiet_coremltools() as ct:
        model = ct.models.MLModel(str(package), skip_model_load=True, function_name=function_name)
        metadata = ct.optimize.coreml.get_weights_metadata(model, weight_threshold=0)
    evidence: dict[str, dict[str, Any]] = {}
    for const_name, meta in metadata.items():
        for child in meta.child_ops or []:
            entry = _evidence_entry(const_name, meta, child)
            if entry is not None:
                evidence.setdefault(child.name, {}).update(entry)
    return evidence


def _evidence_entry(const_name: str, meta: Any, child: Any) -> dict[str, Any] | None:
    value = np.asarray(meta.val)
    role = {v: k for k, v in child.params_name_mapping.items()}.get(const_name)
    if child.op_type in WEIGHT_CONSUMERS and role == "weight":
        return {"storage": "float", "dtype": str(value.dtype), "shape": list(value.shape),
                "sparsity": float(meta.sparsity)}
    if child.op_type == "constexpr_sparse_to_dense":
        if role == "mask" and value.ndim > 1:  # iOS18: a uint1 tensor of the weight's shape
            return {"op": child.op_type, "mask_ones": int(value.astype(np.int64).sum()),
                    "dense_elements": int(value.size), "shape": list(value.shape)}
        if role == "mask":  # iOS16: bits packed into bytes, the shape given separately
            return {"op": child.op_type, "mask_ones": int(np.unpackbits(value.astype(np.uint8)).sum())}
        if role == "shape":
            return {"dense_elements": int(np.prod(value)), "shape": [int(v) for v in value]}
        if role == "nonzero_data":
            return {"nonzero_values": int(value.size)}
    if child.op_type in ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize") and role in (
        "data", "quantized_data",
    ):
        return {"op": child.op_type, "dtype": _storage_dtype(value), "distinct_codes": int(meta.unique_values),
                "max_code": int(value.max()), "shape": list(value.shape)}
    return None


def sparsity_of(entry: dict[str, Any]) -> float:
    """Fraction of zeros a weight's evidence proves (stored mask for sparse weights)."""
    if "mask_ones" in entry:
        return 1.0 - entry["mask_ones"] / entry["dense_elements"]
    return float(entry.get("sparsity", 0.0))


def _storage_dtype(value: np.ndarray) -> str:
    types = private("coremltools.converters.mil.mil:types")

    sub_byte = (value.dtype.metadata or {}).get(types.SUB_BYTE_DTYPE_METADATA_KEY)
    return types.builtin_to_string(sub_byte) if sub_byte is not None else str(value.dtype)
