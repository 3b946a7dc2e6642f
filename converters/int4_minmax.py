"""int4 blocks with a float minimum (llama.cpp's Q4_1 form) on onnxruntime's fast symmetric int4 kernel.

Each block of `block` weights along K is stored as w = d * q + m: q in 0..15, d = (max - min) / 15, m
the block's minimum, in float. onnxruntime's own round-to-nearest (MatMulNBitsQuantizer) instead
stretches every block's range to include 0 and rounds the zero point to an integer, so a block that
does not straddle 0 loses levels (SmolLM2-135M, whose weights lie on a Q4_1 grid: relative weight
error 0.035 of the tensor's absmax against 8e-8 here). MatMulNBits takes float zero points, but its
CPU kernel then leaves the integer path (a 1536x576 MatMul at batch 1: 11 ms against 0.15 ms).

So the minimum is split off: MatMulNBits without zero points computes d * (q - 8) per block on the
fast kernel, and the rest, sum_b (m + 8 d)[b, n] * sum_{k in b} x[k], is a small float MatMul of the
input's block sums (K / block rows, about 3% of the main MatMul's work at block 32).
"""
from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import numpy as np

log = logging.getLogger("edgekit")

LEVELS = 15  # 4 bits
MID = 8  # MatMulNBits' implicit zero point when none is given: 2 ** (bits - 1)


def quantize_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, N) float weights -> q (K/block, block, N) uint8, d and m (K/block, N) float32: w = d * q + m."""
    k, n = w.shape
    wb = w.reshape(k // block, block, n).astype(np.float32)
    lo, hi = wb.min(1), wb.max(1)
    d = (hi - lo) / LEVELS
    d = np.where(d > 0, d, 1.0).astype(np.float32)  # a constant block: q = 0, w = m exactly
    q = np.clip(np.rint((wb - lo[:, None]) / d[:, None]), 0, LEVELS).astype(np.uint8)
    return q, d, lo.astype(np.float32)


def pack(q: np.ndarray) -> np.ndarray:
    """q (K/block, block, N) -> MatMulNBits' B (N, K/block, block/2): two values a byte, the lower k low."""
    t = np.transpose(q, (2, 0, 1))  # (N, blocks, block)
    return (t[..., 0::2] | (t[..., 1::2] << 4)).astype(np.uint8)


SMALLEST_BLOCK = 16  # MatMulNBits' smallest block


def rewrite(model: Any, block: int, accuracy_level: int, skip: Collection[str] = ()) -> dict[str, int]:
    """Every MatMul with a constant (K, N) weight (but those named in `skip`) as MatMulNBits plus the
    block-sum correction, in place:
    blocks of `block` along K, or of 16 where K is not a multiple of it; MatMuls whose K is not a multiple
    of 16 stay float (logged). Returns the counts: {"int4": ..., "int4_block16": ..., "float": ...}."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.input, *graph.value_info]
             if v.type.tensor_type.HasField("shape")}
    nodes, done, small, kept = [], 0, 0, []
    for node in graph.node:
        const = node.op_type == "MatMul" and node.input[1] in inits and node.input[1] not in skip
        w = numpy_helper.to_array(inits[node.input[1]]) if const else None
        b = next((c for c in (block, SMALLEST_BLOCK) if w is not None and w.ndim == 2 and w.shape[0] % c == 0), None)
        if w is None or b is None or w.dtype != np.float32:
            if w is not None:
                kept.append(node.name)
            nodes.append(node)
            continue
        small += b != block
        nodes += matmul_nodes(graph, node.name or f"matmul{done}", node.input[0], node.output[0], w, b,
                              accuracy_level, ranks.get(node.input[0]))
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {t for nd in graph.node for t in nd.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if kept:
        log.warning("edgekit: int4: %d MatMuls kept in float (K not a multiple of %d): %s", len(kept),
                    SMALLEST_BLOCK, kept[:8])
    return {"int4": done, "int4_block16": small, "float": len(kept)}


def matmul_nodes(graph: Any, p: str, x: str, y: str, w: np.ndarray, b: int, accuracy_level: int,
                 rank: int | None = None) -> list[Any]:
    """y = x @ w for a (K, N) float weight, K a multiple of `b`: MatMulNBits plus the block-sum correction
    (`rank`: x's rank where the graph knows it). Adds the initializers (named `p`_q4...) to `graph`;
    returns the nodes, in order."""
    from onnx import helper, numpy_helper

    k, n = w.shape
    q, d, m = quantize_blocks(w, b)
    graph.initializer.extend([
        numpy_helper.from_array(pack(q), f"{p}_q4"),
        numpy_helper.from_array(np.ascontiguousarray(d.T).reshape(-1), f"{p}_q4_scales"),
        numpy_helper.from_array(m + MID * d, f"{p}_q4_min"),
    ])
    return [helper.make_node("MatMulNBits", [x, f"{p}_q4", f"{p}_q4_scales"], [f"{p}_q4_main"], name=f"{p}_q4",
                             domain="com.microsoft", K=k, N=n, bits=4, block_size=b, accuracy_level=accuracy_level),
            *_correction(graph, p, x, y, k // b, b, rank)]


def _correction(graph: Any, p: str, x: str, y: str, blocks: int, block: int, rank: int | None) -> list[Any]:
    """y = main + (x's block sums) @ min: 4 nodes where x's rank is known (its leading dims kept by
    Reshape's 0s, so the sums' MatMul already has main's shape), else 6 (the sums flattened to
    (-1, blocks), the correction reshaped to main's shape at run time)."""
    from onnx import helper, numpy_helper

    lead = [0] * (rank - 1) if rank else [-1]
    graph.initializer.extend([numpy_helper.from_array(np.array([*lead, blocks, block], np.int64), f"{p}_q4_blocks"),
                              numpy_helper.from_array(np.array([-1], np.int64), f"{p}_q4_axis")])
    corr = f"{p}_q4_corr"
    nodes = [helper.make_node("Reshape", [x, f"{p}_q4_blocks"], [f"{p}_q4_xb"], name=f"{p}_q4_xb"),
             helper.make_node("ReduceSum", [f"{p}_q4_xb", f"{p}_q4_axis"], [f"{p}_q4_sums"], name=f"{p}_q4_sums",
                              keepdims=0),
             helper.make_node("MatMul", [f"{p}_q4_sums", f"{p}_q4_min"], [corr], name=corr)]
    if not rank:
        nodes += [helper.make_node("Shape", [f"{p}_q4_main"], [f"{p}_q4_shape"], name=f"{p}_q4_shape"),
                  helper.make_node("Reshape", [corr, f"{p}_q4_shape"], [f"{corr}_r"], name=f"{corr}_r")]
        corr = f"{corr}_r"
    return [*nodes, helper.make_node("Add", [f"{p}_q4_main", corr], [y], name=f"{p}_q4_add")]
