"""Control flow ops with nested blocks (rarely emitted by our exports, cheap to support)."""

from __future__ import annotations

import numpy as np

from ..registry import OpArgs, register


@register("cond")
def cond(args: OpArgs):
    branch = args.op.blocks[0] if bool(np.asarray(args["pred"])) else args.op.blocks[1]
    outputs = args.run_block(branch, [])
    return tuple(outputs) if len(outputs) != 1 else outputs[0]


@register("while_loop")
def while_loop(args: OpArgs):
    cond_block, body_block = args.op.blocks
    values = list(args["loop_vars"])
    while bool(np.asarray(args.run_block(cond_block, values)[0])):
        values = args.run_block(body_block, values)
    return tuple(values) if len(values) != 1 else values[0]
