"""Tests for the NumPy Core ML ML-program interpreter (targets.coreml.mil_interpreter).

Real conversions of small torch modules are saved as .mlpackage, read back and run; outputs are
compared with PyTorch (fp32 and fp16), compressed packages with coremltools' own
decompression, and hand-built MIL programs with NumPy references.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import mil_helpers as H
from targets.coreml.mil_interpreter import (
    FunctionNotFoundError,
    InputShapeError,
    MissingInputError,
    NotAnMLProgramError,
    PackageLoadError,
    UnexpectedInputError,
    UnsupportedOpError,
    load_program,
    run_program,
    supported_ops,
)

ct = H.quiet_coremltools()
logging.getLogger("coremltools").setLevel(logging.ERROR)

from coremltools.converters.mil import Builder as mb  # noqa: E402
import coremltools.optimize.coreml as cto  # noqa: E402

#: One xdist worker runs this module, so its module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("mil_interpreter")

FP32, FP16 = ct.precision.FLOAT32, ct.precision.FLOAT16


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _only_output(outputs: dict[str, np.ndarray]) -> np.ndarray:
    assert len(outputs) == 1
    return next(iter(outputs.values()))


# --------------------------------------------------------------------------- op zoo (torch)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """OpZoo converted once in fp32 and once in fp16, with torch references for both."""
    torch.manual_seed(0)
    module = H.OpZoo().eval()
    x = torch.randn(1, 4, 6, 6)
    names = list(H.OP_CASES)
    tmp = tmp_path_factory.mktemp("zoo")
    runs = {}
    for label, precision in (("fp32", FP32), ("fp16", FP16)):
        model = H.convert(module, [x], ["input"], target=ct.target.iOS17, precision=precision, output_names=names)
        prog = load_program(H.save(model, tmp, f"zoo_{label}"))
        runs[label] = run_program(prog, {"input": x.numpy()})
    with torch.no_grad():
        refs = {
            "fp32": dict(zip(names, module(x))),
            # fp16 reference: torch computing every op in half precision, like the program.
            "fp16": dict(zip(names, H.OpZoo.forward(module.half(), x.half()))),
        }
    return runs, refs, prog


@pytest.mark.parametrize("case", list(H.OP_CASES))
def test_op_matches_torch_fp32(zoo, case):
    runs, refs, _ = zoo
    got, want = runs["fp32"][case], refs["fp32"][case].numpy()
    assert got.shape == want.shape
    assert got.dtype in (np.float32, np.int32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(H.OP_CASES))
def test_op_matches_torch_fp16(zoo, case):
    runs, refs, _ = zoo
    got, want = runs["fp16"][case], refs["fp16"][case].float().numpy()
    assert got.shape == want.shape
    if np.issubdtype(want.dtype, np.floating) and got.dtype != np.int32:
        assert got.dtype == np.float16, "an fp16 program must compute and return fp16"
    # A couple of fp16 ulps: the same per-op rounding, different accumulation order.
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=4e-3 * scale)


def test_zoo_covers_the_expected_ops(zoo):
    *_, prog = zoo
    emitted = set(prog.op_types())
    for op in ("conv", "conv_transpose", "linear", "matmul", "batch_norm", "instance_norm",
               "layer_norm", "softmax", "gelu", "avg_pool", "max_pool", "gather",
               "gather_along_axis", "scatter_along_axis", "topk", "argsort", "cumsum", "cast"):
        assert op in emitted
    assert emitted <= set(supported_ops())


# --------------------------------------------------------------------------- whole networks


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(1)
    module = H.SmallCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    tmp = tmp_path_factory.mktemp("cnn")
    progs = {
        "trace_fp32": load_program(H.save(H.convert(module, [x], ["input"], target=ct.target.iOS17, precision=FP32), tmp, "a")),
        "export_fp16": load_program(H.save(H.convert(module, [x], ["input"], target=ct.target.iOS18, precision=FP16, via="export"), tmp, "b")),
    }
    return module, x, progs


def test_small_cnn_fp32_matches_torch(cnn):
    module, x, progs = cnn
    got = _only_output(run_program(progs["trace_fp32"], {"input": x.numpy()}))
    with torch.no_grad():
        want = module(x).numpy()
    assert got.shape == (2, 10)
    assert _max_err(got, want) < 1e-4


def test_small_cnn_fp16_tracks_torch(cnn):
    module, x, progs = cnn
    prog = progs["export_fp16"]
    assert {"conv", "instance_norm", "linear", "reduce_mean", "cast"} <= set(prog.op_types())
    got = _only_output(run_program(prog, {"input": x.numpy()}))
    assert got.dtype == np.float16
    with torch.no_grad():
        want = module(x).numpy()
    assert _max_err(got, want) < 2e-2 * max(1.0, float(np.abs(want).max()))


@pytest.fixture(scope="module")
def alpha_net(tmp_path_factory):
    torch.manual_seed(2)
    module = H.AlphaNet().eval()
    x = torch.randn(1, 3, 8, 8)
    a = torch.tensor([0.3])
    tmp = tmp_path_factory.mktemp("alpha")
    names = ["input", "alpha"]
    progs = {
        "trace_fp32": load_program(H.save(H.convert(module, [x, a], names, target=ct.target.iOS17, precision=FP32), tmp, "a")),
        "export_fp16": load_program(H.save(H.convert(module, [x, a], names, target=ct.target.iOS16, precision=FP16, via="export"), tmp, "b")),
    }
    return module, x, progs


ALPHAS = [0.0, 0.25, 0.5, 0.8, 1.0]


def test_alpha_graph_ops(alpha_net):
    _, _, progs = alpha_net
    ops = set(progs["trace_fp32"].op_types())
    # sort -> argsort + gather_along_axis, index -> gather, masks -> comparisons + cast.
    assert {"argsort", "gather_along_axis", "gather", "round", "pow", "less", "greater", "select",
            "reduce_min", "reduce_max", "cast", "conv"} <= ops


@pytest.mark.parametrize("alpha", ALPHAS)
def test_alpha_graph_fp32_matches_torch(alpha_net, alpha):
    module, x, progs = alpha_net
    a = np.array([alpha], np.float32)
    got = _only_output(run_program(progs["trace_fp32"], {"input": x.numpy(), "alpha": a}))
    with torch.no_grad():
        want = module(x, torch.from_numpy(a)).numpy()
    assert _max_err(got, want) < 1e-4 * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_alpha_graph_fp16_tracks_torch(alpha_net, alpha):
    module, x, progs = alpha_net
    a = np.array([alpha], np.float32)
    got = _only_output(run_program(progs["export_fp16"], {"input": x.numpy(), "alpha": a}))
    with torch.no_grad():
        want = module(x, torch.from_numpy(a)).numpy()
    assert got.dtype == np.float16
    assert _max_err(got, want) < 2e-2 * max(1.0, float(np.abs(want).max()))


# --------------------------------------------------------------------------- compressed weights


def _compress(base, kind: str, config):
    cfg = cto.OptimizationConfig(global_config=config)
    if kind == "prune":
        return cto.prune_weights(base, cfg)
    if kind == "quant":
        return cto.linear_quantize_weights(base, cfg)
    return cto.palettize_weights(base, cfg)


COMPRESSIONS = {
    # name: (target, kind, config, expected constexpr op)
    "ios16_sparse": (ct.target.iOS16, "prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.6, weight_threshold=0), "constexpr_sparse_to_dense"),
    "ios16_int8_tensor": (ct.target.iOS16, "quant", cto.OpLinearQuantizerConfig(mode="linear", dtype="int8", granularity="per_tensor", weight_threshold=0), "constexpr_affine_dequantize"),
    "ios16_uint8_channel": (ct.target.iOS16, "quant", cto.OpLinearQuantizerConfig(mode="linear", dtype="uint8", granularity="per_channel", weight_threshold=0), "constexpr_affine_dequantize"),
    "ios16_pal4_kmeans": (ct.target.iOS16, "pal", cto.OpPalettizerConfig(nbits=4, mode="kmeans", weight_threshold=0), "constexpr_lut_to_dense"),
    "ios16_pal2_uniform": (ct.target.iOS16, "pal", cto.OpPalettizerConfig(nbits=2, mode="uniform", weight_threshold=0), "constexpr_lut_to_dense"),
    "ios18_sparse": (ct.target.iOS18, "prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.6, weight_threshold=0), "constexpr_sparse_to_dense"),
    "ios18_int8_channel": (ct.target.iOS18, "quant", cto.OpLinearQuantizerConfig(mode="linear", dtype="int8", granularity="per_channel", weight_threshold=0), "constexpr_blockwise_shift_scale"),
    "ios18_uint8_tensor": (ct.target.iOS18, "quant", cto.OpLinearQuantizerConfig(mode="linear", dtype="uint8", granularity="per_tensor", weight_threshold=0), "constexpr_blockwise_shift_scale"),
    "ios18_int4_block": (ct.target.iOS18, "quant", cto.OpLinearQuantizerConfig(mode="linear", dtype="int4", granularity="per_block", block_size=4, weight_threshold=0), "constexpr_blockwise_shift_scale"),
    "ios18_pal4_grouped": (ct.target.iOS18, "pal", cto.OpPalettizerConfig(nbits=4, mode="uniform", granularity="per_grouped_channel", group_size=4, weight_threshold=0), "constexpr_lut_to_dense"),
    "ios18_pal2_vector": (ct.target.iOS18, "pal", cto.OpPalettizerConfig(nbits=2, mode="kmeans", cluster_dim=2, weight_threshold=0), "constexpr_lut_to_dense"),
}


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """Every compression in COMPRESSIONS (plus joint sparse+quant/palette) saved and loaded,
    next to coremltools' decompressed copy of the same model."""
    torch.manual_seed(3)
    module = H.CompressNet().eval()
    x = torch.randn(1, 4, 6, 6)
    tmp = tmp_path_factory.mktemp("compressed")
    bases = {
        t: H.convert(module, [x], ["input"], target=t, precision=FP32)
        for t in (ct.target.iOS16, ct.target.iOS18)
    }
    models = {name: (_compress(bases[t], kind, cfg), op) for name, (t, kind, cfg, op) in COMPRESSIONS.items()}
    sparse18 = models["ios18_sparse"][0]
    models["ios18_sparse_int8"] = (
        cto.linear_quantize_weights(sparse18, cto.OptimizationConfig(cto.OpLinearQuantizerConfig(mode="linear", dtype="int8", granularity="per_channel", weight_threshold=0)), joint_compression=True),
        "constexpr_sparse_blockwise_shift_scale",
    )
    models["ios18_sparse_pal2"] = (
        cto.palettize_weights(sparse18, cto.OptimizationConfig(cto.OpPalettizerConfig(nbits=2, mode="kmeans", weight_threshold=0)), joint_compression=True),
        "constexpr_lut_to_sparse",
    )
    out = {}
    for name, (model, op) in models.items():
        prog = load_program(H.save(model, tmp, name))
        reference = load_program(H.save(cto.decompress_weights(model), tmp, name + "_dense"))
        out[name] = (prog, reference, op)
    return module, x, out


