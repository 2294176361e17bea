"""Op registry: maps a MIL op type to the NumPy function that evaluates it.

Adding an op is adding one decorated function in one of the ``ops`` modules::

    @register("relu")
    def relu(args: OpArgs) -> np.ndarray:
        return np.maximum(args["x"], 0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import numpy as np

from .errors import UnsupportedOpError

# A handler returns one value, or a tuple of values for ops with several outputs.
OpResult = Union[np.ndarray, np.generic, str, tuple]
OpImpl = Callable[["OpArgs"], OpResult]

_REGISTRY: dict[str, OpImpl] = {}


def register(*op_types: str) -> Callable[[OpImpl], OpImpl]:
    """Register the decorated function as the implementation of ``op_types``."""

    def decorate(fn: OpImpl) -> OpImpl:
        for op_type in op_types:
            if op_type in _REGISTRY:
                raise ValueError(f"op type {op_type!r} registered twice")
            _REGISTRY[op_type] = fn
        return fn

    return decorate


def lookup(op_type: str, op_name: str | None = None) -> OpImpl:
    """Return the implementation of ``op_type``; raise UnsupportedOpError if there is none."""
    try:
        return _REGISTRY[op_type]
    except KeyError:
        raise UnsupportedOpError(op_type, op_name) from None


def supported_ops() -> list[str]:
    """The sorted list of op types the interpreter implements."""
    return sorted(_REGISTRY)


class OpArgs:
    """The evaluated inputs of one op, and a way to run its nested blocks.

    ``args["x"]`` is the value of input ``x``; ``args.get("bias")`` is None when the op has no
    such input; tuple inputs (``concat``'s ``values``) come back as a list.
    """

    def __init__(
        self,
        op: Any,
        values: dict[str, Any],
        run_block: Callable[[Any, list[Any]], list[Any]] | None = None,
    ) -> None:
        self.op = op
        self._values = values
        self._run_block = run_block

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"op {self.op.name!r} ({self.op.op_type}) has no input {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    @property
    def op_type(self) -> str:
        return self.op.op_type

    def run_block(self, block: Any, bound_inputs: list[Any]) -> list[Any]:
        """Run a nested block (control flow) with its inputs bound; return its outputs."""
        if self._run_block is None:
            raise RuntimeError("nested blocks cannot run here")
        return self._run_block(block, bound_inputs)
