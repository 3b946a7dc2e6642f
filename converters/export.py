"""PyTorch -> ONNX, one graph at a time, with `torch.onnx.export(dynamo=True)` and named Dims.

Why dynamo: it is the exporter PyTorch maintains, and named `torch.export.Dim`s give the ONNX
graph readable dynamic dims ("batch", "sequence") that the manifest and TensorRT profiles reuse.
Why opset 18: opset 17 is refused or silently raised to 18 by the dynamo exporter, and opset 23
emits ONNX Attention/RMSNormalization/RotaryEmbedding, which onnxruntime's quantization tools
cannot handle yet (a shape inference assertion; a QAttention that will not load).
"""
from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgekit.contract import GraphSpec, TensorSpec
from edgekit.errors import ExportError

DEFAULT_OPSET = 18

_ONNX_TO_NUMPY = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


@dataclass
class GraphExport:
    """What one ONNX graph is made from: a module taking positional tensors, returning a tuple.

    `dynamic_shapes` follows torch.export: one entry per positional argument, each a dict
    {axis: Dim} (or a nested tuple for varargs). `quant_exclude_ops` names op types the int8
    stage must leave in float (per family: the attention-mask path, Softmax...). `translations`
    maps custom torch ops the module calls to the ONNX Script functions that write them.
    """

    name: str
    module: Any  # torch.nn.Module or torch.export.ExportedProgram
    args: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: Any = None
    quant_exclude_ops: list[str] = field(default_factory=list)
    opset: int = DEFAULT_OPSET
    translations: dict[Any, Any] = field(default_factory=dict)
    path: Path | None = None  # where export_graph wrote it (specs read the graph back: last op, ...)
    # An int4 artifact keeps this graph's weights at 8 bits (blockwise): a vision encoder, whose rows feed
    # every image token of the prompt, while the decoder's weights (most of the model) go to 4 bits.
    int4_as_int8: bool = False


def export_graph(g: GraphExport, path: Path) -> GraphSpec:
    """Export `g` to `path` (weights in `path.data` beside it) and describe its IO."""
    try:
        with torch.no_grad(), _quiet_torch():
            program = torch.onnx.export(
                g.module,
                g.args,
                dynamo=True,
                input_names=g.input_names,
                output_names=g.output_names,
                dynamic_shapes=g.dynamic_shapes,
                opset_version=g.opset,
                custom_translation_table=g.translations or None,
                external_data=True,
                optimize=False,  # optimized below, without the rules that drop epsilons
                verbose=False,
            )
            optimize_exactly(program.model)
            program.save(str(path), external_data=True)
        g.path = path
    except Exception as e:  # torch raises many types; the user needs the operator and layer
        raise ExportError(
            f"PyTorch -> ONNX export of graph '{g.name}' failed: {_explain(e)}",
            fix="replace the unsupported operation in the model, or export it yourself with "
            "torch.export and pass the .pt2 file",
        ) from e
    return describe_onnx(path)


def optimize_exactly(model: Any) -> None:
    """onnxscript's graph optimizer (what `torch.onnx.export(optimize=True)` runs: constant folding,
    the default rewrite rules, clean-ups), without its no-op rules. Those match constants *close to*
    0 or 1 (abs 1e-8, rel 1e-5), so `variance + 1e-8` is removed as `x + 0`: an RMSNorm with eps
    1e-8 (Helium) then computes rsqrt(0) = inf on a zero row (a pad token's zero embedding), and the
    left-padded batch's logits turn non-finite in onnxruntime while PyTorch's stay finite."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript import rewriter
    from onnxscript.optimizer import _constant_folding
    from onnxscript.rewriter.rules.common import _basic_rules, _no_op

    # SlicesSplit (two Slices of one input -> Split) is a two-output pattern that onnxscript matches by
    # rescanning the graph per candidate: on a 30-layer Llama (5682 nodes before) the optimizer takes
    # 9.9 s with it and 2.1 s without, and the optimized graph is the same (1929 nodes, no Split made).
    # Where it would fire, two Slices compute what the Split does.
    exact = [r for r in rewriter._DEFAULT_REWRITE_RULES
             if r not in set(_no_op.rules.rules) and r is not _basic_rules.slice_split_rule]
    ir.passes.PassManager([
        ir.passes.PassManager([_constant_folding.FoldConstantsPass(shape_inference=True,
                                                                   input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                                                   output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT),
                               rewriter.RewritePass(exact), common.RemoveUnusedNodesPass(),
                               common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()],
                              steps=2, early_stop=True),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    ])(model)


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence the exporter's chatter (torchvision notes, axis-rename and deprecation warnings):
    it says nothing a user can act on, and `--json` users read stderr for real errors only."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _explain(e: Exception) -> str:
    text = str(e)
    # The dynamo exporter names the missing op as e.g. "aten::foo" or "aten.foo.default"; show that first.
    ops = sorted(set(re.findall(r"aten[.:]{1,2}[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?", text)))
    # Non-aten ops (prims, custom namespaces) appear as OpOverload(op='ns.name') in the summary.
    ops += sorted(set(re.findall(r"OpOverload\(op='([A-Za-z0-9_.]+)'", text)) - set(ops))
    summary = re.findall(r"^<class '[\w.]+'>: (.+)$", text, flags=re.M)  # torch's "Exception summary"
    first = summary[0] if summary else next((line for line in text.splitlines() if line.strip()), type(e).__name__)
    if ops:
        return f"unsupported operator(s) {ops}: {first[:300]}"
    return f"{type(e).__name__}: {first[:400]}"


def producer_op(path: Path, output: str) -> str:
    """The op type that computes `output` in the ONNX graph, looking through Identity/Cast/Reshape."""
    import onnx

    nodes = {o: n for n in onnx.load(str(path), load_external_data=False).graph.node for o in n.output}
    name, seen = output, 0
    while name in nodes and seen < 8:
        node = nodes[name]
        if node.op_type not in ("Identity", "Cast", "Reshape", "Squeeze", "Flatten"):
            return str(node.op_type)
        name, seen = node.input[0], seen + 1
    return ""


def describe_onnx(path: Path) -> GraphSpec:
    """Read input/output names, dtypes and (named) dims from an ONNX file without loading weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim)
        return TensorSpec(v.name, _ONNX_TO_NUMPY.get(t.elem_type, f"onnx-{t.elem_type}"), dims)

    inits = {i.name for i in model.graph.initializer}
    return GraphSpec(file=path.name, inputs=tuple(spec(v) for v in model.graph.input if v.name not in inits),
                     outputs=tuple(spec(v) for v in model.graph.output))
