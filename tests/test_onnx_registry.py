"""The dynamo exporter's torchlib registry is built once per process, and nothing leaks through it.

``targets.onnx.torchlib_registry`` patches a private torch symbol for the length of each of
our exports; these tests fail, naming it, when a torch release changes what the cache
relies on (exports then still work, at the old speed).
"""

from __future__ import annotations

import torch

from targets.onnx.files import FLOAT_OPSET, batch_dynamic, export_onnx
from targets.onnx.torchlib_registry import SYMBOL, registry_class, shared_torchlib_registry


class _Selecting(torch.nn.Module):
    """Uses ``masked_select``, which our exports translate to one ``Compress`` (a custom
    translation the exporter adds to the registry it is handed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.masked_select(x, x > 0).sum().reshape(1, 1) + x.flatten(1)[:, :1]


def _op_types(model) -> set[str]:
    return {node.op_type for node in model.graph.node}


def test_the_cache_is_in_effect_with_the_installed_torch() -> None:
    cls = registry_class()
    assert cls is not None, f"torch changed {SYMBOL}: the ONNX exporter's registry is rebuilt on every export again"
    original = cls.__dict__["from_torchlib"]
    with shared_torchlib_registry() as active:
        assert active
        first, second = cls.from_torchlib(), cls.from_torchlib()
        assert first is not second and first.functions is not second.functions
        assert first.functions.keys() == second.functions.keys() and len(first.functions) > 100
        target = torch.ops.aten.masked_select.default
        first.register_op(target, lambda values, mask: values)
        assert len(first.get_decomps(target)) == len(second.get_decomps(target)) + 1
        assert len(cls.from_torchlib().get_decomps(target)) == len(second.get_decomps(target))
    assert cls.__dict__["from_torchlib"] is original


def test_each_export_gets_its_custom_translation_and_none_leaks_out() -> None:
    module, example = _Selecting().eval(), (torch.randn(2, 6),)
    for _ in range(2):
        model = export_onnx(module, example, ["input"], ["logits"], (batch_dynamic(),), FLOAT_OPSET)
        assert "Compress" in _op_types(model) and "GatherND" not in _op_types(model)
    # What torch hands anyone else in the same process afterwards holds no translation of ours.
    fresh = registry_class().from_torchlib()
    assert not any(decomposition.is_custom for decomposition in fresh.get_decomps(torch.ops.aten.masked_select.default))
