"""The switch-once weights graph finds each layer's top-k threshold without a sort: its masks
equal the sort-based selection bit for bit, ties at the threshold included, in PyTorch and in
ONNX Runtime, at hundreds of alphas (bin edges and their float32 neighbours among them)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lcs_train import Line, Point, Unstructured, to_subspace
from lcs_train.alpha_graph import AlphaWeightsModule, clamp_alpha
from lcs_train.compression import pruned_count
from lcs_train.layers import CompressibleWeighted
from lcs_train.threshold_brackets import BINS
from targets.onnx.files import FLOAT_OPSET, export_onnx

METHOD = Unstructured(max_sparsity=0.9)


def tied_subspace(shape: Line | Point) -> nn.Module:
    """A small conv net whose weights follow a handful of trajectories w0 + t (w1 - w0), so
    that many weights share |w(t)| at every alpha, and trajectories cross along the line."""
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Conv2d(4, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(),
        nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 3),
    )
    model = to_subspace(plain, METHOD, shape).eval()
    starts = torch.tensor([0.25, -0.25, 0.5, -0.5, 0.75, 0.0, 0.125])
    ends = torch.tensor([0.5, -0.5, 0.25, 0.25, -0.125, 0.5, 0.125])
    with torch.no_grad():
        for layer in pruned_layers(model):
            pick = torch.randint(len(starts), layer.weight.shape)
            layer.weight.copy_(starts[pick])
            if shape.ends > 1:
                layer.weight_end.copy_(ends[pick])
    return model


def pruned_layers(model: nn.Module) -> list[CompressibleWeighted]:
    return [m for m in model.modules() if isinstance(m, CompressibleWeighted) and m.method.compresses]


def probe_alphas() -> list[float]:
    """Even steps, every 8th bin edge with its float32 neighbours, and out-of-range values."""
    top = METHOD.max_alpha
    edges = np.float32([b * top / BINS for b in range(0, BINS + 1, 8)])
    neighbours = np.concatenate([np.nextafter(edges, np.float32(-1)), edges, np.nextafter(edges, np.float32(2))])
    return [*np.linspace(0.0, top, 201).tolist(), *neighbours.tolist(), -0.5, 1.5]


def sorted_reference(model: nn.Module, alpha: float) -> dict[str, torch.Tensor]:
    """Each pruned layer's weight at ``alpha`` as the subspace itself computes it (k-th
    smallest |w| by selection, keep |w| > it)."""
    clamped = clamp_alpha(torch.tensor([alpha], dtype=torch.float32), METHOD)
    names = {id(m): name for name, m in model.named_modules()}
    with torch.no_grad():
        return {f"{names[id(layer)]}.weight": layer.compressed_weight(clamped) for layer in pruned_layers(model)}


@pytest.mark.parametrize("shape", [Line(), Point()], ids=["line", "point"])
def test_weights_graph_masks_equal_the_sorted_selection_with_ties(shape: Line | Point) -> None:
    model = tied_subspace(shape)
    weights = AlphaWeightsModule(model)
    assert len(weights.tables) == len(pruned_layers(model))  # every pruned layer runs without a sort
    tied_alphas = 0
    with torch.no_grad():
        for alpha in probe_alphas():
            got = weights.constants(alpha)
            for name, expected in sorted_reference(model, alpha).items():
                assert torch.equal(got[name], expected), f"{name} at alpha {alpha!r}"
                # Ties at the threshold are pruned together: more zeros than k proves the tie.
                k = int(pruned_count(clamp_alpha(torch.tensor([alpha]), METHOD), expected.numel()))
                tied_alphas += int(0 < k < int((expected == 0).sum()))
    assert tied_alphas > 100  # the probe really exercises the tie rule


def test_onnx_weights_graph_is_exact_and_selects_far_fewer_than_a_sort() -> None:
    model = tied_subspace(Line())
    weights = AlphaWeightsModule(model).eval()
    names = list(weights.constant_names)
    exported = export_onnx(weights, (torch.tensor([0.0]),), ["alpha"], names, (None,), FLOAT_OPSET)
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    for alpha in probe_alphas()[::3] + [float("nan")]:
        outputs = dict(zip(names, session.run(None, {"alpha": np.array([alpha], np.float32)})))
        expected = sorted_reference(model, 0.0 if alpha != alpha else alpha)
        for name, value in expected.items():
            assert np.array_equal(outputs[name], value.numpy()), f"{name} at alpha {alpha!r}"
    # The selections are TopKs of the tables' constant k, each smaller than its layer (a sort
    # is a TopK of k = n).
    ks = sorted(int(onnx.numpy_helper.to_array(t).reshape(-1)[0]) for t in _topk_k_constants(exported))
    assert ks == sorted(tables.candidates for tables in weights.tables.values())
    assert all(tables.candidates < tables.count for tables in weights.tables.values())


def _topk_k_constants(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = node.attribute[0].t
    return [constants[node.input[1]] for node in model.graph.node if node.op_type == "TopK"]
