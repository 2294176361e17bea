"""The interface every deployment target implements, and the registry of targets.

A target knows its file format and its runtime; it knows nothing of training. Exporters
never validate and validators never export: ``export_*`` write files, ``load`` returns a
runner that the shared parity harness (``lcs_export.parity``) drives. What a target converts
(``Level``, ``AlphaGraph``: ``targets.inputs``) is built once by ``lcs_export.export``.

A target declares, as class attributes:

- ``name`` (its CLI command) and ``runtime`` (what validate reports);
- ``Options``: a frozen dataclass of its options. Each field's metadata (see ``option``)
  carries its help text and whether it gets a flag of its own (``--opset``); every field can
  also be given as ``--option KEY=VALUE``. The CLI's flags are generated from it;
- ``capabilities``: which of ``CAPABILITIES`` it implements. The exporter refuses a request
  that needs one the target lacks before any work ("target X does not support --dynamic-alpha").

Adding a target is adding one module (or package) that defines a ``Target`` subclass with
``@register_target``, and naming it in ``targets/__init__.py``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from torch import Tensor

from lcs_train.errors import LcsError
from lcs_train.safe_paths import resolve_inside
from targets.inputs import AlphaGraph, Level

#: Writes one artifact per level (``export_levels``); the CLI's ``--levels``.
LEVELS = "levels"
#: Writes the graph that takes alpha as an input (``export_alpha_input``); ``--dynamic-alpha``.
ALPHA_INPUT = "alpha_input"
#: Also writes the switch-once pair from ``AlphaGraph.switch_once`` (the exporter builds it only then).
SWITCH_ONCE = "switch_once"
#: Can write one artifact holding every level (kind ``multifunction``).
MULTIFUNCTION = "multifunction"
CAPABILITIES = frozenset({LEVELS, ALPHA_INPUT, SWITCH_ONCE, MULTIFUNCTION})


@dataclass
class Artifact:
    """One file (or .mlpackage directory) an export wrote, as the manifest will list it."""

    path: str  # relative to the bundle directory
    kind: str  # "level", "multifunction", "alpha_input", "alpha_weights" / "alpha_predict" (switch-once pair)
    alphas: list[float]  # the levels it serves (one for a level file, several for multifunction)
    details: dict[str, Any] = field(default_factory=dict)  # target facts: opset, function names, notes
    usage: str | None = None  # how a host uses it, in the target's words (None: the kind's default)


class Runner(Protocol):
    """A loaded artifact in its own runtime."""

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        """Logits [N, classes] for float32 NCHW ``images`` at ``alpha``.

        Level artifacts serve only their own alpha(s); alpha-input artifacts any alpha.
        """
        ...


# --- options ----------------------------------------------------------------------------------


def option(default: Any, help: str, flag: bool = True) -> Any:  # noqa: A002 (the CLI's word)
    """A field of a target's ``Options`` dataclass: ``help`` for the CLI; ``flag``: whether it
    gets a flag of its own (``--compute-precision``) or is given only as ``--option KEY=VALUE``."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class NoOptions:
    """The options of a target that takes none."""


@dataclass(frozen=True)
class OptionSpec:
    """One declared option, as the CLI reads it from an ``Options`` dataclass."""

    name: str
    type: type  # bool, int, float or str
    help: str
    flag: bool


def option_specs(options_class: type) -> list[OptionSpec]:
    """The declared options of an ``Options`` dataclass, in field order."""
    hints = typing.get_type_hints(options_class)
    specs = []
    for item in dataclasses.fields(options_class):
        kinds = [k for k in typing.get_args(hints[item.name]) if k is not type(None)] or [hints[item.name]]
        if len(kinds) != 1 or kinds[0] not in (bool, int, float, str):
            raise TypeError(f"{options_class.__name__}.{item.name}: an option is a bool, int, float or str")
        specs.append(OptionSpec(item.name, kinds[0], item.metadata.get("help", ""), item.metadata.get("flag", True)))
    return specs


def parse_declared(options_class: type, values: Mapping[str, Any], **parsed: Any) -> Any:
    """``options_class`` from a request's options dict: every declared field not in ``parsed``
    read from ``values`` (absent or None: the default) and checked against its type; keys it
    does not declare are left alone (the manifest records them)."""
    for spec in option_specs(options_class):
        if spec.name in parsed or values.get(spec.name) is None:
            continue
        given = "--" + spec.name.replace("_", "-") if spec.flag else f"--option {spec.name}"
        if spec.type is bool:
            parsed[spec.name] = switch_value(values, spec.name, True)
        elif spec.type in (int, float):
            parsed[spec.name] = option_value(values, spec.name, spec.type, given, f"{given} 1")
        else:
            parsed[spec.name] = str(values[spec.name])
    return options_class(**parsed)


