"""Deployment targets, one module each (onnx, torchscript_lite, coreml).

Importing this package registers the built-in targets; a missing optional runtime only
disables its own target.
"""

from __future__ import annotations

import importlib
import logging
import sys

from targets.base import TARGETS, Artifact, Level, Runner, Target, get_target, register_target

# Off macOS, coremltools warns at import that its prediction library is missing. That is
# expected here (parity then runs through targets.mil_interpreter), so the import is quiet.
_coremltools_logger = logging.getLogger("coremltools")
_level = _coremltools_logger.level
if sys.platform != "darwin":
    _coremltools_logger.setLevel(logging.ERROR)
try:
    for _module in ("targets.onnx", "targets.torchscript_lite", "targets.coreml"):
        try:
            importlib.import_module(_module)
        except ModuleNotFoundError as error:  # its runtime is not installed
            if error.name not in (_module, "onnxruntime", "coremltools"):
                raise
finally:
    _coremltools_logger.setLevel(_level)

__all__ = ["TARGETS", "Artifact", "Level", "Runner", "Target", "get_target", "register_target"]
