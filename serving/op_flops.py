"""The floating-point operations a TensorFlow call really ran, from a profiler trace.

TensorFlow's graph profiler (`tf.compat.v1.profiler`) counts FLOPs from static shapes,
and a serving signature has few: the batch and sequence sizes come from the parsed
requests, so it skips most of the model. Here the call runs once under
`tf.profiler.experimental` with `host_tracer_level=3`, whose trace records each
kernel's input shapes (`shape` stat: `(float[200,48];float[48,64];float[64])`), and
the matrix products are counted from those shapes: `MatMul`, `BatchMatMulV2` (and
the fused and oneDNN variants grappler substitutes) and `Einsum`, 2 FLOPs a
multiply-add. The element-wise work (bias, activations, softmax) is not counted, as in
the usual forward-FLOPs figure of a network.

A product's transposes are not in the trace (grappler folds transposes into it); they
are inferred from which dimensions agree, and the orientations that fit give the
same count unless both `a · b` and `aᵀ · bᵀ` fit a non-square `b` (then `a · b` is
taken). An `Einsum`'s equation comes from the graph (`einsum_equations`).
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

# kernel names, as the trace spells them (`<node name>:<kernel>`)
MATMUL_KERNELS = frozenset({
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "_FusedMatMul",
    "_MklMatMul", "_MklBatchMatMul", "_MklBatchMatMulV2", "_MklFusedMatMul",
    "_MklNativeFusedMatMul", "_MklNativeBatchMatMulV2", "_MklFusedBatchMatMulV2"})
EINSUM_KERNELS = frozenset({"Einsum", "_MklEinsum"})

_SHAPE = re.compile(r"\w+\[([0-9,]*)\]")


@dataclass(frozen=True)
class TracedOp:
    """One kernel run of the trace: the node's name, the kernel, its input shapes."""
    name: str
    kernel: str
    shapes: tuple


def parse_shapes(text: str) -> tuple:
    """`(float[200,48];float[48,64])` → `((200, 48), (48, 64))` (`float[]`: a scalar)."""
    return tuple(tuple(int(d) for d in dims.split(",") if d)
                 for dims in _SHAPE.findall(text))


def matmul_flops(a: Sequence[int], b: Sequence[int]) -> int:
    """FLOPs of a (batched) matrix product of operands shaped `a` and `b`, whichever
    operand is transposed: `2 · batch · M · N · K`, the batch dimensions broadcast."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a matrix product needs operands of rank >= 2, got {a} and {b}")
    (a1, a2), (b1, b2) = a[-2:], b[-2:]
    if a2 == b1:        # a · b
        m, k, n = a1, a2, b2
    elif a2 == b2:      # a · bᵀ
        m, k, n = a1, a2, b1
    elif a1 == b1:      # aᵀ · b
        m, k, n = a2, a1, b2
    elif a1 == b2:      # aᵀ · bᵀ
        m, k, n = a2, a1, b1
    else:
        raise ValueError(f"no orientation of {a} and {b} multiplies")
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return 2 * int(np.prod(batch, dtype=np.int64)) * m * n * k


def einsum_flops(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """FLOPs of a two-operand `Einsum`: 2 × the product of every index's size (each
    output element sums the product over the contracted indices)."""
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != len(shapes) or "." in equation:
        raise ValueError(f"cannot count einsum {equation!r} on shapes {shapes}")
    sizes: Dict[str, int] = {}
    for letters, shape in zip(inputs, shapes):
        if len(letters) != len(shape):
            raise ValueError(f"einsum {equation!r}: {letters!r} does not fit {shape}")
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64))


def einsum_equations(graph_def) -> Dict[str, str]:
    """Each `Einsum` node's equation by node name, over a `GraphDef` and its function
    library (a SavedModel's or a traced function's)."""
    out: Dict[str, str] = {}
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    for node in nodes:
        if node.op == "Einsum":
            out[node.name] = node.attr["equation"].s.decode()
    return out


def saved_model_graph(export_dir: str):
    """The `serve` meta graph's `GraphDef` of a SavedModel."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    for meta_graph in saved.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph.graph_def
    raise ValueError(f"{export_dir} has no meta graph tagged 'serve'")


def trace_ops(call: Callable[[], object]) -> List[TracedOp]:
    """The kernels one run of `call()` executed, with their input shapes (TensorFlow's
    profiler, host tracer level 3; `call` should be warm, its functions traced)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory(prefix="daian_flops_") as logdir:
        options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=3)
        tf.profiler.experimental.start(logdir, options=options)
        try:
            call()
        finally:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"the profiler wrote no trace under {logdir}")
        space = xplane_pb2.XSpace()
        with open(paths[0], "rb") as f:
            space.ParseFromString(f.read())
    ops = []
    for plane in space.planes:
        stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                node, _, kernel = name.rpartition(":")
                if not node or kernel not in MATMUL_KERNELS | EINSUM_KERNELS:
                    continue
                shape_text = None
                for stat in event.stats:
                    if stat_names.get(stat.metadata_id) == "shape":
                        shape_text = (stat_names.get(stat.ref_value) if stat.ref_value
                                      else stat.str_value)
                if shape_text is None:
                    raise RuntimeError(f"the trace has no input shapes for {name}: was "
                                       "it taken with host_tracer_level=3?")
                ops.append(TracedOp(node, kernel, parse_shapes(shape_text)))
    return ops


def _equation(node: str, equations: Mapping[str, str]) -> str:
    found = {eq for name, eq in equations.items()
             if node == name or node.endswith("/" + name)}
    if len(found) != 1:
        raise ValueError(f"einsum {node}: {'no' if not found else 'several'} equations "
                         f"in the graph ({sorted(found)})")
    return found.pop()


def count_flops(ops: Iterable[TracedOp], equations: Mapping[str, str]) -> int:
    """The matrix-product FLOPs of `trace_ops`' kernels."""
    total = 0
    for op in ops:
        if op.kernel in EINSUM_KERNELS:
            total += einsum_flops(_equation(op.name, equations), op.shapes[:2])
        else:
            total += matmul_flops(op.shapes[0], op.shapes[1])
    return total


def call_flops(call: Callable[[], object], graph_def,
               warm: Optional[int] = 2) -> int:
    """The matrix-product FLOPs of one run of `call()` (warmed `warm` times first);
    `graph_def` holds the `Einsum` nodes' equations."""
    for _ in range(warm or 0):
        call()
    return count_flops(trace_ops(call), einsum_equations(graph_def))
