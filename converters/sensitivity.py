"""int8 accuracy budget: when a fully quantized graph misses the int8 tolerance, find the layers
that hurt most and keep them in float, round by round; give up only when that is not enough.

Sensitivity of a node = the error it adds: the relative error of its output in the quantized
graph minus the largest relative error of its activation inputs (errors are measured against the
fp32 graph on calibration feeds, every intermediate tensor exposed). Quantizing a node's inputs
and weights is what adds that error, so excluding the worst nodes removes the most of it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.spec import Gate, gate_failures

log = logging.getLogger("edgekit")

ROUNDS = 4  # each round keeps more nodes in float: 1/16, then 1/8, 1/4, 1/2 of the candidates
Quantize = Callable[[list[str]], None]  # excluded node names -> writes the quantized graph


def quantize_within_budget(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]], quantize: Quantize,
                           gate: Gate) -> dict[str, Any]:
    """Quantize, score against fp32, exclude the most sensitive nodes until within `tolerance`."""
    kept: list[str] = []
    history: list[dict[str, Any]] = []
    score_feeds = feeds[:8]
    for rnd in range(ROUNDS + 1):
        quantize(kept)
        score = output_error(fp32, quantized, score_feeds)
        history.append({"kept_float": len(kept), **score})
        if within(score, gate) or rnd == ROUNDS:
            break
        ranked = [n for n in sensitive_nodes(fp32, quantized, score_feeds[:2]) if n not in kept]
        if not ranked:
            break
        step = max(1, (len(ranked) + len(kept)) // (16 >> rnd))
        kept += ranked[:step]
        log.info("edgekit: int8 outside budget (%s); keeping %d nodes in float", score, len(kept))
    return {"kept_float_nodes": kept, "budget_rounds": history, "within_budget": within(history[-1], gate)}


def within(score: dict[str, float], gate: Gate) -> bool:
    return not gate_failures(score, gate)


def _session(path: Path, outputs: list[str] | None = None, optimize: bool = True) -> Any:
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if outputs is None:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    # Expose intermediate tensors; unfused (the fused kernels would hide them anyway).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for name in outputs:
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def output_error(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Worst cosine / max_rel over the float outputs, and top-1 agreement of 2-D outputs (logits)."""
    from edgekit.converters.parity import compare_outputs

    a, b = _session(fp32), _session(quantized)
    names = [o.name for o in a.get_outputs() if o.type == "tensor(float)"]
    refs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    gots: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in feeds:
        for n, r, g in zip(names, a.run(names, f), b.run(names, f)):
            refs[n].append(r.reshape(r.shape[0], -1))
            gots[n].append(g.reshape(g.shape[0], -1))
    score = {"cosine": 1.0, "max_rel": 0.0, "top1": 1.0}
    for n in names:
        # Feeds of different lengths (a decoder's prompt and decode steps) are compared per shape.
        for width in sorted({r.shape[1] for r in refs[n]}):
            ref = np.concatenate([r for r in refs[n] if r.shape[1] == width])
            got = np.concatenate([g for g in gots[n] if g.shape[1] == width])
            s = compare_outputs(ref, got)
            score["cosine"] = min(score["cosine"], s["cosine"])
            score["max_rel"] = max(score["max_rel"], s["max_rel"])
            if len(_shape(a, n)) == 2:
                score["top1"] = min(score["top1"], float((ref.argmax(1) == got.argmax(1)).mean()))
    return {k: round(v, 6) for k, v in score.items()}


def _shape(session: Any, name: str) -> list[Any]:
    return next(o.shape for o in session.get_outputs() if o.name == name)


def sensitive_nodes(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]]) -> list[str]:
    """Quantized nodes, the one adding the most error first."""
    import onnx

    graph = onnx.load(str(quantized), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    producer = {t: n for n in graph.node for t in n.output}
    ref = onnx.load(str(fp32), load_external_data=False).graph
    # Only float tensors can be compared (and exposed as float outputs): the pre-processed graph
    # carries inferred types in value_info.
    fp32_tensors = {v.name for v in [*ref.value_info, *ref.output] if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    fp32_tensors &= {t for n in ref.node for t in n.output}

    def origin(t: str) -> str | None:
        # DequantizeLinear <- QuantizeLinear <- the float activation (None for a weight).
        dq = producer.get(t)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
            return None
        return q.input[0]

    nodes: dict[str, tuple[str, list[str]]] = {}
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or not n.name:
            continue
        quantized_inputs = [t for t in n.input if producer.get(t) is not None and producer[t].op_type == "DequantizeLinear"]
        if not quantized_inputs or n.output[0] not in fp32_tensors:
            continue
        acts = [o for o in (origin(t) for t in quantized_inputs) if o is not None and o in fp32_tensors]
        nodes[n.name] = (n.output[0], acts)
    tensors = sorted({t for out, acts in nodes.values() for t in [out, *acts]})
    if not tensors:
        return []
    errors = _tensor_errors(fp32, quantized, feeds, tensors)
    local = {name: errors.get(out, 0.0) - max((errors.get(t, 0.0) for t in acts), default=0.0)
             for name, (out, acts) in nodes.items()}
    return sorted(local, key=lambda k: -local[k])


def _tensor_errors(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]], tensors: list[str]) -> dict[str, float]:
    a, b = _session(fp32, tensors), _session(quantized, tensors)
    num = dict.fromkeys(tensors, 0.0)
    den = dict.fromkeys(tensors, 0.0)
    for f in feeds:
        for t, r, g in zip(tensors, a.run(tensors, f), b.run(tensors, f)):
            r64, g64 = np.asarray(r, np.float64), np.asarray(g, np.float64)
            if r64.shape != g64.shape:
                continue
            num[t] += float(((r64 - g64) ** 2).sum())
            den[t] += float((r64**2).sum())
    return {t: (num[t] / den[t]) ** 0.5 if den[t] > 0 else 0.0 for t in tensors}
