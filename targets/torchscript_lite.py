"""TorchScript Lite target: ``.ptl`` files for PyTorch Mobile's lite interpreter.

Each level is the materialised module traced with ``torch.jit.trace`` and written with
``_save_for_lite_interpreter``; quantized levels keep their uint8 weight codes as buffers,
dequantized in the graph. The alpha-input file is the traced ``AlphaGraph.module``:
``forward(input, alpha)`` with alpha float32 [1], clamped to the trained range in the graph.

``torch.utils.mobile_optimizer.optimize_for_mobile`` is tried on every module; wheels built
without XNNPACK (these CPU wheels) raise, and the plain traced module is saved instead, with
``{"optimize_for_mobile": false, "note": ...}`` in the artifact's details. The Lite Interpreter
is deprecated upstream in favour of ExecuTorch; its deprecation warnings are silenced here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lcs_train.errors import LcsError
from targets.base import ALPHA_INPUT, LEVELS, Artifact, NoOptions, Target, artifact_path, register_target
from targets.inputs import AlphaGraph, Level

ALPHA_TOLERANCE = 1e-6


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence tracer and lite-interpreter deprecation warnings for one export or load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _optimize(traced: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """optimize_for_mobile when this torch build supports it, else the module unchanged."""
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        return optimize_for_mobile(traced), {"optimize_for_mobile": True}
    except Exception as error:  # noqa: BLE001 (any failure means: save unoptimised)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return traced, {
            "optimize_for_mobile": False,
            "note": f"optimize_for_mobile raised ({first_line[:160]}); saved the traced module "
                    "unoptimised (this torch build lacks XNNPACK)",
        }


def _save(module: nn.Module, example: tuple[Tensor, ...], path: Path) -> dict[str, Any]:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        optimized, details = _optimize(traced)
        optimized._save_for_lite_interpreter(str(path))
    return details


def _load(path: Path) -> Any:
    from torch.jit.mobile import _load_for_lite_interpreter

    with _quiet():
        return _load_for_lite_interpreter(str(path))


class LiteLevelRunner:
    """One level file: runs only at its own alpha."""

    def __init__(self, path: Path, alpha: float) -> None:
        self.module, self.alpha, self.path = _load(path), alpha, path

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        if abs(float(alpha) - self.alpha) > ALPHA_TOLERANCE:
            raise LcsError(
                f"{self.path.name} is the level at alpha {self.alpha:g}; it cannot run alpha {alpha:g}",
                "load the level file of that alpha, or the alpha-input artifact",
            )
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(images, np.float32))).numpy()


class LiteAlphaInputRunner:
    """The alpha-input file: alpha fed with every call."""

    def __init__(self, path: Path) -> None:
        self.module = _load(path)

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        with torch.no_grad():
            inputs = torch.from_numpy(np.ascontiguousarray(images, np.float32))
            return self.module(inputs, torch.tensor([alpha], dtype=torch.float32)).numpy()


@register_target
class TorchScriptLiteTarget(Target):
    """.ptl files for the PyTorch Mobile lite interpreter."""

    name = "torchscript-lite"
    runtime = f"torch lite interpreter {torch.__version__}"
    Options = NoOptions
    capabilities = frozenset({LEVELS, ALPHA_INPUT})

    def export_levels(self, levels: list[Level], example: Tensor, directory: Path, options: NoOptions) -> list[Artifact]:
        """One traced .ptl per level."""
        artifacts = []
        for level in levels:
            path = Path(directory) / f"level_alpha_{level.alpha:.4f}.ptl"
            details = _save(level.module, (example,), path)
            details.update({"alpha": level.alpha, "inputs": ["input"], "outputs": ["logits"], "dynamic_batch": True})
            artifacts.append(Artifact(path.name, "level", [level.alpha], details))
        return artifacts

    def export_alpha_input(self, graph: AlphaGraph, directory: Path, options: NoOptions) -> list[Artifact]:
        """The traced alpha-input module: forward(input, alpha float32 [1]) -> logits."""
        alphas = graph.alphas
        path = Path(directory) / "alpha_input.ptl"
        details = _save(graph.module, (graph.example, torch.zeros(1)), path)
        details.update({
            "mode": "single_graph", "inputs": ["input", "alpha"], "outputs": ["logits"],
            "alpha_clamped_to": alphas,
        })
        usage = ("call forward(input, alpha) with alpha a float32 tensor of shape [1]; the "
                 "compressed weights are recomputed on every call")
        return [Artifact(path.name, "alpha_input", alphas, details, usage=usage)]

    def load(self, directory: Path, artifact: dict[str, Any]) -> Any:
        """A runner for a level file or the alpha-input file."""
        path = artifact_path(directory, artifact["path"])
        if artifact["kind"] == "level":
            return LiteLevelRunner(path, float(artifact["alphas"][0]))
        if artifact["kind"] == "alpha_input":
            return LiteAlphaInputRunner(path)
        raise LcsError(f"the torchscript-lite target cannot load artifact kind {artifact['kind']!r}",
                       "use a manifest written by lcs-export for the torchscript-lite target")
