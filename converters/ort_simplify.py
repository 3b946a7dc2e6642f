"""Graph passes that take nodes out of onnxruntime's stand-in decoder (after ort_graph.pack_matmuls).

On a Qwen2-shaped 12-layer decoder the exported graph had 8 Reshapes and 2 Splits per layer: the
attention interface's (b, s, heads, d) views of q/k/v and of the attention output, each a pair of
Reshapes that ends in the shape it started from, and the Split of the packed q/k/v projection.
GroupQueryAttention takes the packed projection itself as its query, key and value omitted
(onnxruntime's contrib op contract: "packed QKV with shape (batch_size, sequence_length, d) where d
is num_heads * head_size + 2 * kv_num_heads * head_size"), so all of them go.

Every pass reads shapes from the graph's value_info (what the exporter inferred, symbolic dims
named by the export's dynamic dims) and leaves the graph alone where a shape is unknown.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import onnx
from onnx import helper, numpy_helper

Dim = int | str


def simplify(model: onnx.ModelProto) -> dict[str, int]:
    """All passes, in place; how often each applied."""
    counts = {"identity_reshapes": drop_identity_reshapes(model)}
    dead = drop_dead_nodes(model)  # the bypassed Reshapes: the Split's outputs then have one user each
    counts.update(packed_qkv_attention=packed_qkv_attention(model), quick_gelu=quick_gelu(model))
    counts["dead_nodes"] = dead + drop_dead_nodes(model)
    return counts


def _shapes(graph: onnx.GraphProto) -> dict[str, tuple[Dim, ...] | None]:
    """Each value's shape, None where some dim is unknown."""
    out: dict[str, tuple[Dim, ...] | None] = {}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        if not v.type.tensor_type.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim)
        out[v.name] = None if any(d == "" for d in dims) else dims
    return out


def _consumers(graph: onnx.GraphProto) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _read_by_subgraphs(graph: onnx.GraphProto) -> set[str]:
    """Names the bodies of If/Loop/Scan nodes read (from the outer scope too): left as they are."""
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                names |= {i for n in g.node for i in n.input} | _read_by_subgraphs(g)
    return names


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def drop_identity_reshapes(model: onnx.ModelProto) -> int:
    """Bypass each chain of Reshapes that ends in the shape it started from (a Reshape never moves
    data, so such a chain is the identity); returns the chains bypassed. The Reshapes left without
    users go with drop_dead_nodes."""
    graph = model.graph
    shapes = _shapes(graph)
    outputs = {o.name for o in graph.output} | _read_by_subgraphs(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    done = 0
    for node in list(graph.node):
        if node.op_type != "Reshape" or node.output[0] in outputs:
            continue
        end = node.output[0]
        users = consumers.get(end, [])
        if not users or all(u.op_type == "Reshape" and u.input[0] == end for u in users):
            continue  # unused, or not a chain's end: its users are
        start = node.input[0]
        while start in producer and producer[start].op_type == "Reshape":
            start = producer[start].input[0]
        if start == end or shapes.get(start) is None or shapes.get(start) != shapes.get(end):
            continue
        _rename_input(graph, end, start)
        done += 1
    return done


def packed_qkv_attention(model: onnx.ModelProto) -> int:
    """GroupQueryAttention(Split(x) -> q, k, v) becomes GroupQueryAttention(x) with key and value
    omitted, where x's last axis is q, k, v side by side ([q; k; v], as pack_matmuls packs them);
    returns the nodes rewritten."""
    graph = model.graph
    shapes = _shapes(graph)
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users = _consumers(graph)
    elsewhere = {o.name for o in graph.output} | _read_by_subgraphs(graph)
    done = 0
    for node in graph.node:
        if node.op_type != "GroupQueryAttention" or node.domain != "com.microsoft" or len(node.input) < 3:
            continue
        split = producer.get(node.input[0])
        if (split is None or split.op_type != "Split" or list(split.output) != list(node.input[:3])
                or any(len(users[o]) != 1 or o in elsewhere for o in split.output) or len(split.input) < 2
                or split.input[1] not in inits):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        q, k, v = (int(s) for s in numpy_helper.to_array(inits[split.input[1]]))
        axis = next((helper.get_attribute_value(a) for a in split.attribute if a.name == "axis"), 0)
        shape = shapes.get(split.output[0])
        if shape is None or len(shape) != 3 or axis not in (-1, 2):
            continue
        if k != v or q * attrs["kv_num_heads"] != k * attrs["num_heads"]:
            continue  # not (num_heads + 2 * kv_num_heads) heads of one size: the op would slice it otherwise
        node.input[0], node.input[1], node.input[2] = split.input[0], "", ""
        done += 1
    return done


def quick_gelu(model: onnx.ModelProto) -> int:
    """x * Sigmoid(x) (SiLU, the gate of SwiGLU MLPs) becomes onnxruntime's QuickGelu with alpha 1
    (x * Sigmoid(alpha * x)); returns the nodes fused."""
    graph = model.graph
    users = _consumers(graph)
    outputs = {o.name for o in graph.output} | _read_by_subgraphs(graph)
    done = 0
    for sig in list(graph.node):
        if sig.op_type != "Sigmoid" or sig.domain not in ("", "ai.onnx") or sig.output[0] in outputs:
            continue
        x, s = sig.input[0], sig.output[0]
        muls = users.get(s, [])
        if len(muls) != 1 or muls[0].op_type != "Mul" or sorted(muls[0].input) != sorted([x, s]):
            continue
        mul = muls[0]
        fused = helper.make_node("QuickGelu", [x], [mul.output[0]], name=f"{mul.name or s}_quickgelu",
                                 domain="com.microsoft", alpha=1.0)
        at = list(graph.node).index(sig)
        graph.node.remove(mul)
        graph.node.remove(sig)
        graph.node.insert(at, fused)
        done += 1
    return done


def drop_dead_nodes(model: onnx.ModelProto) -> int:
    """Remove nodes none of whose outputs is used (repeatedly), then unused initializers; returns the
    nodes removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output} | _read_by_subgraphs(graph)
    removed = 0
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)
    used = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return removed
