"""The Core ML export options, parsed and checked once, with a fix for every bad value.

Default minimum target: iOS18. It runs on exactly the devices iOS17 runs on (iPhone XS/XR and
later), and it is the first target with what a compressible subspace needs from Core ML:
multifunction packages, 4-bit weight storage (``constexpr_blockwise_shift_scale`` over uint4)
and sparse functions that ``save_multifunction`` accepts. iOS16/17 remain available for
apps that must load on older OS versions; they then store weights as sparse or 8-bit only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lcs_train.errors import LcsError
from targets.base import option, option_value

#: Minimum deployment targets this exporter writes; ML programs start at iOS15, the
#: compressed-weight ops (constexpr_*) at iOS16.
MINIMUM_TARGETS = ("iOS16", "iOS17", "iOS18")
DEFAULT_MINIMUM_TARGET = "iOS18"
PRECISIONS = ("float32", "float16")
COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")
#: Largest batch a level or alpha-input program accepts (the batch dimension is flexible).
MAX_BATCH = 256


@dataclass(frozen=True)
class CoreMLOptions:
    """What a Core ML export was asked for, validated (``parse_options``); the CLI's flags."""

    minimum_target: str = option(DEFAULT_MINIMUM_TARGET, "minimum deployment target, e.g. iOS17 or iOS18")
    compute_precision: str = option("float32", "float32 or float16")
    multifunction: bool = option(False, "also write one multifunction .mlpackage holding every level")
    compute_units: str = option("CPU_ONLY", f"the model's compute units: {', '.join(COMPUTE_UNITS)}", flag=False)
    max_batch: int = option(MAX_BATCH, "largest batch a program accepts (the batch dimension is flexible)",
                            flag=False)

    @property
    def target_version(self) -> int:
        """16, 17 or 18: the iOS version number, for comparisons."""
        return int(self.minimum_target[3:])

    def coreml_target(self) -> Any:
        """The ``coremltools.target`` member."""
        import coremltools as ct

        return getattr(ct.target, self.minimum_target)

    def coreml_precision(self) -> Any:
        """The ``coremltools.precision`` member."""
        import coremltools as ct

        return ct.precision.FLOAT16 if self.compute_precision == "float16" else ct.precision.FLOAT32

    def require_ios18(self, feature: str) -> None:
        """Raise a user error when ``feature`` needs iOS18 and the target is older."""
        if self.target_version < 18:
            raise LcsError(
                f"{feature} needs minimum deployment target iOS18, but {self.minimum_target} was asked for",
                "pass --minimum-target iOS18 (it runs on the same devices as iOS17)",
            )


def parse_options(options: dict[str, Any] | None) -> CoreMLOptions:
    """Validate the target's options dict (CLI values, None meaning 'default')."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    target = _one_of("minimum target", str(options.get("minimum_target", DEFAULT_MINIMUM_TARGET)),
                     MINIMUM_TARGETS, "--minimum-target")
    precision = _one_of("compute precision", str(options.get("compute_precision", "float32")).lower(),
                        PRECISIONS, "--compute-precision")
    units = _one_of("compute units", str(options.get("compute_units", "CPU_ONLY")).upper(),
                    COMPUTE_UNITS, "--option compute_units=...")
    multifunction = _boolean(options.get("multifunction", False))
    max_batch = option_value(options, "max_batch", int, "--option max_batch", "--option max_batch=256")
    max_batch = MAX_BATCH if max_batch is None else max_batch
    if not 1 <= max_batch <= 1 << 20:
        raise LcsError(f"max_batch must be between 1 and {1 << 20}, got {max_batch}", "pass --option max_batch=256")
    parsed = CoreMLOptions(target, precision, multifunction, units, max_batch)
    if multifunction:
        parsed.require_ios18("a multifunction package (one function per level)")
    return parsed


def _one_of(what: str, value: str, allowed: tuple[str, ...], flag: str) -> str:
    # Accept any capitalisation of the target names ("ios17", "IOS17").
    for candidate in allowed:
        if candidate.lower() == value.lower():
            return candidate
    raise LcsError(f"unknown {what} {value!r}", f"pass {flag} with one of: {', '.join(allowed)}")


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise LcsError(f"multifunction must be true or false, got {value!r}", "pass --multifunction or omit it")
    return bool(value)
