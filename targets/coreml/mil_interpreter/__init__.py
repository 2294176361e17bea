"""A NumPy reference interpreter for Core ML ML programs (.mlpackage), runnable on Linux.

Core ML prediction needs macOS; this package reads a saved ML program back with coremltools'
milproto loader and evaluates it op by op with NumPy, so Core ML exports can be checked for
parity anywhere. It is a reference, not a runtime: it is slow, and it models fp16 programs by
rounding every op's result to fp16 (heavy ops accumulate in fp32), which tracks Core ML's
numbers closely but not bit for bit.

    prog = load_program("model.mlpackage")
    outputs = run_program(prog, {"input": x, "alpha": a}, function_name="main")
"""

from .errors import (
    FunctionNotFoundError,
    InputError,
    InputShapeError,
    MilInterpreterError,
    MissingInputError,
    NotAnMLProgramError,
    OpExecutionError,
    PackageLoadError,
    UnexpectedInputError,
    UnsupportedOpError,
)
from .program import InputSpec, MilProgram, load_program, run_program
from .registry import OpArgs, register, supported_ops

__all__ = [
    "FunctionNotFoundError",
    "InputError",
    "InputShapeError",
    "InputSpec",
    "MilInterpreterError",
    "MilProgram",
    "MissingInputError",
    "NotAnMLProgramError",
    "OpArgs",
    "OpExecutionError",
    "PackageLoadError",
    "UnexpectedInputError",
    "UnsupportedOpError",
    "load_program",
    "register",
    "run_program",
    "supported_ops",
]