@pytest.mark.parametrize("name", [*COMPRESSIONS, "ios18_sparse_int8", "ios18_sparse_pal2"])
def test_compressed_weights(compressed, name):
    module, x, progs = compressed
    prog, reference, op = progs[name]
    assert op in prog.op_types()
    assert not any(t.startswith("constexpr_") for t in reference.op_types())
    got = _only_output(run_program(prog, {"input": x.numpy()}))
    # 1. Same numbers as the model coremltools decompressed itself.
    dense = _only_output(run_program(reference, {"input": x.numpy()}))
    assert _max_err(got, dense) <= 1e-6
    # 2. Same numbers as torch running with those decompressed weights.
    weights = {
        o.outputs[0].name: o.outputs[0].val
        for o in reference.function().operations
        if o.op_type == "const" and o.outputs[0].val is not None
    }
    state = module.state_dict()
    for pname in ("c1.weight", "c2.weight", "fc.weight"):
        match = [v for k, v in weights.items() if k.startswith(pname.replace(".", "_"))]
        assert len(match) == 1, pname
        state[pname] = torch.from_numpy(np.array(match[0], np.float32))
    twin = H.CompressNet().eval()
    twin.load_state_dict(state)
    with torch.no_grad():
        assert _max_err(got, twin(x).numpy()) < 1e-5
        # ...and the compression really changed the weights.
        assert not torch.equal(state["c2.weight"], module.state_dict()["c2.weight"])


