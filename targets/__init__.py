"""Deployment targets: ``onnx``, ``coreml`` and ``executorch`` (packages), ``torchscript_lite`` (a module).

Importing this package registers the built-in targets; a missing optional runtime only
disables its own target, and ``UNAVAILABLE`` then says how to install it (``get_target``
and the CLI give that fix instead of "unknown target").
"""

from __future__ import annotations

import importlib
import logging
import sys

from targets.base import TARGETS, UNAVAILABLE, Artifact, Runner, Target, get_target, register_target
from targets.inputs import AlphaGraph, Level, SwitchOnce
from targets.library_notices import drop_enum_constant_notice

drop_enum_constant_notice()

# Off macOS, coremltools warns at import that its prediction library is missing. That is
# expected here (parity then runs through targets.coreml.mil_interpreter), so the import is quiet.
_coremltools_logger = logging.getLogger("coremltools")
_level = _coremltools_logger.level
if sys.platform != "darwin":
    _coremltools_logger.setLevel(logging.ERROR)
#: Targets whose runtime is an optional extra: name -> (module, the runtime's package, fix).
_OPTIONAL = {
    "executorch": ("targets.executorch.target", "executorch",
                   "install the executorch extra: pip install '.[executorch]'"),
}
try:
    for _module in ("targets.onnx.target", "targets.torchscript_lite", "targets.coreml.target"):
        try:
            importlib.import_module(_module)
        except ModuleNotFoundError as error:  # its runtime is not installed
            if error.name not in (_module, "onnxruntime", "coremltools"):
                raise
    for _name, (_module, _package, _fix) in _OPTIONAL.items():
        try:
            importlib.import_module(_module)
        except ModuleNotFoundError as error:
            if (error.name or "").partition(".")[0] != _package:
                raise
            UNAVAILABLE[_name] = (f"the {_name} target needs the {_package} package, which is not installed", _fix)
finally:
    _coremltools_logger.setLevel(_level)

__all__ = ["TARGETS", "UNAVAILABLE", "AlphaGraph", "Artifact", "Level", "Runner", "SwitchOnce", "Target", "get_target",
           "register_target"]
