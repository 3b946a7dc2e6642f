"""A decoder's tied embedding / output matrix quantized once, read by both of its uses.

A tied model reads its token table twice: Gather(table, ids) for the input tokens and, for the logits,
MatMul(h, Transpose(table)), which precision._fold_transposed_weights turns into a constant (K, N) weight.
That weight becomes MatMulNBits, whose packed blocks are laid out (N, K / block, bytes per block): one row
per token. onnxruntime's contrib GatherBlockQuantized reads exactly that (uint8 data at 4 or 8 bits,
gather_axis 0, blocks along the last axis, scales (N, K / block, 1) in float, and without zero points the
same implicit 2^(bits - 1) as MatMulNBits; a CPU kernel in onnxruntime 1.32). So the token Gathers
dequantize their rows from the output projection's own initializers: one quantized copy on disk, not a
quantized head beside a float or int8 table (SmolLM2-135M: 49152 x 576, 113 MB in fp32).

At 4 bits the blocks carry a float minimum (int4_minmax.py): GatherBlockQuantized gives d * (q - 8) and
the block's m + 8d, gathered from the same table of minimums the MatMul's correction reads, is added.
At 8 bits the blocks are symmetric (d = absmax / 127, llama.cpp's Q8_0 form), exact to dequantize.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.converters.int4_minmax import SMALLEST_BLOCK, matmul_nodes
from edgekit.errors import ConfigError

HEAD_BITS = (4, 8)
Q8_MID = 128  # MatMulNBits' and GatherBlockQuantized's implicit zero point at 8 bits


@dataclass(frozen=True)
class _Head:
    """Where one quantized output projection keeps its blocks."""

    data: str  # (N, K / block, block * bits / 8) uint8
    scales: str  # (N * K / block,) float
    minimums: str | None  # (K / block, N) float: m + 8d per block (4 bits); None at 8 bits
    bits: int
    block: int
    k: int
    n: int


@dataclass(frozen=True)
class Shared:
    """What quantize did: tables shared, and the float weights its nodes read (the 4-bit minimums' block-sum
    MatMul, (K / block, N)), which a later MatMul rewrite must leave alone."""

    tables: int
    float_weights: frozenset[str]


def quantize(model: Any, folded: dict[str, str], bits: int, block: int, accuracy_level: int) -> Shared:
    """Each MatMul reading a tied table's transpose (`folded`: its initializer -> the table's, or a constant
    equal to it) at `bits` per weight in blocks of `block` along K (16 where K is not a multiple of it),
    and every axis-0 Gather of that table reading the same blocks; in place. A table whose K is not a
    multiple of 16 is left to the caller (the plain MatMul and embedding rewrites), and so are the
    initializers nothing reads any more (int4_minmax.rewrite drops them)."""
    from onnx import numpy_helper

    if bits not in HEAD_BITS:
        raise ConfigError(f"int4's tied output projection at {bits} bits", found=f"supported: {HEAD_BITS}",
                          fix=f"use head_bits in {HEAD_BITS}")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gathered = {n.input[0] for n in graph.node if _row_gather(n) and n.input[0] in inits}
    # A weight equal to a gathered table's transpose is that table's, whatever `folded` says: the stand-in
    # graph gives its tied output projection a copy of its own (ort_graph.untie_prepacked).
    folded = {**folded, **_transposed_copies(graph, inits, gathered)}
    heads: dict[str, _Head] = {}
    nodes: list[Any] = []
    for node in graph.node:
        table = folded.get(node.input[1]) if node.op_type == "MatMul" else None
        w = numpy_helper.to_array(inits[node.input[1]]) if table in gathered and table not in heads else None
        b = next((c for c in (block, SMALLEST_BLOCK) if w is not None and w.shape[0] % c == 0), None)
        if w is None or b is None or w.dtype != np.float32:
            nodes.append(node)
            continue
        p = node.name or f"{table}_head"
        if bits == 4:
            nodes += matmul_nodes(graph, p, node.input[0], node.output[0], w, b, accuracy_level)
            heads[table] = _Head(f"{p}_q4", f"{p}_q4_scales", f"{p}_q4_min", 4, b, *w.shape)
        else:
            nodes += _q8_nodes(graph, p, node.input[0], node.output[0], w, b, accuracy_level)
            heads[table] = _Head(f"{p}_q8", f"{p}_q8_scales", None, 8, b, *w.shape)
    rows = [_row_tables(graph, h) for h in heads.values()]  # constants: first, before any reader
    out = [n for r in rows for n in r]
    for node in nodes:
        head = heads.get(node.input[0]) if _row_gather(node) else None
        out += [node] if head is None else _gather_nodes(graph, node, head)
    del graph.node[:]
    graph.node.extend(out)  # the float table and its transpose, now unread, go with int4_minmax.rewrite's pruning
    return Shared(len(heads), frozenset(h.minimums for h in heads.values() if h.minimums))


def _transposed_copies(graph: Any, inits: dict[str, Any], tables: set[str]) -> dict[str, str]:
    """MatMul weights equal to a gathered table's transpose -> that table. The exporter folds the Transpose
    of a small tied table into a constant of its own (GPT-2 with 98 tokens x 64: a (64, 98) initializer
    beside the (98, 64) table), where SmolLM2's 49152 x 576 keeps the Transpose node."""
    from onnx import numpy_helper

    by_shape = {tuple(inits[t].dims[::-1]): t for t in tables if len(inits[t].dims) == 2}
    out: dict[str, str] = {}
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        t = by_shape.get(tuple(w.dims)) if w is not None else None
        if t is not None and np.array_equal(numpy_helper.to_array(w).T, numpy_helper.to_array(inits[t])):
            out[w.name] = t
    return out