def option_value(options: Mapping[str, Any], name: str, kind: type, flag: str, example: str) -> Any:
    """``options[name]`` as ``kind`` (int, or a finite float), None when absent; a user error
    naming ``flag`` and showing ``example`` when it is not such a number."""
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


def switch_value(options: Mapping[str, Any], name: str, default: bool) -> bool:
    """``options[name]`` as a bool (``default`` when absent); a user error unless it is one."""
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise LcsError(f"--option {name}={value!r} is not true or false",
                       f"write --option {name}=true or --option {name}=false")
    return value


# --- the interface ---------------------------------------------------------------------------


class Target:
    """Base class of a deployment target: declare ``name``, ``runtime``, ``Options`` and
    ``capabilities``, and implement the verbs the capabilities name, and ``load``."""

    name: ClassVar[str] = ""
    #: what validate reports as the runtime that checked an artifact
    runtime: ClassVar[str] = ""
    #: the target's options (a frozen dataclass; fields made with ``option``)
    Options: ClassVar[type] = NoOptions
    #: which of ``CAPABILITIES`` this target implements
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def parse_options(self, values: Mapping[str, Any]) -> Any:
        """The target's ``Options`` from a request's KEY=VALUE options, checked before any work;
        ``LcsError`` naming a bad one. Keys the target does not declare are ignored here."""
        return parse_declared(self.Options, values)

    def export_levels(self, levels: list[Level], example: Tensor, directory: Path, options: Any) -> list[Artifact]:
        """(``levels``) Write one artifact per level (or one holding them all) into ``directory``."""
        raise NotImplementedError(f"target {self.name} declares {LEVELS!r} but does not implement export_levels")

    def export_alpha_input(self, graph: AlphaGraph, directory: Path, options: Any) -> list[Artifact]:
        """(``alpha_input``) Write the graph(s) that take alpha as a float32 [1] input."""
        raise NotImplementedError(f"target {self.name} declares {ALPHA_INPUT!r} but does not implement "
                                  "export_alpha_input")

    def load(self, directory: Path, artifact: dict[str, Any]) -> Runner:
        """Open a manifest artifact entry of this target for running."""
        raise NotImplementedError

    def describe_runtime(self) -> str:
        """Runtime name and version, recorded with parity results."""
        return self.runtime


def artifact_path(directory: Path, relative: str) -> Path:
    """A file named by a manifest entry, inside ``directory`` and reached through no link.

    Every target joins manifest paths through this, never with ``/`` alone: a manifest is
    untrusted input (``lcs_train.safe_paths`` explains the rules).
    """
    return resolve_inside(Path(directory), relative)


TARGETS: dict[str, type[Target]] = {}
#: Built-in targets whose runtime is not installed here: name -> (what is missing, the fix).
UNAVAILABLE: dict[str, tuple[str, str]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: make a target available to the CLI and the validators by name.

    Checks the declaration: a name, known capabilities, an ``Options`` dataclass of plain
    option types, and the verb of every declared capability implemented.
    """
    unknown = cls.capabilities - CAPABILITIES
    if not cls.name or unknown or not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"target {cls.__name__}: needs a name, an Options dataclass and capabilities from "
                        f"{sorted(CAPABILITIES)} (unknown: {sorted(unknown)})")
    option_specs(cls.Options)
    for capability, verb in ((LEVELS, "export_levels"), (ALPHA_INPUT, "export_alpha_input")):
        if capability in cls.capabilities and getattr(cls, verb) is getattr(Target, verb):
            raise TypeError(f"target {cls.name} declares {capability!r} but does not implement {verb}")
    TARGETS[cls.name] = cls
    return cls


def get_target(name: str) -> Target:
    """The target called ``name`` (importing the built-in ones on first use)."""
    import targets  # noqa: F401  (registers the built-in targets)

    if name in UNAVAILABLE and name not in TARGETS:
        raise LcsError(*UNAVAILABLE[name])
    if name not in TARGETS:
        raise LcsError(f"unknown target {name!r}", f"use one of: {', '.join(sorted(TARGETS))}")
    return TARGETS[name]()