# --------------------------------------------------------------------------- decompression ops, known values


def _run_builder(fn, input_shapes, opset=ct.target.iOS18, inputs=None):
    specs = [mb.TensorSpec(shape=s) for s in input_shapes]
    prog = mb.program(input_specs=specs, opset_version=opset)(fn)
    loaded = load_program(prog)
    names = list(loaded.inputs())
    feed = {n: v for n, v in zip(names, inputs or [np.zeros(s, np.float32) for s in input_shapes])}
    return run_program(loaded, feed)


def test_constexpr_ios16_known_values():
    lut = np.array([-1.0, 0.5, 2.0, 4.0], np.float32)
    idx = np.array([3, 0, 1, 2, 2, 1], np.uint8)  # 2-bit indices, packed LSB first
    packed = np.array([idx[0] | idx[1] << 2 | idx[2] << 4 | idx[3] << 6, idx[4] | idx[5] << 2], np.uint8)
    mask_bits = np.array([1, 0, 0, 1, 1, 0], np.uint8)

    def fn(x):
        a = mb.constexpr_affine_dequantize(
            quantized_data=np.array([[0, 10], [250, 128]], np.uint8),
            zero_point=np.uint8(128), scale=np.float32(0.5), axis=0)
        b = mb.constexpr_lut_to_dense(indices=packed, lut=lut, shape=np.array([2, 3], np.uint32))
        c = mb.constexpr_sparse_to_dense(
            nonzero_data=np.array([7.0, 8.0, 9.0], np.float32),
            mask=np.packbits(mask_bits, bitorder="little"), shape=np.array([2, 3], np.uint32))
        return mb.add(x=a, y=mb.slice_by_size(x=x, begin=[0, 0], size=[2, 2])), mb.add(x=b, y=x), mb.add(x=c, y=x)

    a, b, c = _run_builder(lambda x: fn(x), [(2, 3)], opset=ct.target.iOS16).values()
    np.testing.assert_array_equal(a, [[-64.0, -59.0], [61.0, 0.0]])
    np.testing.assert_array_equal(b, lut[idx].reshape(2, 3))
    np.testing.assert_array_equal(c, [[7.0, 0, 0], [8.0, 9.0, 0]])


