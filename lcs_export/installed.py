"""The target of a bundle, refused with the package to install when its runtime is missing.

``targets/__init__.py`` registers only the targets whose runtime imports (a missing
onnxruntime disables the ``onnx`` target and nothing else), so a bundle whose target is not
registered here needs a package, not a different bundle.
"""

from __future__ import annotations

from importlib import metadata

from lcs_train.errors import LcsError
from targets.base import TARGETS, UNAVAILABLE, Target, get_target

#: The package that brings each known target's runtime.
RUNTIME_PACKAGES = {
    "onnx": "onnxruntime",
    "coreml": "coremltools",
    "torchscript-lite": "torch",
    "executorch": "executorch",
}


def _extras() -> list[str]:
    """The optional extras of the installed ``lcs`` distribution (none when run from a checkout)."""
    try:
        return list(metadata.metadata("lcs").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:
        return []


def install_hint(target_name: str) -> str:
    """How to install the runtime of ``target_name``: lcs's extra of that name when it has
    one, else the runtime's own package."""
    if target_name in _extras():
        return f"pip install '.[{target_name}]' in the lcs checkout"
    return f"pip install {RUNTIME_PACKAGES.get(target_name, target_name)}"


def installed_target(target_name: str, bundle: str) -> Target:
    """The target that runs ``bundle`` (whose manifest names ``target_name``)."""
    import targets  # noqa: F401  (registers the targets whose runtime is installed)

    if target_name not in TARGETS:
        if target_name in UNAVAILABLE:  # an optional extra of lcs: the registry says how to get it
            message, fix = UNAVAILABLE[target_name]
            raise LcsError(f"{bundle} is a {target_name} bundle, and {message}",
                           f"{fix}, or use a bundle of another target")
        if target_name in RUNTIME_PACKAGES:
            raise LcsError(f"{bundle} is a {target_name} bundle, and the {target_name} runtime "
                           f"({RUNTIME_PACKAGES[target_name]}) is not installed here",
                           f"install it ({install_hint(target_name)}), or use a bundle of another target")
        raise LcsError(f"{bundle} is for target {target_name!r}, which this lcs does not know",
                       f"use a bundle of one of: {', '.join(sorted(TARGETS))}")
    return get_target(target_name)
