"""The coremltools internals this package relies on, listed in one place.

coremltools documents ``ct.convert``, ``ct.models``, ``ct.utils`` and ``ct.optimize``; the Core
ML target also uses parts of its MIL layer that carry no stability promise (a private lowering
it patches, a private graph-pass helper, PyMIL builder ops and type helpers, the milproto
loader). Every one of them is named in ``PRIVATE_API`` and reached through ``private``, so a
coremltools upgrade that drops or moves one fails in ``tests/test_coreml_private_api.py``
naming the symbol, instead of deep inside a conversion. pyproject.toml pins coremltools to
``PINNED`` (the release these were checked against); widen the pin only after that test
passes against the new release.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The coremltools requirement in pyproject.toml. 9.0 is the release every symbol below was
#: checked against; minor releases have moved MIL internals before (``_group_norm_impl``'s
#: signature is what ``convert._flexible_batch_group_norm`` replaces), hence the upper bound.
PINNED = "coremltools>=9.0,<9.1"

#: ``module:attribute[.attribute...]`` of every non-public coremltools symbol used here.
PRIVATE_API: tuple[str, ...] = (
    # convert.py: the GroupNorm lowering swapped for one with a flexible batch; its helpers
    "coremltools.converters.mil.frontend.torch:ops",
    "coremltools.converters.mil.frontend.torch.ops:_group_norm_impl",
    "coremltools.converters.mil.mil.types.symbolic:any_symbolic",
    # convert.py: modules whose tqdm progress bars are silenced during a conversion
    "coremltools.converters.mil.mil.passes:pass_pipeline",
    # the PyMIL builder (convert.py's lowering, weights.py's compressed-weight ops)
    "coremltools.converters.mil:Builder",
    "coremltools.converters.mil:Builder.reshape",
    "coremltools.converters.mil:Builder.constexpr_sparse_to_dense",
    "coremltools.converters.mil:Builder.constexpr_blockwise_shift_scale",
    "coremltools.converters.mil:Builder.constexpr_affine_dequantize",
    # weights.py: a graph pass applied to a converted model, editing its blocks
    "coremltools.models.utils:_apply_graph_pass",
    "coremltools.converters.mil.converter:mil_convert",
    "coremltools.converters.mil.mil.passes.graph_pass:AbstractGraphPass",
    "coremltools.converters.mil.mil:Block.replace_uses_of_var_after_op",
    "coremltools.converters.mil.mil:Block.remove_ops",
    # weights.py and mil_interpreter/dtypes.py: MIL types and sub-byte NumPy dtypes
    "coremltools.converters.mil.mil:types",
    "coremltools.converters.mil.mil.types:np_uint1_dtype",
    "coremltools.converters.mil.mil.types:np_uint4_dtype",
    "coremltools.converters.mil.mil.types:SUB_BYTE_DTYPE_METADATA_KEY",
    "coremltools.converters.mil.mil.types:builtin_to_string",
    "coremltools.converters.mil.mil.types:nptype_from_builtin",
    "coremltools.converters.mil.mil.types:is_tensor",
    "coremltools.converters.mil.mil.types:is_scalar",
    "coremltools.converters.mil.mil.types:str",
    # mil_interpreter/program.py: a saved ML program read back into PyMIL
    "coremltools.converters.mil.mil:Program",
    "coremltools.converters.mil.frontend.milproto.load:load",
)


class PrivateApiMissing(ImportError):
    """A symbol of ``PRIVATE_API`` is not in the installed coremltools."""


def private(symbol: str) -> Any:
    """The object ``symbol`` (an entry of ``PRIVATE_API``) names; ``PrivateApiMissing`` naming
    it and the pin when the installed coremltools lacks it."""
    if symbol not in PRIVATE_API:
        raise KeyError(f"{symbol} is not listed in targets.coreml.private_api.PRIVATE_API")
    module_name, _, path = symbol.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for name in path.split("."):
            value = getattr(value, name)
    except (ImportError, AttributeError) as error:
        try:
            version = importlib.import_module("coremltools").__version__
        except ImportError:
            version = "not installed"
        raise PrivateApiMissing(
            f"coremltools {version} has no {symbol} ({error}); the Core ML target was written against "
            f"{PINNED}: install that version, or adapt targets/coreml to the new release"
        ) from error
    return value


def missing_private_api() -> list[str]:
    """The messages of every ``PRIVATE_API`` symbol the installed coremltools lacks (empty: all there)."""
    missing = []
    for symbol in PRIVATE_API:
        try:
            private(symbol)
        except PrivateApiMissing as error:
            missing.append(str(error))
    return missing
