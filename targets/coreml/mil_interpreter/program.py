"""Load a saved Core ML ML program and run one of its functions with NumPy.

The program is read back into a PyMIL ``Program`` with coremltools' milproto loader (which works
on Linux); the interpreter then walks a function's ops in order, evaluating each with the
registered NumPy implementation. Every value is coerced to the dtype the program declares for
it, so an fp16 program computes in fp16 op by op, like Core ML does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..private_api import private
from . import ops as _ops  # noqa: F401  (importing registers every op implementation)
from .dtypes import numpy_dtype_of_var
from .errors import (
    FunctionNotFoundError,
    InputShapeError,
    MilInterpreterError,
    MissingInputError,
    NotAnMLProgramError,
    OpExecutionError,
    PackageLoadError,
    UnexpectedInputError,
)
from .registry import OpArgs, lookup

_WEIGHTS_SUBDIR = os.path.join("Data", "com.apple.CoreML", "weights")


@dataclass(frozen=True)
class InputSpec:
    """A function input as the program declares it. ``None`` in ``shape`` is a flexible dim."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


class MilProgram:
    """A parsed ML program, ready to run any of its functions many times."""

    def __init__(self, program: Any, source: str | None = None, default_function: str = "main") -> None:
        self.program = program
        self.source = source
        self.default_function = default_function
        self._checked: set[str] = set()

    @property
    def function_names(self) -> list[str]:
        """Names of the program's functions ("main", plus others in a multifunction package)."""
        return list(self.program.functions)

    def function(self, name: str | None = None) -> Any:
        """The PyMIL Function called ``name`` (the default function when None)."""
        name = self.default_function if name is None else name
        try:
            return self.program.functions[name]
        except KeyError:
            raise FunctionNotFoundError(name, self.function_names) from None

    def inputs(self, function_name: str | None = None) -> dict[str, InputSpec]:
        """The declared inputs of a function, in declaration order."""
        specs = {}
        for name, var in self.function(function_name).inputs.items():
            shape = tuple(int(d) if isinstance(d, (int, np.integer)) else None for d in var.shape)
            specs[name] = InputSpec(name, shape, numpy_dtype_of_var(var))
        return specs

    def output_names(self, function_name: str | None = None) -> list[str]:
        """The names of a function's outputs, in order."""
        return [v.name for v in self.function(function_name).outputs]

    def op_types(self, function_name: str | None = None) -> list[str]:
        """Every op type the function uses (nested blocks included), sorted."""
        return sorted({op.op_type for op in _walk_ops(self.function(function_name))})

    def check_supported(self, function_name: str | None = None) -> None:
        """Raise UnsupportedOpError for the first op the interpreter cannot run."""
        name = self.default_function if function_name is None else function_name
        if name in self._checked:
            return
        for op in _walk_ops(self.function(name)):
            lookup(op.op_type, op.name)
        self._checked.add(name)

    def __repr__(self) -> str:
        return f"MilProgram(source={self.source!r}, functions={self.function_names})"


def load_program(source: str | os.PathLike | Any) -> MilProgram:
    """Parse a saved ``.mlpackage`` (or an in-memory ``MLModel`` / PyMIL ``Program``) once.

    Raises PackageLoadError when the path is missing or unreadable and NotAnMLProgramError when
    the model is not an ML program (e.g. an old neural-network ``.mlmodel``).
    """
    Program = private("coremltools.converters.mil.mil:Program")  # noqa: N806

    if isinstance(source, Program):
        return MilProgram(source, source=None)

    import coremltools as ct

    if isinstance(source, ct.models.MLModel):
        spec = source.get_spec()
        weights_dir = source.weights_dir or ""
        label = getattr(source, "package_path", None) or "<MLModel>"
    else:
        path = Path(source)
        if not path.exists():
            raise PackageLoadError(f"no Core ML model at {str(path)!r}: the path does not exist")
        try:
            spec = ct.utils.load_spec(str(path))
        except Exception as exc:  # coremltools raises assorted types for unreadable packages
            raise PackageLoadError(
                f"{str(path)!r} is not a readable Core ML model (.mlpackage): {exc}"
            ) from exc
        weights_dir = str(path / _WEIGHTS_SUBDIR)
        label = str(path)

    if spec.WhichOneof("Type") != "mlProgram":
        raise NotAnMLProgramError(
            f"{label!r} is a Core ML {spec.WhichOneof('Type')!r} model, not an ML program; "
            "convert with convert_to='mlprogram'"
        )

    milproto_load = private("coremltools.converters.mil.frontend.milproto.load:load")

    try:
        program = milproto_load(spec, spec.specificationVersion, weights_dir)
    except Exception as exc:
        raise PackageLoadError(f"could not read the ML program in {label!r}: {exc}") from exc
    default = spec.description.defaultFunctionName or "main"
    return MilProgram(program, source=label, default_function=default)