def test_constexpr_ios18_known_values():
    data = np.array([[-8, 7, 1, 0], [3, -3, 2, 5]], np.int8)
    scale = np.array([[0.5, 2.0], [1.0, 0.25]], np.float32)  # blocks of 2 along axis 1
    offset = np.array([[1, -1], [0, 2]], np.int8)
    indices = np.array([[0, 1, 3, 2], [2, 2, 1, 0]], np.uint8)
    lut = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 40.0], np.float32).reshape(2, 1, 4, 1)
    mask = np.array([[1, 0, 1, 1], [0, 1, 0, 1]], np.uint8)

    def fn(x):
        from coremltools.converters.mil.mil import types

        shifted = mb.constexpr_blockwise_shift_scale(
            data=mb.const(val=data), scale=scale, offset=mb.const(val=offset))
        ids = mb.const(val=indices)
        ids.op.outputs[0]._sym_type = types.tensor(types.uint2, indices.shape)
        dense = mb.constexpr_lut_to_dense(indices=ids, lut=lut)
        sparse = mb.constexpr_sparse_to_dense(nonzero_data=np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32), mask=_uint1(mask))
        return mb.add(x=shifted, y=x), mb.add(x=dense, y=x), mb.add(x=sparse, y=x)

    s, d, sp = _run_builder(fn, [(2, 4)]).values()
    expected_scale = np.repeat(scale, 2, axis=1)
    expected_offset = np.repeat(offset, 2, axis=1).astype(np.float32)
    np.testing.assert_allclose(s, expected_scale * (data - expected_offset))
    np.testing.assert_array_equal(d, [[0, 1, 3, 2], [30, 30, 20, 10]])
    np.testing.assert_array_equal(sp, [[1, 0, 2, 3], [0, 4, 0, 5]])


def _uint1(mask: np.ndarray):
    from coremltools.converters.mil.mil import types

    var = mb.const(val=mask.astype(np.uint8))
    var._sym_type = types.tensor(types.uint1, mask.shape)
    return var


# --------------------------------------------------------------------------- ops torch does not emit


