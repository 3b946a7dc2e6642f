"""Graph passes for onnxruntime's stand-in graphs, driven by the graph (no model names).

1. onnxscript's ORT fusions (`optimize_for_ort`, Microsoft's fusion tooling for onnxruntime):
   RMSNorm -> SimplifiedLayerNormalization, residual + RMSNorm -> SkipSimplifiedLayerNormalization,
   the GELU and MatMul fusions onnxruntime has kernels for.
2. `pack_matmuls`: MatMuls that read the same activation with constant weights become one MatMul
   over the concatenated weights and a Split (the q/k/v projections; gate and up of a gated MLP).
   A decode step is a chain of matrix-vector products bound by reading the weights: one wide
   product instead of three narrow ones reads the same bytes with fewer kernel calls and splits
   better across threads. The int4/int8 stage then quantizes the packed weight.
3. `ort_simplify.simplify`: GroupQueryAttention reads the packed q/k/v projection itself (no Split),
   identity Reshape chains and the shape arithmetic feeding them go, SiLU becomes QuickGelu.
4. `untie_prepacked`: a weight read by a Gather and by a MatMul (a tied embedding and output
   projection) becomes two initializers, one per use; the weights file stores its bytes once
   (converters/weights_file.py). onnxruntime's CPU MatMul copies its constant weight into a packed
   layout at session creation and then drops the original, but only if nothing else reads it: tied,
   SmolLM2-135M's 113 MB head stayed resident twice (mapped file pages and the packed copy). Untied,
   the Gather's mapping keeps only the pages of the rows it reads.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.converters.ort_simplify import simplify

log = logging.getLogger("edgekit")


def finish_for_onnxruntime(path: Path) -> dict[str, int]:
    """Apply the passes to the ONNX file at `path` in place; returns how often each applied."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    # Weights read into memory: the file they came from is rewritten below.
    model = ir.serde.deserialize_model(onnx.load(str(path), load_external_data=True))
    model, counts = optimize_for_ort(model)
    proto = ir.serde.serialize_model(model)
    counts = {k: int(v) for k, v in counts.items() if v}
    counts["packed_matmuls"] = pack_matmuls(proto)
    counts.update({k: v for k, v in simplify(proto).items() if v})
    counts["untied_weights"] = untie_prepacked(proto)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
                    size_threshold=1024)
    log.info("edgekit: onnxruntime graph passes: %s", counts)
    return counts


def pack_matmuls(model: onnx.ModelProto) -> int:
    """Pack MatMuls sharing their activation and having constant 2-D weights; returns the packs made.

    When every one of them feeds only an Add of a constant bias (q/k/v projections with biases), the
    biases are packed too: one MatMul, one Add (none where every bias is zero), one Split.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    groups: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            groups[node.input[0]].append(node)
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for i in node.input:
            consumers[i].append(node)
    outputs = {o.name for o in graph.output}
    packs = 0
    for x, nodes in groups.items():
        dtypes = {inits[n.input[1]].data_type for n in nodes}
        rows = {inits[n.input[1]].dims[0] for n in nodes}
        if len(nodes) < 2 or len(dtypes) > 1 or len(rows) > 1:
            continue
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        adds = [_bias_add(n, consumers, inits, outputs) for n in nodes]
        with_bias = all(a is not None for a in adds)
        name = f"{nodes[0].name or x}_packed"
        graph.initializer.append(numpy_helper.from_array(np.concatenate(weights, axis=1), f"{name}.weight"))
        sizes = numpy_helper.from_array(np.asarray([w.shape[1] for w in weights], np.int64), f"{name}.sizes")
        graph.initializer.append(sizes)
        made = [helper.make_node("MatMul", [x, f"{name}.weight"], [f"{name}.out"], name=name)]
        biases = [numpy_helper.to_array(inits[_const(a, inits)]) for a in adds] if with_bias else []  # type: ignore
        if any(b.any() for b in biases):  # all-zero biases (a fresh Qwen2's q/k/v): adding 0 changes nothing
            graph.initializer.append(numpy_helper.from_array(np.concatenate(biases), f"{name}.bias"))
            made.append(helper.make_node("Add", [f"{name}.out", f"{name}.bias"], [f"{name}.biased"], name=f"{name}.add"))
        ends = [a.output[0] for a in adds] if with_bias else [n.output[0] for n in nodes]  # type: ignore[union-attr]
        made.append(helper.make_node("Split", [made[-1].output[0], sizes.name], ends, axis=-1, name=f"{name}.split"))
        first = list(graph.node).index(nodes[0])  # x exists before it; every consumer comes after its node
        for n in [*nodes, *(adds if with_bias else [])]:
            graph.node.remove(n)
        for node in reversed(made):
            graph.node.insert(first, node)
        packs += 1
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return packs


_PREPACKED = ("MatMul", "FusedMatMul", "Gemm")  # onnxruntime CPU kernels that pack a constant weight at load


def untie_prepacked(model: onnx.ModelProto) -> int:
    """Give the MatMuls reading a weight that a Gather also reads their own copy of it; returns how many."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, set[str]] = defaultdict(set)
    for node in graph.node:
        for i in node.input:
            if i in inits:
                readers[i].add(node.op_type)
    untied = 0
    for name, ops in readers.items():
        if "Gather" not in ops or not ops & set(_PREPACKED):
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}.packed_use"
        graph.initializer.append(copy)
        for node in graph.node:
            if node.op_type in _PREPACKED:
                node.input[:] = [copy.name if i == name else i for i in node.input]
        untied += 1
    return untied


def _bias_add(matmul: Any, consumers: dict[str, list[Any]], inits: dict[str, Any], outputs: set[str]) -> Any:
    """The Add of a constant 1-D bias that is the only use of the MatMul's output, if there is one."""
    out = matmul.output[0]
    users = consumers.get(out, [])
    if len(users) != 1 or users[0].op_type != "Add" or out in outputs:
        return None
    add = users[0]
    const = _const(add, inits)
    return add if const is not None and len(inits[const].dims) == 1 else None


def _const(add: Any, inits: dict[str, Any]) -> str | None:
    return next((i for i in add.input if i in inits), None)