def run_program(
    program: MilProgram,
    inputs: Mapping[str, Any],
    function_name: str | None = None,
) -> dict[str, np.ndarray]:
    """Run one function of ``program`` on ``inputs`` and return its outputs by name.

    ``function_name`` defaults to the package's default function ("main" for ordinary
    packages). Inputs are cast to the declared dtype (an fp16 input accepts float32 data, as
    Core ML does); a missing, unknown or wrongly shaped input raises an InputError.
    """
    func = program.function(function_name)
    program.check_supported(function_name)
    env: dict[int, Any] = {}
    for name, value in _bind_inputs(program.inputs(function_name), inputs).items():
        env[id(func.inputs[name])] = value
    outputs = _run_block(func, env)
    return {var.name: np.array(val) for var, val in zip(func.outputs, outputs)}


def _bind_inputs(specs: Mapping[str, InputSpec], given: Mapping[str, Any]) -> dict[str, np.ndarray]:
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise UnexpectedInputError(
            f"unknown input(s) {unknown}; the function takes {list(specs)}"
        )
    bound = {}
    for name, spec in specs.items():
        if name not in given:
            raise MissingInputError(f"missing input {name!r}; the function takes {list(specs)}")
        value = np.asarray(given[name])
        if value.ndim != len(spec.shape) or any(
            want is not None and want != got for want, got in zip(spec.shape, value.shape)
        ):
            declared = tuple("?" if d is None else d for d in spec.shape)
            raise InputShapeError(
                f"input {name!r} has shape {tuple(value.shape)}, the function expects {declared}"
            )
        bound[name] = value.astype(spec.dtype, copy=False) if spec.dtype is not None else value
    return bound


def _walk_ops(block: Any):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk_ops(inner)


def _resolve(var: Any, env: dict[int, Any]) -> Any:
    try:
        return env[id(var)]
    except KeyError:
        pass
    # Optional inputs the builder filled in with defaults are const vars created outside
    # the walked op list; their value is known statically.
    if var.op is not None and var.op.op_type == "const" and var.val is not None:
        return var.val
    raise OpExecutionError(f"value of {var.name!r} is needed before it is computed")


def _run_block(block: Any, env: dict[int, Any]) -> list[Any]:
    """Evaluate ``block``'s ops in order, writing results into ``env``; return its outputs."""
    for op in block.operations:
        impl = lookup(op.op_type, op.name)
        values = {
            name: [_resolve(v, env) for v in var] if isinstance(var, (list, tuple)) else _resolve(var, env)
            for name, var in op.inputs.items()
        }
        args = OpArgs(op, values, run_block=_nested_runner(env, op))
        try:
            result = impl(args)
        except MilInterpreterError:
            raise
        except Exception as exc:
            raise OpExecutionError(f"op {op.name!r} ({op.op_type}) failed: {exc}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise OpExecutionError(
                f"op {op.name!r} ({op.op_type}) produced {len(results)} outputs, "
                f"the program declares {len(op.outputs)}"
            )
        for var, value in zip(op.outputs, results):
            env[id(var)] = _conform(value, var, op)
    return [_resolve(v, env) for v in block.outputs]


def _nested_runner(env: dict[int, Any], op: Any):
    return lambda block, bound: _run_nested(block, bound, env, op)


def _run_nested(block: Any, bound: list[Any], env: dict[int, Any], op: Any) -> list[Any]:
    inner_env = dict(env)  # inner blocks see outer values but must not leak their own
    for var, value in zip(block.inputs, bound):
        inner_env[id(var)] = _conform(value, var, op)
    return _run_block(block, inner_env)


def _conform(value: Any, var: Any, op: Any) -> Any:
    """Coerce ``value`` to the dtype the program declares for ``var`` and check its shape.

    The dtype cast is what makes an fp16 program round after every op; the shape check turns
    an interpreter bug into a clear error instead of a wrong number far downstream.
    """
    dtype = numpy_dtype_of_var(var)
    if dtype is None:
        return value
    arr = np.asarray(value)
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    declared = var.shape
    if len(declared) == 0:
        if arr.size != 1:
            raise OpExecutionError(
                f"op {op.name!r} ({op.op_type}) produced shape {arr.shape} for scalar {var.name!r}"
            )
        return arr.reshape(())
    if arr.ndim != len(declared) or any(
        isinstance(d, (int, np.integer)) and d != s for d, s in zip(declared, arr.shape)
    ):
        raise OpExecutionError(
            f"op {op.name!r} ({op.op_type}) produced shape {arr.shape} for {var.name!r}, "
            f"the program declares {tuple(declared)}"
        )
    return arr