def _rng(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_builder_only_ops_match_numpy():
    x = _rng(2, 3, 4, 4)

    def fn(x):
        return (
            mb.range_1d(start=np.int32(1), end=np.int32(10), step=np.int32(3)),
            mb.fill(shape=mb.shape(x=x), value=np.float32(1.5)),
            mb.slice_by_size(x=x, begin=[0, 1, 1, 0], size=[-1, 2, 2, 3]),
            mb.gather_nd(x=x, indices=np.array([[0, 2], [1, 0]], np.int32)),
            mb.scatter(data=x, indices=np.array([2, 0, 2], np.int32), updates=np.ones((2, 3, 3, 4), np.float32), axis=2, mode="add"),
            mb.scatter_nd(data=x, indices=np.array([[1, 1], [0, 2]], np.int32), updates=np.full((2, 4, 4), 9.0, np.float32), mode="update"),
            mb.one_hot(indices=np.array([0, 2, 1], np.int32), one_hot_vector_size=4),
            mb.reduce_argmin(x=x, axis=1, keep_dims=True),
            mb.reduce_sum_square(x=x, axes=[2, 3]),
            mb.reduce_l1_norm(x=x, axes=[1]),
            mb.inverse(x=x, epsilon=0.0),
            mb.clamped_relu(x=x, alpha=0.1, beta=0.8),
            mb.thresholded_relu(x=x, alpha=0.3),
            mb.scaled_tanh(x=x, alpha=2.0, beta=0.5),
            mb.softsign(x=x),
            mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
            mb.space_to_depth(x=x, block_size=2),
            mb.flatten2d(x=x, axis=2),
            mb.band_part(x=x, lower=1, upper=0),
        )

    outs = list(_run_builder(fn, [x.shape], inputs=[x]).values())
    expected_scatter = x.copy()
    expected_scatter[:, :, 2] += 2.0
    expected_scatter[:, :, 0] += 1.0
    expected_scatter_nd = x.copy()
    expected_scatter_nd[1, 1] = 9.0
    expected_scatter_nd[0, 2] = 9.0
    tx = torch.from_numpy(x)
    expected = [
        np.array([1, 4, 7]),
        np.full(x.shape, 1.5),
        x[:, 1:3, 1:3, 0:3],
        np.stack([x[0, 2], x[1, 0]]),
        expected_scatter,
        expected_scatter_nd,
        np.eye(4)[[0, 2, 1]],
        x.argmin(axis=1)[:, None],
        (x**2).sum(axis=(2, 3)),
        np.abs(x).sum(axis=1),
        1 / x,
        np.minimum(np.where(x >= 0, x, 0.1 * x), 0.8),
        np.where(x >= 0.3, x, 0),
        2 * np.tanh(0.5 * x),
        x / (1 + np.abs(x)),
        torch.nn.functional.lp_pool2d(tx, 2, 2).numpy(),
        # MIL space_to_depth orders channels like TensorFlow (block offset major, channel minor).
        torch.nn.functional.pixel_unshuffle(tx, 2).reshape(2, 3, 4, 2, 2).transpose(1, 2).reshape(2, 12, 2, 2).numpy(),
        x.reshape(6, 16),
        np.tril(x) - np.tril(x, -2),
    ]
    for i, (got, want) in enumerate(zip(outs, expected)):
        assert got.shape == np.shape(want), i
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"output {i}")


def test_round_is_half_to_even():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, 0.51], np.float32)
    got = _only_output(_run_builder(lambda x: mb.round(x=x), [x.shape], inputs=[x]))
    # MIL documents "0.5 is rounded to 0"; coremltools' value inference and torch.round agree.
    np.testing.assert_array_equal(got, [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, 1.0])
    np.testing.assert_array_equal(got, torch.round(torch.from_numpy(x)).numpy())


def test_fp16_ops_compute_in_fp16():
    # 2049 is not representable in fp16: an fp16 add must round it to 2048.
    x = np.array([2048.0], np.float32)

    def fn(x):
        h = mb.cast(x=x, dtype="fp16")
        return mb.cast(x=mb.add(x=h, y=np.float16(1.0)), dtype="fp32")

    assert _only_output(_run_builder(fn, [x.shape], inputs=[x]))[0] == 2048.0


