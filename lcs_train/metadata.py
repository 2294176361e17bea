"""What a checkpoint's metadata may hold: a JSON Schema for its types and ranges, plus the
checks a schema cannot express (fields that must agree with each other and with the tensors).

The sha256 in a checkpoint proves only that nobody edited the file *without recomputing it*;
anyone can recompute it. So every field that code downstream relies on (class count, input
shape, alpha range, format version, ...) is validated here before it is used, and every
refusal names the field.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import jsonschema
from torch import Tensor

from lcs_train.errors import LcsError

FORMAT = "lcs-subspace"
#: The newest format this lcs reads and writes. 1: GroupNorm / InstanceNorm subspaces.
#: 2: also kept BatchNorms (``norm`` "batch"), whose tensors include per-level statistics
#: tables (``level_mean`` / ``level_var``) that an lcs reading only format 1 cannot use.
FORMAT_VERSION = 2
#: The format that first holds each normalisation; a file is written with the oldest format
#: that holds what it holds (``format_version_for``), so older lcs versions keep reading
#: every file they can, and refuse the rest with "upgrade lcs".
NORM_FORMAT_VERSIONS = {"group": 1, "instance": 1, "batch": 2}

#: Input shape [C, H, W] and class count of each dataset a checkpoint can name (None: the
#: data decides; an ImageFolder tree has its own classes and ``data.image_size``).
DATASET_FACTS: dict[str, dict[str, Any]] = {
    "mnist": {"input": [1, 28, 28], "classes": 10},
    "digits": {"input": [1, 8, 8], "classes": 10},
    "cifar10": {"input": [3, 32, 32], "classes": 10},
    "cifar100": {"input": [3, 32, 32], "classes": 100},
    "imagefolder": {"input": None, "classes": None},
}

_NUMBER = {"type": "number"}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}
_ALPHA_OR_NULL = {"anyOf": [{"type": "null"}, _UNIT]}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "lcs subspace checkpoint metadata",
    "type": "object",
    "required": [
        "format", "format_version", "model", "method", "shape", "norm", "alpha", "input", "classes",
        "data", "activation_quantization", "training", "epoch", "complete", "history", "content_sha256",
    ],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "minimum": 1},
        "model": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {
                "name": {"type": "string"},  # completed from the model registry by _validator
                "arguments": {
                    "type": "object",
                    "required": ["in_channels", "num_classes"],
                    "additionalProperties": False,
                    "properties": {
                        "in_channels": {"type": "integer", "minimum": 1, "maximum": 64},
                        "num_classes": {"type": "integer", "minimum": 2, "maximum": 100_000},
                    },
                },
            },
        },
        "method": {"type": "object", "required": ["name"]},  # completed per method by _method_schema
        "shape": {"enum": ["line", "point"]},
        "norm": {"enum": sorted(NORM_FORMAT_VERSIONS)},
        "alpha": {
            "type": "object",
            "required": ["min", "max", "discrete", "fixed"],
            "properties": {
                "min": {"const": 0},
                "max": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "discrete": {"anyOf": [{"type": "null"}, {"type": "array", "items": _UNIT, "minItems": 2, "maxItems": 64}]},
                "fixed": _ALPHA_OR_NULL,
            },
        },
        "input": {
            "type": "object",
            "required": ["shape", "dtype", "layout", "pixel_scale", "mean", "std"],
            "properties": {
                "shape": {
                    "type": "array",
                    "prefixItems": [
                        {"const": 1},
                        {"type": "integer", "minimum": 1, "maximum": 64},
                        {"type": "integer", "minimum": 1, "maximum": 4096},
                        {"type": "integer", "minimum": 1, "maximum": 4096},
                    ],
                    "minItems": 4,
                    "maxItems": 4,
                },
                "dtype": {"const": "float32"},
                "layout": {"const": "NCHW"},
                "pixel_scale": {"type": "number", "exclusiveMinimum": 0},
                "mean": {"type": "array", "items": _NUMBER, "minItems": 1, "maxItems": 64},
                "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1, "maxItems": 64},
            },
        },
        "classes": {"type": "array", "items": {"type": "string", "maxLength": 200}, "minItems": 2, "maxItems": 100_000},
        "data": {
            "type": "object",
            "required": ["dataset", "data_dir"],
            "properties": {
                "dataset": {"enum": sorted(DATASET_FACTS)},
                "data_dir": {"type": ["string", "null"]},
                "image_size": {"type": ["integer", "null"], "minimum": 1, "maximum": 4096},
            },
        },
        "activation_quantization": {"type": "boolean"},
        "training": {"type": "object"},
        "epoch": {"type": "integer", "minimum": 0},
        "complete": {"type": "boolean"},
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["epoch", "loss", "lr", "seconds", "accuracy"],
                "additionalProperties": False,
                "properties": {
                    "epoch": {"type": "integer", "minimum": 1},
                    "loss": _NUMBER,
                    "lr": _NUMBER,
                    "seconds": {"type": "number", "minimum": 0},
                    "accuracy": {"type": "object", "additionalProperties": _UNIT},
                },
            },
        },
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "content_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}

def format_version_for(metadata: dict[str, Any]) -> int:
    """The oldest format that holds a checkpoint with this metadata."""
    return NORM_FORMAT_VERSIONS.get(metadata.get("norm", "group"), FORMAT_VERSION)


def _is_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema counts 10.0 as an integer; a float class count or channel count would reach
    # torch's layer constructors, so only true integers pass.
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.cache
def _validator() -> Any:
    """The metadata validator, with each registered method's own entry (its fields' schema)."""
    from lcs_train.methods import METHODS
    from lcs_train.models import MODELS

    schema = copy.deepcopy(SCHEMA)
    # Built-in names, or torchvision:NAME (whether the installed torchvision knows NAME is
    # checked with the other facts in check_consistency).
    schema["properties"]["model"]["properties"]["name"] = {
        "anyOf": [{"enum": sorted(MODELS)}, {"type": "string", "pattern": "^torchvision:[A-Za-z0-9_]{1,100}$"}],
    }
    schema["properties"]["method"]["properties"] = {"name": {"enum": sorted(METHODS)}}
    schema["properties"]["method"]["allOf"] = [
        {"if": {"properties": {"name": {"const": name}}}, "then": cls.metadata_schema()}
        for name, cls in sorted(METHODS.items())
    ]
    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    )(schema)


def _field(path: Any) -> str:
    """A JSON path as the user reads it: ``model.arguments.num_classes``, ``input.shape[2]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the metadata itself)"


