"""Channel plans: how many channels each layer of a structured level keeps, derived from the
traced graph rather than from one network's layout.

Under structured sparsity every compressed layer masks its output to its first
``round(C * width)`` channels. To build a physically narrower network, export needs, for every
tensor, how many leading channels anyone still reads. The model is traced with ``torch.fx``
(compressible layers as leaves) and shapes are propagated from an example input; then:

- tensors joined by per-channel operations (InstanceNorm, BatchNorm, depthwise convs, activations,
  pooling and spatial means, dropout and stochastic depth, elementwise adds and multiplies whose operands have
  the same channels, including a squeeze-excitation scale [N, C, 1, 1] broadcast over its
  input [N, C, H, W], a flatten or spatial mean that leaves one value per channel) form one
  *channel group*: they are narrowed together, since output channel ``i`` of such an
  operation depends only on input channel ``i``;
- a group's width is the most any reader needs: a conv or linear layer (or any other
  channel-mixing operation) reads every channel that can be non-zero, which is the most
  channels a producer of the group keeps (a masked layer its kept channels, anything else all
  of them); the graph's output is read in full.

Every layer then writes its output group's width and reads its input group's width. A
compressed layer whose output reaches an operation lcs cannot see through (a concatenation, a
reshape that mixes channels, a grouped conv that is not depthwise) would not get narrower; such a model is refused
with a message naming the layer and the operation.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from lcs_train.errors import LcsError
from lcs_train.layers import CompressibleConv2d, CompressibleLayer, CompressibleNorm, CompressibleWeighted

#: Module types whose output channel i depends only on input channel i.
PER_CHANNEL_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
    nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
#: Per-channel operations that map 0 to a non-zero value: every channel of their output can be
#: non-zero, whatever their input keeps.
NONZERO_AT_ZERO_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
NONZERO_AT_ZERO_FUNCTIONS = {torch.sigmoid, torch.nn.functional.hardsigmoid, "sigmoid"}
#: Functions (and tensor methods, by name) of the same kind.
PER_CHANNEL_FUNCTIONS = {
    torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.gelu,
    torch.nn.functional.silu, torch.nn.functional.hardswish, torch.nn.functional.hardsigmoid, torch.sigmoid,
    torch.tanh, torch.nn.functional.dropout, torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
    torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d,
}
PER_CHANNEL_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone"}
#: Elementwise binary operations: per-channel when both operands have the output's shape.
ELEMENTWISE = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, torch.add, torch.mul,
               "add", "add_", "mul", "mul_", "sub"}
#: Elementwise products: zero wherever any operand is zero.
PRODUCTS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
#: Flatten / mean: per-channel only when each channel holds a single value (checked on shapes).
COLLAPSING = {torch.flatten, torch.mean, "flatten", "mean", "view", "reshape", "squeeze"}


def _stochastic_depth() -> tuple[type, ...]:
    """torchvision's ``StochasticDepth`` type, if torchvision is loaded: a model cannot hold one
    otherwise, and importing torchvision (which loads torch._dynamo) costs every command that
    never builds a torchvision model more than a second at start-up."""
    ops = sys.modules.get("torchvision.ops")
    return (ops.StochasticDepth,) if ops is not None else ()


class _LeafTracer(fx.Tracer):
    """Treats compressible layers as single operations (their insides are the method's), and
    stochastic depth too (its random mask depends on the module's training flag)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, (CompressibleLayer, *_stochastic_depth())) or super().is_leaf_module(
            module, qualified_name)


class _NamedRun(fx.Interpreter):
    """Runs the traced graph; a failure names the operation and the input size."""

    def __init__(self, module: fx.GraphModule, input_shape: list[int]) -> None:
        super().__init__(module)
        self.input_shape = input_shape

    def run_node(self, n: fx.Node) -> object:
        try:
            return super().run_node(n)
        except Exception as error:  # any op can fail on a too-small input, each with its own type
            cause = str(error.__cause__ or error).strip().splitlines()[0]
            raise LcsError(
                f"a {self.input_shape} input cannot run through {_target_name(n)} ({n.name}): {cause}",
                "give a larger input size (InstanceNorm needs more than one spatial value per channel)",
            ) from None


@dataclass
class _Group:
    channels: int
    reads: list[str]  # tensors (node names) a channel-mixing reader takes from this group
    full: bool = False  # read in full (graph output, an operation lcs cannot see through)


@dataclass
class ChannelPlan:
    """Per compressible layer, the channel groups it reads and writes; ``widths(alpha)``
    evaluates how many channels each keeps at one alpha.

    ``steps`` replays the graph's channel arithmetic in order: how many leading channels of
    each tensor can be non-zero (all for an input, an opaque operation or a per-channel one
    that maps 0 elsewhere, such as a sigmoid; a masked layer's kept channels, its kept channels
    of what it reads for a bias-free depthwise conv; the most of a per-channel operation's
    inputs, the fewest for a product).
    """

    model: nn.Module
    groups: list[_Group]
    group_of: dict[str, int]  # tensor (node name) -> group
    steps: list[tuple[str, str, list[str], int]]  # (node, rule, inputs, channels)
    layer_nodes: dict[str, tuple[str, str]]  # layer -> (input node, output node)

    def widths(self, alpha: Tensor) -> dict[str, tuple[int, int]]:
        """``{layer name: (kept input channels, kept output channels)}`` at ``alpha`` [1]."""
        layers = dict(self.model.named_modules())
        nonzero: dict[str, int] = {}
        for node, rule, inputs, channels in self.steps:
            if rule == "full":
                nonzero[node] = channels
            elif rule == "same":
                nonzero[node] = max(nonzero[name] for name in inputs)
            elif rule == "product":
                nonzero[node] = min(nonzero[name] for name in inputs)
            else:  # a layer: its kept channels, and a bias-free depthwise conv no more than it reads
                kept = _kept(layers[rule], channels, alpha)
                nonzero[node] = min(kept, nonzero[inputs[0]]) if inputs else kept
        width = [
            group.channels if group.full or not group.reads else max(nonzero[name] for name in group.reads)
            for group in self.groups
        ]
        return {name: (width[self.group_of[source]], width[self.group_of[out]])
                for name, (source, out) in self.layer_nodes.items()}


def _kept(layer: nn.Module, channels: int, alpha: Tensor) -> int:
    """Channels a masked producer keeps (all of them for a layer the method leaves whole)."""
    assert isinstance(layer, CompressibleLayer)
    mask = layer.method.output_multiplier(layer, channels, alpha)
    return channels if mask is None else int(mask.sum().item())


def _target_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


def derive_channel_plan(model: nn.Module, input_shape: Sequence[int]) -> ChannelPlan:
    """Trace ``model`` (a structured subspace) and derive its channel groups.

    ``input_shape`` is [C, H, W] (or with a leading batch). Raises ``LcsError`` naming the
    layer when a compressed layer's channels cannot be followed through the graph.
    """
    try:
        graph = _LeafTracer().trace(model)
    except Exception as error:  # fx reports data-dependent control flow with many types
        raise LcsError(
            f"structured compression cannot trace {type(model).__name__} with torch.fx ({error})",
            "use unstructured or quantized compression for this model, or remove data-dependent control flow",
        ) from None
    module = fx.GraphModule(model, graph)
    example = torch.zeros(1, *list(input_shape)[-3:])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # ShapeProp prints a traceback of its own on failure: run once to name the failing op.
            _NamedRun(module, list(input_shape)[-3:]).run(example)
            ShapeProp(module).propagate(example)
    finally:
        model.train(was_training)
    layers = dict(model.named_modules())
    parent: list[int] = []
    groups: list[_Group] = []
    group_of: dict[str, int] = {}
    steps: list[tuple[str, str, list[str], int]] = []
    masked_in: dict[int, list[str]] = {}  # group -> compressed layers writing into it

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def new_group(node: fx.Node) -> None:
        groups.append(_Group(_channels(node), []))
        parent.append(len(groups) - 1)
        group_of[node.name] = len(groups) - 1

    def join(node: fx.Node, inputs: list[fx.Node]) -> None:
        index = find(group_of[inputs[0].name])
        for other in inputs[1:]:
            other_index = find(group_of[other.name])
            if other_index != index:
                parent[other_index] = index
                groups[index].reads += groups[other_index].reads
                groups[index].full |= groups[other_index].full
                masked_in.setdefault(index, []).extend(masked_in.pop(other_index, []))
        group_of[node.name] = index

    def read(node: fx.Node, full: bool = False) -> None:
        group = groups[find(group_of[node.name])]
        group.reads.append(node.name)
        group.full |= full

    layer_nodes: dict[str, tuple[str, str]] = {}
    for node in graph.nodes:
        tensor_inputs = [n for n in node.all_input_nodes if n.name in group_of]
        if node.op == "placeholder":
            new_group(node)
            steps.append((node.name, "full", [], _channels(node)))
        elif node.op == "output":
            for value in tensor_inputs:
                read(value, full=True)
        elif not _is_tensor(node):
            continue
        elif node.op == "call_module" and isinstance(layers[node.target], CompressibleLayer):
            layer = layers[node.target]
            source = tensor_inputs[0]
            if isinstance(layer, CompressibleNorm):
                if layer.kind == "group":
                    raise LcsError(
                        f"layer {node.target} is a GroupNorm, which cannot be made narrower channel by channel",
                        "train structured subspaces with the method's default InstanceNorm",
                    )
                join(node, [source])
                # Per channel (InstanceNorm, BatchNorm): its shift makes every kept channel
                # non-zero, even where the input is zero.
                steps.append((node.name, node.target, [], _channels(node)))
            elif _is_depthwise(layer):
                # Channel i of a depthwise conv reads only input channel i: one group.
                join(node, [source])
                reads_through = [source.name] if layer.bias is None else []
                steps.append((node.name, node.target, reads_through, _channels(node)))
            else:
                _check_plain_grouping(node.target, layer)
                read(source)
                new_group(node)
                steps.append((node.name, node.target, [], _channels(node)))
            if layer.method.compresses:
                masked_in.setdefault(find(group_of[node.name]), []).append(node.target)
            layer_nodes[node.target] = (source.name, node.name)
        elif _per_channel(node, layers, tensor_inputs):
            join(node, tensor_inputs)
            steps.append((node.name, _nonzero_rule(node, layers), [n.name for n in tensor_inputs], _channels(node)))
        else:
            for value in tensor_inputs:
                masked = masked_in.get(find(group_of[value.name]))
                if masked:
                    raise LcsError(
                        f"structured compression cannot follow the channels of layer {masked[0]} through "
                        f"operation {node.name} ({_target_name(node)})",
                        "leave that layer uncompressed with to_subspace's filter_fn, "
                        "or use unstructured or quantized compression",
                    )
                read(value, full=True)
            new_group(node)
            steps.append((node.name, "full", [], _channels(node)))
    roots = sorted({find(index) for index in range(len(groups))})
    position = {root: number for number, root in enumerate(roots)}
    return ChannelPlan(
        model, [groups[root] for root in roots], {name: position[find(g)] for name, g in group_of.items()},
        steps, layer_nodes,
    )


def _channels(node: fx.Node) -> int:
    shape = node.meta["tensor_meta"].shape
    return int(shape[1]) if len(shape) > 1 else 1


def _is_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


def _nonzero_rule(node: fx.Node, layers: dict[str, nn.Module]) -> str:
    """How a per-channel operation's non-zero channels follow from its inputs' (``ChannelPlan.steps``)."""
    target = layers[node.target] if node.op == "call_module" else node.target
    if isinstance(target, NONZERO_AT_ZERO_MODULES) or (
            not isinstance(target, nn.Module) and target in NONZERO_AT_ZERO_FUNCTIONS):
        return "full"
    if node.op == "call_module":
        return "same"
    if target in PRODUCTS:
        return "product"  # a constant factor keeps zeros zero
    if target in ELEMENTWISE and len(node.all_input_nodes) < len(node.args):
        return "full"  # adding a constant makes zero channels non-zero
    return "same"


def _broadcasts_per_channel(source: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """True when ``source`` broadcasts to ``shape`` without spreading one channel over many:
    same rank, same channels, every other size equal or 1 (a squeeze-excitation scale)."""
    return len(source) == len(shape) >= 2 and source[1] == shape[1] and all(
        a in (b, 1) for index, (a, b) in enumerate(zip(source, shape)) if index != 1)


def _per_channel(node: fx.Node, layers: dict[str, nn.Module], inputs: list[fx.Node]) -> bool:
    """True when output channel i of ``node`` depends only on channel i of its tensor inputs."""
    if not inputs:
        return False
    shape = node.meta["tensor_meta"].shape
    same = all(_broadcasts_per_channel(tuple(n.meta["tensor_meta"].shape), tuple(shape)) for n in inputs)
    if node.op == "call_module":
        return type(layers[node.target]) in (*PER_CHANNEL_MODULES, *_stochastic_depth()) and len(inputs) == 1
    target = node.target if node.op == "call_function" else _target_name(node)
    if target in PER_CHANNEL_FUNCTIONS or (node.op == "call_method" and target in PER_CHANNEL_METHODS):
        return len(inputs) == 1
    if target in ELEMENTWISE:
        return same
    if target in COLLAPSING:
        (source,) = inputs
        before = tuple(source.meta["tensor_meta"].shape)
        if target in (torch.mean, "mean") and _spatial_mean(node, len(before)):
            return before[:2] == tuple(shape[:2])
        # One value per channel before and after: [N, C, 1, 1] -> [N, C] keeps channels.
        return len(before) >= 2 and len(shape) >= 2 and before[:2] == tuple(shape[:2]) and all(
            d == 1 for d in list(before[2:]) + list(shape[2:]))
    return False


def _spatial_mean(node: fx.Node, rank: int) -> bool:
    """True for a mean over spatial axes only (``x.mean([2, 3])``): one value per channel."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None:
        return False
    dims = [dims] if isinstance(dims, int) else list(dims)
    return bool(dims) and all(isinstance(d, int) and d % rank >= 2 for d in dims)


def _is_depthwise(layer: CompressibleWeighted) -> bool:
    """One filter per channel (groups == in == out channels): narrowed with its input."""
    return isinstance(layer, CompressibleConv2d) and layer.groups == layer.in_channels == layer.out_channels > 1


def _check_plain_grouping(name: str, layer: CompressibleWeighted) -> None:
    if isinstance(layer, CompressibleConv2d) and layer.groups != 1:
        raise LcsError(
            f"layer {name} is a grouped conv (groups={layer.groups}, {layer.in_channels} -> {layer.out_channels} "
            "channels) that is not depthwise; lcs cannot yet narrow its channels",
            "use unstructured or quantized compression for this model, or leave the layer out with filter_fn",
        )
