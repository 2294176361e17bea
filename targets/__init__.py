"""Deployment targets, one module each (onnx, torchscript_lite, coreml).

Importing this package registers the built-in targets; a missing optional runtime only
disables its own target.
"""

from __future__ import annotations

import importlib

from targets.base import TARGETS, Artifact, Level, Runner, Target, get_target, register_target

for _module in ("targets.onnx", "targets.torchscript_lite", "targets.coreml"):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as error:  # not yet written, or its runtime is not installed
        if error.name not in (_module, "onnxruntime", "coremltools"):
            raise

__all__ = ["TARGETS", "Artifact", "Level", "Runner", "Target", "get_target", "register_target"]