def _refuse(source: str, field: str, problem: str) -> LcsError:
    return LcsError(
        f"{source} has invalid metadata: {field} {problem}",
        "use the checkpoint as lcs-train wrote it, or train again",
    )


def reject_non_finite(constant: str) -> float:
    """``json.loads(parse_constant=...)``: NaN and Infinity are not values any field may hold."""
    raise ValueError(f"non-finite number {constant}")


def check_schema(metadata: Any, source: str) -> None:
    """Refuse metadata of the wrong JSON type or out of range, naming the first bad field."""
    if not isinstance(metadata, dict):
        raise _refuse(source, "(the metadata itself)", f"is a JSON {type(metadata).__name__}, not an object")
    error = jsonschema.exceptions.best_match(_validator().iter_errors(metadata))
    if error is None:
        return
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next(name for name in error.validator_value if name not in error.instance)
        raise _refuse(source, _field([*error.absolute_path, missing]), "is missing")
    # Every piece of the message comes from the file: keep the line short.
    problem = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    raise _refuse(source, _field(error.absolute_path), f"is invalid ({problem})")


def check_consistency(metadata: dict[str, Any], source: str) -> None:
    """The facts the schema cannot check: fields that must agree with one another."""
    from lcs_train.methods import method_from_metadata
    from lcs_train.models import check_model_name

    if metadata["format_version"] > FORMAT_VERSION:
        raise LcsError(
            f"{source} was written by a newer lcs (format_version {metadata['format_version']}, "
            f"this lcs reads {FORMAT_VERSION})",
            "upgrade lcs",
        )
    try:
        check_model_name(metadata["model"]["name"])
    except LcsError as error:
        raise _refuse(source, "model.name", f"names no model this lcs can build ({error.message})") from None
    arguments = metadata["model"]["arguments"]
    classes, channels = arguments["num_classes"], arguments["in_channels"]
    if len(metadata["classes"]) != classes:
        raise _refuse(source, "classes", f"names {len(metadata['classes'])} classes but the network has {classes} logits")
    dataset = DATASET_FACTS[metadata["data"]["dataset"]]
    shape = metadata["input"]["shape"]
    expected = dataset["input"]
    if expected is None and metadata["data"]["dataset"] == "imagefolder":
        size = metadata["data"].get("image_size")
        if size is None:
            raise _refuse(source, "data.image_size", "is missing (an imagefolder checkpoint records its image size)")
        expected = [3, size, size]
    if shape[1:] != expected:
        raise _refuse(source, "input.shape", f"is {shape} but {metadata['data']['dataset']} images are {[1, *expected]}")
    if channels != shape[1]:
        raise _refuse(source, "model.arguments.in_channels", f"is {channels} but input.shape has {shape[1]} channels")
    if dataset["classes"] is not None and classes != dataset["classes"]:
        raise _refuse(source, "model.arguments.num_classes", f"is {classes} but {metadata['data']['dataset']} has {dataset['classes']} classes")
    for name in ("mean", "std"):
        if len(metadata["input"][name]) != channels:
            raise _refuse(source, f"input.{name}", f"has {len(metadata['input'][name])} values for {channels} channels")
    try:
        method = method_from_metadata(metadata["method"])
    except (LcsError, TypeError, ValueError) as error:
        raise _refuse(source, "method", f"does not describe a valid method ({error})") from None
    norm = metadata["norm"]
    if norm not in (method.norm, "batch"):
        raise _refuse(source, "norm", f"is {norm!r} but {method.name} subspaces use {method.norm!r} or 'batch'")
    if metadata["format_version"] < NORM_FORMAT_VERSIONS[norm]:
        raise _refuse(source, "norm", f"is {norm!r}, which format_version {metadata['format_version']} cannot hold "
                      f"(it needs {NORM_FORMAT_VERSIONS[norm]})")
    alpha = metadata["alpha"]
    if not math.isclose(alpha["max"], method.max_alpha, abs_tol=1e-9):
        raise _refuse(source, "alpha.max", f"is {alpha['max']:g} but the method's trained range ends at {method.max_alpha:g}")
    discrete = method.discrete_alphas()
    recorded = alpha["discrete"]
    if (discrete is None) != (recorded is None) or (
        discrete is not None and (len(discrete) != len(recorded) or any(not math.isclose(a, b, abs_tol=1e-9) for a, b in zip(discrete, recorded)))
    ):
        raise _refuse(source, "alpha.discrete", f"is {recorded} but the method's levels are {list(discrete) if discrete else None}")
    fixed = alpha["fixed"]
    if fixed is not None:
        if fixed > alpha["max"] + 1e-9:
            raise _refuse(source, "alpha.fixed", f"is {fixed:g}, outside the trained range [0, {alpha['max']:g}]")
        if metadata["shape"] != "point":
            raise _refuse(source, "shape", "must be 'point' for a fixed-alpha baseline (alpha.fixed is set)")
    if len(metadata["history"]) > metadata["epoch"]:
        raise _refuse(source, "history", f"has {len(metadata['history'])} epochs but epoch is {metadata['epoch']}")


def check_tensors(tensors: dict[str, Tensor], source: str) -> None:
    """Every tensor must be a finite float (training never saves NaN or inf weights)."""
    import torch

    for name in sorted(tensors):
        tensor = tensors[name]
        if not tensor.is_floating_point():
            continue
        if not bool(torch.isfinite(tensor).all()):
            raise LcsError(
                f"{source} holds non-finite values (NaN or inf) in tensor {name}",
                "use the checkpoint as lcs-train wrote it, or train again",
            )


def validate_metadata(metadata: Any, tensors: dict[str, Tensor], source: str) -> None:
    """Schema, consistency and tensor checks: after this, every field is safe to use."""
    check_schema(metadata, source)
    check_consistency(metadata, source)
    check_tensors(tensors, source)
