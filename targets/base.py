"""The interface every deployment target implements, and the registry of targets.

A target knows its file format and its runtime; it knows nothing of training. Exporters
never validate and validators never export: ``export_*`` write files, ``load`` returns a
runner that the shared parity harness (``lcs_export.parity``) drives. Adding a target is
adding one module that defines a ``Target`` subclass and calls ``register_target``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from torch import Tensor, nn

from lcs_train.errors import LcsError


@dataclass
class Level:
    """One discrete level to export: a plain module computing the subspace at ``alpha``."""

    alpha: float
    module: nn.Module  # from lcs_train.materialize.materialize_level
    compression: dict[str, Any]  # the real compression: {"sparsity": ..} / {"width": ..} / {"bits": ..}
    stats: dict[str, Any] = field(default_factory=dict)  # parameters, nonzeros, flops


@dataclass
class Artifact:
    """One file (or .mlpackage directory) an export wrote, as the manifest will list it."""

    path: str  # relative to the bundle directory
    kind: str  # "level", "multifunction", "alpha_input", "alpha_weights" / "alpha_predict" (switch-once pair)
    alphas: list[float]  # the levels it serves (one for a level file, several for multifunction)
    details: dict[str, Any] = field(default_factory=dict)  # target facts: opset, function names, notes


class Runner(Protocol):
    """A loaded artifact in its own runtime."""

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        """Logits [N, classes] for float32 NCHW ``images`` at ``alpha``.

        Level artifacts serve only their own alpha(s); alpha-input artifacts any alpha.
        """
        ...


class Target:
    """Base class of a deployment target (subclasses override the three verbs)."""

    name: ClassVar[str] = ""
    #: what validate reports as the runtime that checked an artifact
    runtime: ClassVar[str] = ""

    def export_levels(
        self, levels: list[Level], example: Tensor, directory: Path, options: dict[str, Any]
    ) -> list[Artifact]:
        """Write one artifact per level (or one holding them all) into ``directory``."""
        raise NotImplementedError

    def export_alpha_input(
        self, subspace: nn.Module, example: Tensor, directory: Path, options: dict[str, Any]
    ) -> list[Artifact]:
        """Write the graph(s) that take alpha as a float32 [1] input."""
        raise NotImplementedError

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validate the target's options before any work; raise ``LcsError`` naming a bad one.

        Returns the options to export with. The default accepts them as given.
        """
        return options

    def load(self, directory: Path, artifact: dict[str, Any]) -> Runner:
        """Open a manifest artifact entry of this target for running."""
        raise NotImplementedError

    def describe_runtime(self) -> str:
        """Runtime name and version, recorded with parity results."""
        return self.runtime


def artifact_path(directory: Path, relative: str) -> Path:
    """A file named by a manifest entry, inside ``directory`` and reached through no link.

    Every target joins manifest paths through this, never with ``/`` alone: a manifest is
    untrusted input (``lcs_export.bundle`` explains the rules).
    """
    from lcs_export.bundle import resolve_inside

    return resolve_inside(Path(directory), relative)


def option_value(options: dict[str, Any], name: str, kind: type, flag: str, example: str) -> Any:
    """``options[name]`` as ``kind`` (int, or a finite float), None when absent; a user error
    naming ``flag`` and showing ``example`` when it is not such a number."""
    import math

    value = options.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        converted = kind(value)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        what = "a whole number" if kind is int else "a finite number"
        raise LcsError(f"{flag} {value!r} is not {what}", f"write it as {example}") from None
    return converted


TARGETS: dict[str, type[Target]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: make a target available to the CLI and the validators by name."""
    TARGETS[cls.name] = cls
    return cls


def get_target(name: str) -> Target:
    """The target called ``name`` (importing the built-in ones on first use)."""
    import targets  # noqa: F401  (registers the built-in targets)

    if name not in TARGETS:
        raise LcsError(f"unknown target {name!r}", f"use one of: {', '.join(sorted(TARGETS))}")
    return TARGETS[name]()
