"""int8 accuracy budget: when a fully quantized graph misses the int8 tolerance, find the layers
that hurt most and keep them in float; give up only when that is not enough.

Sensitivity of a node = the error it adds: the relative error of its output in the quantized
graph minus the largest relative error of its activation inputs (errors are measured against the
fp32 graph on calibration feeds, every intermediate tensor exposed). Quantizing a node's inputs
and weights is what adds that error, so excluding the worst nodes removes the most of it.

That ranking is a proxy: keeping a node float also moves the Q/DQ pairs and calibration ranges
around it, so the score does not fall monotonically with the number kept. The search therefore
confirms candidates by quantizing again: the top few alone first (one layer is the usual culprit,
an activation outlier channel feeding one MatMul), then growing sets, re-ranked each round.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.spec import Gate, gate_failures

log = logging.getLogger("edgekit")

SINGLES = 3  # top-ranked nodes tried alone in float (one quantization pass each)
ROUNDS = 4  # then growing sets: 1/16, 1/8, 1/4, 1/2 of the candidates, re-ranked each round
Quantize = Callable[[list[str]], None]  # excluded node names -> writes the quantized graph


def quantize_within_budget(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]], quantize: Quantize,
                           gate: Gate, fixed: Collection[str] = ()) -> dict[str, Any]:
    """Quantize, score against fp32, keep the most sensitive nodes float until within the int8 `gate`.

    `fixed`: nodes excluded anyway (always-float ops), never candidates. The graph left at `quantized`
    is the last one tried: the answer, or the last (largest) attempt when the budget was not met.
    """
    history: list[dict[str, Any]] = []
    score_feeds = feeds[:8]

    def attempt(kept: list[str]) -> bool:  # one quantization pass, scored
        quantize(kept)
        score = output_error(fp32, quantized, score_feeds)
        history.append({"kept_float": len(kept), **score})
        if not within(score, gate):
            log.info("edgekit: int8 with %d nodes in float is outside the budget (%s)", len(kept), score)
        return within(score, gate)

    def result(kept: list[str]) -> dict[str, Any]:
        return {"kept_float_nodes": kept, "budget_rounds": history, "within_budget": within(history[-1], gate)}

    if attempt([]):  # the usual case: a single pass
        return result([])
    ranked = sensitive_nodes(fp32, quantized, score_feeds[:2], fixed)
    if not ranked:  # nothing quantized that could be kept float
        return result([])
    for name in ranked[:SINGLES]:
        if attempt([name]):
            return result([name])
    kept: list[str] = []
    total = len(ranked)
    for rnd in range(ROUNDS):
        kept += [n for n in ranked if n not in kept][: max(1, total // (16 >> rnd))]
        if attempt(kept) or rnd == ROUNDS - 1:
            break
        ranked = [n for n in sensitive_nodes(fp32, quantized, score_feeds[:2], fixed) if n not in kept]
        if not ranked:
            break
    return result(kept)


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


def sensitive_nodes(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]],
                    fixed: Collection[str] = ()) -> list[str]:
    """Nodes to keep in float, the one adding the most error first (none of `fixed`)."""
    nodes = _quantized_nodes(fp32, quantized)
    tensors = sorted({t for out, acts in nodes.values() for t in [out, *[a for a, _ in acts]]})
    if not tensors:
        return []
    errors = _tensor_errors(fp32, quantized, feeds, tensors)
    local: dict[str, float] = {}
    for name, (out, acts) in nodes.items():
        added = errors.get(out, 0.0) - max((errors.get(a, 0.0) for a, _ in acts), default=0.0)
        # A node that is float anyway still reads Q/DQ inputs when their producer is quantized (the
        # Q/DQ quantizer quantizes an Add's output, say): that producer is the one to keep in float.
        for who in [p for _, p in acts if p and p not in fixed] if name in fixed else [name]:
            local[who] = max(local.get(who, float("-inf")), added)
    return sorted((n for n in local if n not in fixed), key=lambda k: -local[k])


def _quantized_nodes(fp32: Path, quantized: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Nodes reading Q/DQ inputs: name -> (float output, [(float activation before its Q/DQ, its producer)])."""
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

    nodes: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or not n.name:
            continue
        quantized_inputs = [t for t in n.input if producer.get(t) is not None and producer[t].op_type == "DequantizeLinear"]
        if not quantized_inputs or n.output[0] not in fp32_tensors:
            continue
        acts = [o for o in (origin(t) for t in quantized_inputs) if o is not None and o in fp32_tensors]
        nodes[n.name] = (n.output[0], [(a, producer[a].name) for a in acts])
    return nodes


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
