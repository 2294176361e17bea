"""Exceptions raised by the MIL reference interpreter.

Every error a caller can cause derives from :class:`MilInterpreterError`, so a CLI can catch
one type and print one clear message.
"""

from __future__ import annotations

from collections.abc import Sequence


class MilInterpreterError(Exception):
    """Base class of every error the interpreter raises on purpose."""


class PackageLoadError(MilInterpreterError):
    """The path is missing, or is not a Core ML model coremltools can read."""


class NotAnMLProgramError(PackageLoadError):
    """The model is a Core ML model, but not an ML program (e.g. a neural network)."""


class FunctionNotFoundError(MilInterpreterError):
    """The requested function does not exist in the program."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name = name
        self.available = list(available)
        super().__init__(
            f"function {name!r} is not in the program; available functions: "
            f"{', '.join(self.available)}"
        )


class InputError(MilInterpreterError):
    """Base class of errors about the inputs given to ``run_program``."""


class MissingInputError(InputError):
    """A declared function input was not given."""


class UnexpectedInputError(InputError):
    """An input was given that the function does not declare."""


class InputShapeError(InputError):
    """An input's shape does not match the shape the function declares."""


class UnsupportedOpError(MilInterpreterError):
    """The program holds an op type the interpreter does not implement.

    Raised before anything runs, so an unknown op is never silently skipped.
    """

    def __init__(self, op_type: str, op_name: str | None = None, detail: str | None = None) -> None:
        self.op_type = op_type
        self.op_name = op_name
        where = f" (op {op_name!r})" if op_name else ""
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"the MIL interpreter does not implement op type {op_type!r}{where}{extra}; "
            f"add it with @register({op_type!r}) in targets/coreml/mil_interpreter/ops/"
        )


class OpExecutionError(MilInterpreterError):
    """An op failed while running, or produced a value that contradicts the program's types."""
