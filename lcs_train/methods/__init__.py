"""Compression methods, one module each, looked up by name."""

from __future__ import annotations

from typing import Any

from lcs_train.errors import LcsError
from lcs_train.methods.base import CompressionMethod, Dense
from lcs_train.methods.quantized import Quantized
from lcs_train.methods.structured import Structured
from lcs_train.methods.unstructured import Unstructured

METHODS: dict[str, type[CompressionMethod]] = {
    cls.name: cls for cls in (Unstructured, Structured, Quantized)
}


def method_from_name(name: str, **options: Any) -> CompressionMethod:
    """Build a method config from its name, e.g. ``method_from_name("structured")``."""
    if name not in METHODS:
        raise LcsError(
            f"unknown compression method {name!r}", f"use one of: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name](**options)


def method_from_metadata(data: dict[str, Any]) -> CompressionMethod:
    """Inverse of ``CompressionMethod.to_metadata``."""
    fields = {k: v for k, v in data.items() if k != "name"}
    return method_from_name(data["name"], **fields)


__all__ = [
    "METHODS",
    "CompressionMethod",
    "Dense",
    "Quantized",
    "Structured",
    "Unstructured",
    "method_from_metadata",
    "method_from_name",
]
