"""Running a saved ``.pte`` through ``executorch.runtime``, as an app on a device would.

The runtime reports a failed load as a bare error code ("error: 0x:20"); the reason (a
missing kernel, an unregistered backend, a bad file header) goes to its log. Loads are therefore run with that descriptor captured, and a failure becomes
one ``LcsError`` quoting the runtime's own reason. The capture also keeps the runtime's
start-up chatter (CPU probing) out of the terminal.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lcs_train.errors import LcsError

ALPHA_TOLERANCE = 1e-6
#: Runtime log lines that say why a program or method could not load, by kind.
_REASONS = {
    "kernel": re.compile(r"Missing operator: \[\d+\] (\S+)"),
    "backend": re.compile(r"Backend (\S+) is not registered"),
    "file": re.compile(r"\] (Program identifier .*|File size is too small.*)"),
}
REEXPORT = "export it again with lcs-export executorch (the file may be truncated, tampered with or from another tool)"


@contextlib.contextmanager
def runtime_log() -> Iterator[list[str]]:
    """Capture what the runtime logs while the block runs; the list it yields holds those
    lines once the block has ended. The log reaches both Python's ``sys.stderr`` (where the
    bindings print it when that is not file descriptor 2, as under pytest) and descriptor 2."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    printed = io.StringIO()
    try:
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 2)
            try:
                with contextlib.redirect_stderr(printed):
                    yield lines
            finally:
                os.dup2(saved, 2)
                log.seek(0)
                lines.extend(log.read().decode("utf-8", "replace").splitlines())
                lines.extend(printed.getvalue().splitlines())
    finally:
        os.close(saved)


def _reasons(lines: list[str]) -> dict[str, list[str]]:
    """The reasons ``lines`` give, by kind (``_REASONS``), each once."""
    found: dict[str, list[str]] = {kind: [] for kind in _REASONS}
    for line in lines:
        for kind, pattern in _REASONS.items():
            match = pattern.search(line)
            if match and match.group(1) not in found[kind]:
                found[kind].append(match.group(1))
    return found


class ExecuTorchRunner:
    """One ``.pte``: a level, the multi-method program (``methods``: alpha -> method name) or
    the alpha-input program (alpha fed as a float32 [1] input)."""

    def __init__(self, path: Path, *, alphas: list[float], methods: dict[float, str] | None = None,
                 alpha_input: bool = False, max_batch: int = 32) -> None:
        from executorch.runtime import Runtime

        self.path, self.alphas, self.alpha_input = Path(path), list(alphas), alpha_input
        self.methods = dict(methods or {})
        self.max_batch = max(1, int(max_batch))
        self._runtime = Runtime.get()
        try:
            with runtime_log() as lines:
                self._program = self._runtime.load_program(self.path)
        except RuntimeError as error:
            reason = "; ".join(_reasons(lines)["file"]) or str(error)
            raise LcsError(f"{self.path.name} is not an ExecuTorch program this runtime can read ({reason})",
                           REEXPORT) from None
        self._loaded: dict[str, Any] = {}

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        """Logits [N, classes] for float32 NCHW ``images`` at ``alpha``, in batches of at most
        ``max_batch`` (the largest batch the program was exported for)."""
        method = self._method(self._method_name(alpha))
        images = np.ascontiguousarray(images, dtype=np.float32)
        outputs = []
        for start in range(0, len(images), self.max_batch):
            inputs: list[torch.Tensor] = [torch.from_numpy(images[start:start + self.max_batch])]
            if self.alpha_input:
                inputs.append(torch.tensor([alpha], dtype=torch.float32))
            try:
                with runtime_log() as lines:
                    outputs.append(method.execute(inputs)[0].numpy())
            except RuntimeError as error:
                said = "; ".join(line.partition("] ")[2] or line for line in lines[-2:]) or str(error)
                raise LcsError(f"{self.path.name} failed to run a batch of {len(inputs[0])} ({said})",
                               f"run batches of at most {self.max_batch} images (its max_batch)") from None
        return np.concatenate(outputs).astype(np.float32)

    def _method_name(self, alpha: float) -> str:
        if self.alpha_input:
            return "forward"
        for served, name in self.methods.items():
            if abs(served - alpha) < ALPHA_TOLERANCE:
                return name
        if not self.methods and any(abs(a - alpha) < ALPHA_TOLERANCE for a in self.alphas):
            return "forward"
        raise LcsError(f"{self.path.name} serves alpha {', '.join(f'{a:g}' for a in self.alphas)}, not {alpha:g}",
                       "run a level program at its own alpha, or use the alpha-input program")

    def _method(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._program.method_names:
            raise LcsError(f"{self.path.name} has no method {name!r} (it has {', '.join(sorted(self._program.method_names))})",
                           REEXPORT)
        try:
            with runtime_log() as lines:
                self._loaded[name] = self._program.load_method(name)
        except RuntimeError as error:
            raise self._load_error(name, lines, error) from None
        return self._loaded[name]

    def _load_error(self, name: str, lines: list[str], error: RuntimeError) -> LcsError:
        backends = self._runtime.backend_registry.registered_backend_names
        reasons = _reasons(lines)
        missing_backend, missing_kernel = reasons["backend"], reasons["kernel"]
        if missing_backend:
            return LcsError(
                f"method {name!r} of {self.path.name} is delegated to the ExecuTorch backend "
                f"{', '.join(missing_backend)}, which this host's runtime lacks (it has: {', '.join(backends)})",
                "run it on a device whose ExecuTorch runtime links that backend, or export again for one this "
                "host has (lcs-export executorch delegates to XnnpackBackend)")
        if missing_kernel:
            return LcsError(
                f"method {name!r} of {self.path.name} needs the kernel(s) {', '.join(missing_kernel)}, which "
                "this ExecuTorch runtime does not link", "link those kernels into the runtime, or export again "
                "with lcs-export executorch (it writes only ops the portable kernels or XNNPACK run)")
        return LcsError(f"method {name!r} of {self.path.name} could not be loaded ({error})", REEXPORT)
