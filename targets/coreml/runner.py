"""Running a saved Core ML package: Core ML itself on macOS, the MIL interpreter elsewhere.

Core ML prediction exists only on macOS. Everywhere else the package is executed with
``targets.coreml.mil_interpreter`` from the saved files (fp16 programs computed op by op in fp16),
so a bundle is checked from what was written, not from the PyTorch that wrote it. The
runner says which path it took in ``path_used``, for the manifest.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from lcs_train.errors import LcsError
from targets.coreml.convert import OUTPUT_NAME, quiet_coremltools

COREML_PREDICT = "coreml-predict"
MIL_INTERPRETER = "mil-interpreter"


def coreml_prediction_available() -> bool:
    """True on macOS with coremltools' native prediction library importable."""
    if sys.platform != "darwin":
        return False
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError:
        return False
    return True


class CoreMLRunner:
    """A level, multifunction or alpha-input package, ready to run at an alpha.

    ``functions`` maps each served alpha to its function name (multifunction packages);
    ``alpha_input`` feeds alpha as the float32 [1] input ``alpha``.
    """

    def __init__(
        self,
        path: Path,
        *,
        alphas: list[float],
        functions: dict[float, str] | None = None,
        alpha_input: bool = False,
        max_batch: int = 256,
        compute_units: str = "CPU_ONLY",
        prefer: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.alphas = list(alphas)
        self.functions = dict(functions or {})
        self.alpha_input = alpha_input
        self.max_batch = max_batch
        self.compute_units = compute_units
        use_coreml = coreml_prediction_available() if prefer is None else prefer == COREML_PREDICT
        self.path_used = COREML_PREDICT if use_coreml else MIL_INTERPRETER
        self._models: dict[str | None, Any] = {}
        self._program = None if use_coreml else _load_interpreted(self.path, self._function_names())

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        """Logits [N, classes] for float32 NCHW ``images`` at ``alpha``."""
        function = self._function_for(alpha)
        images = np.ascontiguousarray(images, dtype=np.float32)
        outputs = [
            self._run_batch(images[start:start + self.max_batch], alpha, function)
            for start in range(0, len(images), self.max_batch)
        ]
        return np.concatenate(outputs).astype(np.float32)

    def _run_batch(self, images: np.ndarray, alpha: float, function: str | None) -> np.ndarray:
        feed: dict[str, np.ndarray] = {"input": images}
        if self.alpha_input:
            feed["alpha"] = np.array([alpha], dtype=np.float32)
        if self._program is not None:
            from targets.coreml.mil_interpreter import run_program

            return run_program(self._program, feed, function_name=function)[OUTPUT_NAME]
        return np.asarray(self._coreml_model(function).predict(feed)[OUTPUT_NAME])

    def _coreml_model(self, function: str | None) -> Any:
        if function not in self._models:
            with quiet_coremltools() as ct:
                self._models[function] = ct.models.MLModel(
                    str(self.path), compute_units=getattr(ct.ComputeUnit, self.compute_units),
                    function_name=function,
                )
        return self._models[function]

    def _function_names(self) -> list[str | None]:
        return list(self.functions.values()) or [None]

    def _function_for(self, alpha: float) -> str | None:
        if self.alpha_input:
            return None
        for served, function in self.functions.items():
            if abs(served - alpha) < 1e-6:
                return function
        if not self.functions and any(abs(a - alpha) < 1e-6 for a in self.alphas):
            return None
        raise LcsError(
            f"{self.path.name} serves alpha {', '.join(f'{a:g}' for a in self.alphas)}, not {alpha:g}",
            "run a level package at its own alpha, or use the alpha-input package",
        )


def _load_interpreted(path: Path, functions: list[str | None]) -> Any:
    """Parse the package once and reject it up front if it uses an op with no interpreter."""
    from targets.coreml.mil_interpreter import MilInterpreterError, UnsupportedOpError, load_program

    try:
        program = load_program(path)
        for function in functions:
            program.check_supported(function)
    except UnsupportedOpError as error:
        raise LcsError(
            f"{path.name} uses the Core ML op {error.op_type!r}, which the MIL interpreter cannot run "
            "(Core ML prediction itself needs macOS)",
            f"validate on macOS, or add {error.op_type!r} to targets/coreml/mil_interpreter/ops/",
        ) from error
    except MilInterpreterError as error:
        raise LcsError(f"cannot read Core ML package {path}: {error}", "export the bundle again") from error
    return program
