"""The dynamo exporter's torchlib registry, built once per process instead of once per file.

``torch.onnx.export(dynamo=True)`` rebuilds its registry of ATen-to-ONNX translations
(``ONNXRegistry.from_torchlib``: about 2,000 onnxscript functions, each parsed from its source)
on every call: about 0.5 s of the 1.5 to 2 s a small level takes, so a bundle of three levels
and the alpha graphs paid it five times. The registry depends only on the installed torch and
onnxscript and on the opset, so ``shared_torchlib_registry`` builds it once per (opset) and,
while it is active, hands every caller its own shallow copy (the exporter adds our custom
translations to the copy it gets, which must not reach the next export).

This reaches into torch's private exporter (``SYMBOL``). Where a torch release moves or
changes it, ``shared_torchlib_registry`` does nothing and exports are as slow as before,
never wrong; ``tests/test_onnx_registry.py`` fails, naming the symbol, so the next upgrade
notices.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from typing import Any

#: The private torch symbol this module patches, as ``module:attribute``.
SYMBOL = "torch.onnx._internal.exporter._registration:ONNXRegistry.from_torchlib"

_BUILT: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.RLock()
_ACTIVE = 0
_ORIGINAL: Any = None


def registry_class() -> Any:
    """torch's ``ONNXRegistry`` class when it still has what the cache relies on, else None."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return None
    cls = getattr(_registration, "ONNXRegistry", None)
    if cls is None or not isinstance(cls.__dict__.get("from_torchlib"), classmethod):
        return None
    registry = cls()
    if not isinstance(getattr(registry, "functions", None), dict) or not hasattr(registry, "_opset_version"):
        return None
    return cls


def _copy(built: Any) -> Any:
    """A registry the exporter may add to without touching ``built``: every attribute shared,
    but the table of translations (what ``register_op`` appends to) copied down to its lists."""
    registry = copy.copy(built)
    registry.functions = {target: list(decompositions) for target, decompositions in built.functions.items()}
    return registry


@contextlib.contextmanager
def shared_torchlib_registry() -> Iterator[bool]:
    """While active, ``ONNXRegistry.from_torchlib`` returns a copy of a registry built once per
    set of arguments. Yields whether the cache is in effect (False: torch's internals changed,
    and exports build their registry as torch does). Re-entrant and safe across threads."""
    global _ACTIVE, _ORIGINAL
    cls = registry_class()
    if cls is None:
        yield False
        return
    with _LOCK:
        if _ACTIVE == 0:
            _ORIGINAL = cls.__dict__["from_torchlib"]
            build = _ORIGINAL.__func__

            def from_torchlib_once(owner: type, *args: Any, **kwargs: Any) -> Any:
                key = (owner, args, tuple(sorted(kwargs.items())))
                with _LOCK:
                    if key not in _BUILT:
                        _BUILT[key] = build(owner, *args, **kwargs)
                    return _copy(_BUILT[key])

            cls.from_torchlib = classmethod(from_torchlib_once)
        _ACTIVE += 1
    try:
        yield True
    finally:
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0:
                cls.from_torchlib = _ORIGINAL