def test_control_flow_blocks():
    def fn(x):
        def body(i, acc):
            return mb.add(x=i, y=np.int32(1)), mb.mul(x=acc, y=np.float32(2.0))

        i, acc = mb.while_loop(
            _cond=lambda i, acc: mb.less(x=i, y=np.int32(3)), _body=body, loop_vars=(np.int32(0), x))
        positive = mb.greater(x=mb.reduce_sum(x=x), y=np.float32(0.0))
        out = mb.cond(pred=positive, _true_fn=lambda: mb.mul(x=acc, y=np.float32(10.0)),
                      _false_fn=lambda: mb.sub(x=acc, y=np.float32(1.0)))
        return out, i

    for x, want in (([1.0, 2.0], [80.0, 160.0]), ([-1.0, -2.0], [-9.0, -17.0])):
        out, count = _run_builder(fn, [(2,)], opset=ct.target.iOS17, inputs=[np.array(x, np.float32)]).values()
        np.testing.assert_array_equal(out, want)
        assert count == 3


# --------------------------------------------------------------------------- multifunction


def test_multifunction_package(tmp_path):
    torch.manual_seed(4)
    module = H.CompressNet().eval()
    x = torch.randn(1, 4, 6, 6)
    base = H.convert(module, [x], ["input"], target=ct.target.iOS18, precision=FP32)
    int4 = _compress(base, "quant", COMPRESSIONS["ios18_int4_block"][2])
    float_path, int4_path = H.save(base, tmp_path, "float"), H.save(int4, tmp_path, "int4")
    desc = ct.utils.MultiFunctionDescriptor()
    desc.add_function(str(float_path), src_function_name="main", target_function_name="dense")
    desc.add_function(str(int4_path), src_function_name="main", target_function_name="int4")
    desc.default_function_name = "dense"
    multi = tmp_path / "multi.mlpackage"
    ct.utils.save_multifunction(desc, str(multi))

    prog = load_program(multi)
    assert sorted(prog.function_names) == ["dense", "int4"]
    feed = {"input": x.numpy()}
    dense = _only_output(run_program(prog, feed, function_name="dense"))
    quant = _only_output(run_program(prog, feed, function_name="int4"))
    assert "constexpr_blockwise_shift_scale" in prog.op_types("int4")
    np.testing.assert_array_equal(dense, _only_output(run_program(load_program(float_path), feed)))
    np.testing.assert_array_equal(quant, _only_output(run_program(load_program(int4_path), feed)))
    with torch.no_grad():
        assert _max_err(dense, module(x).numpy()) < 1e-5
    assert 0 < _max_err(quant, dense) < 0.1
    np.testing.assert_array_equal(_only_output(run_program(prog, feed)), dense)  # default function
    with pytest.raises(FunctionNotFoundError, match="int4"):
        run_program(prog, feed, function_name="main")


# --------------------------------------------------------------------------- errors


def test_unknown_op_raises_naming_the_op(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2, 3, 4)), mb.TensorSpec(shape=(1, 4, 3, 5))], opset_version=ct.target.iOS17)
    def prog(x, y):
        return mb.einsum(values=(x, y), equation="abcd,adce->abce")

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17)
    loaded = load_program(H.save(model, tmp_path, "einsum"))
    feed = {name: np.zeros(spec.shape, np.float32) for name, spec in loaded.inputs().items()}
    with pytest.raises(UnsupportedOpError, match="einsum") as info:
        run_program(loaded, feed)
    assert info.value.op_type == "einsum"
    assert "does not implement" in str(info.value)


def test_user_errors_are_clear(cnn, tmp_path):
    _, x, progs = cnn
    prog = progs["trace_fp32"]
    with pytest.raises(PackageLoadError, match="does not exist"):
        load_program(tmp_path / "missing.mlpackage")
    (tmp_path / "junk.mlpackage").mkdir()
    with pytest.raises(PackageLoadError):
        load_program(tmp_path / "junk.mlpackage")
    with pytest.raises(MissingInputError, match="input"):
        run_program(prog, {})
    with pytest.raises(UnexpectedInputError, match="alpha"):
        run_program(prog, {"input": x.numpy(), "alpha": np.zeros(1, np.float32)})
    with pytest.raises(InputShapeError, match=r"\(2, 3, 8, 8\)"):
        run_program(prog, {"input": np.zeros((2, 3, 9, 8), np.float32)})


def test_neural_network_model_is_rejected(tmp_path):
    module = torch.nn.Linear(3, 2).eval()
    x = torch.randn(1, 3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(torch.jit.trace(module, x), convert_to="neuralnetwork",
                           inputs=[ct.TensorType(name="input", shape=x.shape)])
    path = tmp_path / "nn.mlmodel"
    model.save(str(path))
    with pytest.raises(NotAnMLProgramError, match="not an ML program"):
        load_program(path)