def _row_gather(node: Any) -> bool:
    return node.op_type == "Gather" and next((a.i for a in node.attribute if a.name == "axis"), 0) == 0


def _q8_nodes(graph: Any, p: str, x: str, y: str, w: np.ndarray, b: int, accuracy_level: int) -> list[Any]:
    """y = x @ w as 8-bit MatMulNBits: symmetric blocks of `b` along K, d = absmax / 127."""
    from onnx import helper, numpy_helper

    k, n = w.shape
    wb = w.reshape(k // b, b, n)
    amax = np.abs(wb).max(axis=1)
    d = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)  # (K/b, N)
    q = (np.clip(np.rint(wb / d[:, None]), -127, 127) + Q8_MID).astype(np.uint8)
    graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(q.transpose(2, 0, 1)), f"{p}_q8"),
                              numpy_helper.from_array(np.ascontiguousarray(d.T).reshape(-1), f"{p}_q8_scales")])
    return [helper.make_node("MatMulNBits", [x, f"{p}_q8", f"{p}_q8_scales"], [y], name=f"{p}_q8",
                             domain="com.microsoft", K=k, N=n, bits=8, block_size=b, accuracy_level=accuracy_level)]


def _row_tables(graph: Any, h: _Head) -> list[Any]:
    """The head's scales (and minimums) as per-token rows (N, K / block, 1): GatherBlockQuantized's scale
    shape, and the minimums gatherable by token. Reshapes of initializers: onnxruntime folds them at load."""
    from onnx import helper, numpy_helper

    shape = f"{h.data}_rows_shape"
    graph.initializer.append(numpy_helper.from_array(np.array([h.n, h.k // h.block, 1], np.int64), shape))
    nodes = [helper.make_node("Reshape", [h.scales, shape], [f"{h.scales}_rows"], name=f"{h.scales}_rows")]
    if h.minimums is not None:
        nodes += [helper.make_node("Transpose", [h.minimums], [f"{h.minimums}_t"], name=f"{h.minimums}_t",
                                   perm=[1, 0]),
                  helper.make_node("Reshape", [f"{h.minimums}_t", shape], [f"{h.minimums}_rows"],
                                   name=f"{h.minimums}_rows")]
    return nodes


def _gather_nodes(graph: Any, node: Any, h: _Head) -> list[Any]:
    """Gather(table, ids) -> the same rows (ids..., K) dequantized from the head's blocks."""
    from onnx import helper, numpy_helper

    ids, out = node.input[1], node.output[0]
    p = node.name or out
    k_name = f"{p}_k"
    graph.initializer.append(numpy_helper.from_array(np.array([h.k], np.int64), k_name))
    blocks = f"{p}_blocks" if h.minimums is None else f"{p}_centred"
    nodes = [helper.make_node("GatherBlockQuantized", [h.data, ids, f"{h.scales}_rows"], [blocks], name=p,
                              domain="com.microsoft", bits=h.bits, block_size=h.block, gather_axis=0,
                              quantize_axis=2)]
    if h.minimums is not None:  # d * (q - 8) + (m + 8d) = d * q + m
        nodes += [helper.make_node("Gather", [f"{h.minimums}_rows", ids], [f"{p}_min"], name=f"{p}_min"),
                  helper.make_node("Add", [f"{p}_centred", f"{p}_min"], [f"{p}_blocks"], name=f"{p}_add_min")]
    nodes += [helper.make_node("Shape", [ids], [f"{p}_ids_shape"], name=f"{p}_ids_shape"),
              helper.make_node("Concat", [f"{p}_ids_shape", k_name], [f"{p}_shape"], name=f"{p}_shape", axis=0),
              helper.make_node("Reshape", [f"{p}_blocks", f"{p}_shape"], [out], name=f"{p}_rows")]
    return nodes
