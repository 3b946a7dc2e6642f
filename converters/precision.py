"""Precision stage: rewrite each exported fp32 graph as fp16, int8 or int4, in place.

The precision lives in the graph itself (Cast and Q/DQ nodes), which is what TensorRT's strongly
typed networks and onnxruntime both read. What was produced is returned for the manifest; a
precision that cannot be produced raises, it never degrades silently to fp32.
"""
from __future__ import annotations

import logging
import platform
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ConfigError
from edgekit.manifest import Precision

if TYPE_CHECKING:
    from edgekit.converters.export import GraphExport
    from edgekit.converters.spec import Calibration, ConvertOptions

log = logging.getLogger("edgekit")

# Ops whose fp16 rounding hurts accuracy most: normalization statistics, softmax, reductions and
# the pieces of decomposed LayerNorm/RMSNorm (Pow, Sqrt, Reciprocal).
FP16_KEEP_FP32 = [
    "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization", "Softmax", "LogSoftmax",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2", "Pow", "Sqrt", "Reciprocal", "Exp", "Log",
    "Range", "CumSum", "TopK",
    # onnxruntime's fused attention writes its present into the past buffer it was bound to: its cache
    # inputs/outputs must stay the graph's float32 buffers, not casts of them.
    "GroupQueryAttention",
]
# Always excluded from int8 Q/DQ: they collapse accuracy (the attention-mask path, Where with the
# dtype's min then Add, calibrates to a scale near 1e36: greedy agreement 0 of 20 tokens on a tiny
# GPT-2 when quantized) or TensorRT runs them in float anyway.
INT8_ALWAYS_EXCLUDE = ["Softmax", "Where", "Pow", "LayerNormalization", "ReduceMean", "Sqrt", "Div", "Erf", "Tanh"]
# static Q/DQ (what TensorRT reads) | dynamic (per-tensor activations, onnxruntime on the CPU) |
# blockwise (MatMulNBits at 8 bits: per-block weights and per-block int8 activations, onnxruntime on the CPU)
INT8_METHODS = ("static", "dynamic", "blockwise")
# blockwise: 8-bit weights with a scale per INT8_BLOCK input channels; at accuracy_level 4 onnxruntime also
# quantizes each activation row per block to int8 (the form of llama.cpp's Q8_0, which uses blocks of 32).
# Blocks of 16: SmolLM2-135M, 6 held-out paragraphs (569 scored tokens): perplexity +0.01% over fp32 at 16
# against +0.96% at 32 (+53% for per-tensor dynamic int8); one MatMul at batch 1, 1 thread: 108-153 us at
# 16, 106 us at 32, 103-106 us dynamic, 240 us fp32.
INT8_BLOCK, INT8_BLOCK_ACCURACY = 16, 4
TENSORRT_TARGETS = ("tensorrt", "jetson")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Int8Form:
    """How static int8 is laid out for a target.

    TensorRT reads symmetric Q/DQ only (zero point 0). onnxruntime runs unsigned asymmetric
    activations fastest and closest: ReLU outputs use all 256 levels instead of the 128 positive
    ones (ResNet-18-shaped digits model, held-out top-1 agreement with fp32 0.948 -> 1.0, batch-1
    latency 0.27 -> 0.17 ms on an AVX-512 VNNI Xeon).
    """

    asymmetric: bool
    weight_bits: int


def int8_form(target: str) -> Int8Form:
    return Int8Form(asymmetric=target not in TENSORRT_TARGETS, weight_bits=int8_weight_bits(target))


def int8_weight_bits(target: str) -> int:
    """8, or 7 where onnxruntime's int8 kernels can saturate.

    Without VNNI, onnxruntime's x86 int8 GEMM sums pairs of u8*s8 products in int16
    (vpmaddubsw), and full-range weights overflow it (digits CNN on an AVX2 EPYC: 95.8% -> 92.7%
    accuracy with 8-bit weights, 96.0% with 7-bit). VNNI (vpdpbusd) accumulates in int32; GPUs
    and ARM have no such limit.
    """
    if target != "cpu" or platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return 8
    try:
        flags = CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux: assume the worst case
        return 7
    return 8 if re.search(r"\b(avx512_vnni|avx_vnni)\b", flags) else 7


# Bits of a tied embedding / output matrix under int4 (tied_head.py), in blocks of the int4 block size.
# 8, as llama.cpp's Q4_1 files store it (SmolLM2-135M's GGUF: token_embd at Q8_0, blocks of 32): at 4 bits
# SmolLM2-135M's held-out perplexity is +9.0% over fp32 (+7.3% with the table as its own int8 rows), past
# the +5% gate, against +0.12% at 8 bits (+0.21% with the matrix fp32); each graph 106 MB at 4 bits,
# 116 MB at 8, 198 MB with it fp32 (README, Real weights).
TIED_HEAD_BITS = 8


@dataclass(frozen=True)
class Int4Config:
    """Block-wise int4 weights (MatMulNBits): per-block scale and float minimum (int4_minmax.py);
    accuracy_level 4 multiplies with int8 activations (integer kernels, fastest), 1 in fp32. A tied
    embedding / output matrix (tied_head.py) is quantized once at `head_bits` (4 or 8) for both uses."""

    block_size: int
    accuracy_level: int
    head_bits: int = TIED_HEAD_BITS


# Tried in order until the parity gate passes (or given outright: int4_block_size=). Blocks of 32 with a
# float minimum (int4_minmax.py, llama.cpp's Q4_1 form) and int8 activation kernels first, then the same
# weights with float activations. Two at most: every try is a full parity run (SmolLM2-135M on 2 cores:
# minutes each), and larger blocks failed the +5% perplexity gate on real weights (issue 18: block 32
# round-to-nearest already +23%).
INT4_CANDIDATES = (Int4Config(32, 4), Int4Config(32, 1))


def precision_candidates(opts: ConvertOptions) -> tuple[Int4Config | None, ...]:
    """The precision settings to try, in order: one, except int4 without an explicit block size."""
    if opts.precision != "int4":
        return (None,)
    if opts.int4_block_size is not None:
        return (Int4Config(opts.int4_block_size, 4),)
    return INT4_CANDIDATES


def apply_precision(graphs: dict[Path, GraphExport], opts: ConvertOptions, int8_method: str,
                    calibration: Calibration, int4: Int4Config | None = None) -> Precision:
    """Rewrite every exported graph (file -> what it was exported from) at `opts.precision`, in place;
    what was produced, for the manifest. Static int8 calibrates each graph on its own feeds."""
    p = opts.precision
    if p == "fp32":
        return Precision(requested=p, produced=p)
    if p == "fp16":
        for path in graphs:
            _to_fp16(path)
        return Precision(p, p, "casts", True, {"kept_fp32": FP16_KEEP_FP32, "io_dtype": "unchanged"})
    if p == "int4":
        cfg = int4 or precision_candidates(opts)[0]
        assert cfg is not None
        counts: dict[str, int] = {}  # MatMuls and tables per form, over every graph (portable and stand-ins)
        eight = sorted(g.name for g in graphs.values() if g.int4_as_int8)
        for path, g in graphs.items():
            if g.int4_as_int8:
                _int8_blockwise(path)
                continue
            for k, v in _int4_weights(path, cfg).items():
                counts[k] = counts.get(k, 0) + v
        tied = {"bits": cfg.head_bits, "tables": counts.pop("tied_tables"),
                "blocks": "scale and float minimum (Q4_1 form)" if cfg.head_bits == 4 else "symmetric (Q8_0 form)",
                "token_rows": "GatherBlockQuantized from the output projection's blocks"}
        # MatMulNBits is an onnxruntime contrib op: TensorRT cannot build it.
        return Precision(p, p, "weight-only-matmulnbits", False,
                         {"block_size": cfg.block_size, "accuracy_level": cfg.accuracy_level,
                          "blocks": "scale and float minimum (Q4_1 form)", "tied_head": tied,
                          "int8_row_tables": counts.pop("int8_tables"), "matmuls": counts,
                          **({"int8_graphs": eight} if eight else {})})
    if int8_method == "blockwise":
        for path in graphs:
            _int8_blockwise(path)
        return Precision(p, p, "blockwise-matmulnbits", False, {
            "weight_bits": 8, "block_size": INT8_BLOCK, "accuracy_level": INT8_BLOCK_ACCURACY,
            "activations": f"int8 per row per block of {INT8_BLOCK}"})
    form = int8_form(opts.target)
    if int8_method == "dynamic":
        for path in graphs:
            _int8_dynamic(path, form.weight_bits == 7)
        return Precision(p, p, "dynamic", False, {"per_channel": True, "weight_bits": form.weight_bits})
    budget: dict[str, dict[str, Any]] = {}
    for path, g in graphs.items():
        exclude = sorted(set(INT8_ALWAYS_EXCLUDE) | set(g.quant_exclude_ops))
        feeds = [s[g.name] for s in calibration.feeds if g.name in s]
        budget[g.name] = _int8_static(path, feeds, exclude, form)
    return Precision(p, p, "static-qdq", not form.asymmetric, {
        # Layers the accuracy budget kept in float (sensitivity search), per graph, with the scores.
        "kept_float_nodes": {k: v["kept_float_nodes"] for k, v in budget.items()},
        "float_infinite_padding": {k: v["float_infinite_padding"] for k, v in budget.items() if v["float_infinite_padding"]},
        "budget_rounds": {k: v["budget_rounds"] for k, v in budget.items()},
        "activations": "uint8 asymmetric" if form.asymmetric else "int8 symmetric", "per_channel": True,
        "calibration_samples": _count(calibration.feeds), "weight_bits": form.weight_bits,
        "excluded_ops": sorted(set(INT8_ALWAYS_EXCLUDE))})


def _count(samples: list[dict[str, dict[str, Any]]]) -> int:
    """Number of calibration samples (each feed holds a batch)."""
    return sum(next(iter(next(iter(s.values())).values())).shape[0] for s in samples if s)


def _save(model: Any, path: Path) -> None:
    """Save with weights in `<name>.data` beside the graph (no 2 GB protobuf limit)."""
    import onnx

    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)


def _to_fp16(path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(path))
    ops = set(DEFAULT_OP_BLOCK_LIST) | set(FP16_KEEP_FP32)
    fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=sorted(ops),
                                    node_block_list=_fp32_chains(model.graph, ops))
    _drop_fp16_round_trips(fp16.graph)
    _save(fp16, path)


def _fp32_chains(graph: Any, ops: set[str]) -> list[str]:
    """Named nodes that only continue a kept-fp32 computation: every input is a kept node's output or
    a constant. RMSNorm's variance + eps (an Add after ReduceMean) is one: on SmolLM2-135M the mean of
    x^2 reaches 8.9e5, past fp16's 65504, so that Add must stay fp32 with the Pow and ReduceMean."""
    consts = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    kept: set[str] = set()  # outputs of nodes that stay fp32
    names: list[str] = []
    for n in graph.node:  # ONNX stores nodes in topological order
        inputs = [i for i in n.input if i]
        chained = bool(inputs) and any(i in kept for i in inputs) and all(i in kept or i in consts for i in inputs)
        if n.op_type in ops or (chained and n.name):
            kept.update(n.output)
            if n.op_type not in ops:
                names.append(n.name)
    return names


def _drop_fp16_round_trips(graph: Any) -> None:
    """Make each Cast-to-fp32 of a Cast-to-fp16 read the source directly. The converter casts every
    kept-fp32 node's output to fp16, then back for the next kept node: RMSNorm's Pow -> ReduceMean went
    through fp16 and overflowed to inf once |x| > 255 (SmolLM2-135M residual stream: |x| up to 942)."""
    from onnx import TensorProto

    def cast_to(n: Any) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    producer = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        src = producer.get(n.input[0]) if cast_to(n) == TensorProto.FLOAT else None
        if src is not None and cast_to(src) == TensorProto.FLOAT16:
            n.input[0] = src.input[0]
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for n in [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]:
        graph.node.remove(n)


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._it: Iterator[dict[str, Any]] = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)


def _int8_static(path: Path, feeds: list[dict[str, Any]], exclude_ops: list[str], form: Int8Form) -> dict[str, Any]:
    """Static Q/DQ within the int8 accuracy budget; returns what was kept in float and the scores."""
    import onnx

    from edgekit.converters.parity import OUTPUT_GATES
    from edgekit.converters.sensitivity import quantize_within_budget

    if not feeds:
        raise ConfigError(
            "int8 (static Q/DQ) needs calibration data",
            found="no calibration samples",
            fix="pass calibration=[...] samples (CLI: --calibration PATH), or int8_method='dynamic' for CPU",
        )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = path.with_name(path.stem + ".pre.onnx")
    quant_pre_process(str(path), str(pre), skip_symbolic_shape=True, save_as_external_data=True,
                      all_tensors_to_one_file=True, external_data_location=pre.name + ".data")
    graph = onnx.load(str(pre), load_external_data=False).graph
    infinite = _infinite_pads(graph)
    if infinite:
        log.info("edgekit: int8 keeps %s in float: they carry infinite padding", infinite)
    excluded = [n.name for n in graph.node if n.op_type in exclude_ops] + _mask_adds(graph) + infinite
    out = path.with_name(path.stem + ".q.onnx")

    def quantize(kept_float: list[str]) -> None:
        _remove_with_data(out)
        _quantize_qdq(pre, out, feeds, excluded + kept_float, form)

    try:
        result = quantize_within_budget(pre, out, feeds, quantize, OUTPUT_GATES["int8"], fixed=excluded)
        _replace(out, path)
    finally:
        _remove_with_data(pre)
        _remove_with_data(out)
    return {**result, "float_infinite_padding": infinite}


def _mask_adds(graph: Any) -> list[str]:
    """Add nodes fed by a Where: the additive attention mask (scores + Where(keep, 0, dtype min)).

    Excluding the Where is not enough there: the quantized Add's output still spans the dtype's min and
    calibrates to a scale near 1e36, so every real attention score rounds to one level and softmax goes
    uniform (tiny trained BERT, transformers 5 export: logits cosine -0.61 with the two mask Adds
    quantized, 0.99994 with them in float and every other eligible node int8).
    """
    wheres = {t for n in graph.node if n.op_type == "Where" for t in n.output}
    return [n.name for n in graph.node if n.op_type == "Add" and wheres.intersection(n.input)]


def _infinite_pads(graph: Any) -> list[str]:
    """Pad nodes whose fill value is infinite, and the nodes reading their output.

    A max pool with asymmetric padding (TensorFlow's SAME, timm's MaxPool2dSame) is exported as
    Pad(value=-inf) then MaxPool. Quantized, the padded tensor calibrates to an infinite range, and the
    MaxPool's Q/DQ (which shares its input's scale) passes it on: scale inf on both, every value after
    it rounds to one level (open_nsfw ResNet-50 on photos: logits cosine 0.93 with them quantized,
    0.94 still with 67 other nodes kept float by the sensitivity search, whose errors are infinite
    there; 0.9996 in one pass with these two in float). In float they are exact; the next layer's
    input, the pooled tensor, is finite and quantizes normally.
    """
    import numpy as np
    from onnx import numpy_helper

    values = {t.name: t for t in graph.initializer if not t.external_data}
    values.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                   if a.name == "value"})

    def infinite(name: str) -> bool:
        return name in values and not np.isfinite(numpy_helper.to_array(values[name])).all()

    pads = [n for n in graph.node if n.op_type == "Pad" and len(n.input) > 2 and infinite(n.input[2])]
    padded = {t for n in pads for t in n.output}
    return [n.name for n in pads] + [n.name for n in graph.node if padded.intersection(n.input)]


def _quantize_qdq(pre: Path, out: Path, feeds: list[dict[str, Any]], excluded: list[str], form: Int8Form) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre), str(out), _Reader(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=form.weight_bits == 7,
        activation_type=QuantType.QUInt8 if form.asymmetric else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=True,
        extra_options={
            "ActivationSymmetric": not form.asymmetric,  # TensorRT accepts zero point 0 only
            "WeightSymmetric": True,
            "QuantizeBias": False,  # TensorRT has no int32 DequantizeLinear for biases
        },
    )


def _int8_dynamic(path: Path, reduce_range: bool = False) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(path.stem + ".q.onnx")
    # reduce_range: 7-bit weights where int8 kernels saturate (int8_weight_bits); measured on the char
    # GPT on an AVX2 CPU without VNNI, held-out perplexity +7.7% over fp32 with 8-bit weights.
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                     op_types_to_quantize=["MatMul", "Gemm", "Conv"], use_external_data_format=True,
                     extra_options={"MatMulConstBOnly": True})
    _replace(out, path)


def _int8_blockwise(path: Path) -> None:
    """Every MatMul with a constant weight as 8-bit MatMulNBits (symmetric blocks of INT8_BLOCK).

    Why not dynamic int8 for real Whisper: dynamic quantization gives the whole activation matrix one
    uint8 scale, and Whisper base's encoder fc2 inputs (after GELU) carry outlier channels: on spoken
    English, the fc2 inputs of layers 4 and 5 (of 0-5) reach 67 and 199 while the median channel's
    maximum is 0.10 and 0.62, so one step of the shared scale (0.27, 0.78) is larger than most channels'
    whole range. The encoder's cross keys/values then differ from fp32 by 22% (relative L2), and 4 of 6
    espeak-ng transcripts change. A scale per row and block of 32 confines an outlier to its own block:
    4.5-5% (block 128: 7%), 6 of 6 transcripts equal to PyTorch's, integer kernels (accuracy_level 4).
    Decoders the same: a real LM's MLP down-projection reads a few outlier channels (SmolLM2-135M:
    absmax 3161 in 2 of 1536 channels, 3100x the median channel), and one per-tensor scale rounds every
    ordinary activation to zero (held-out perplexity +53%); per block it is +0.01% (INT8_BLOCK).
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(path))
    _gemm_to_matmul(model)
    _fold_transposed_weights(model)
    _int8_embeddings(model)
    cfg = DefaultWeightOnlyQuantConfig(block_size=INT8_BLOCK, is_symmetric=True, accuracy_level=INT8_BLOCK_ACCURACY,
                                       bits=8)
    q = MatMulNBitsQuantizer(model, algo_config=cfg)
    q.process()
    _save(q.model.model, path)


def _fold_transposed_weights(model: Any) -> dict[str, str]:
    """MatMul(x, Transpose(W)), or FusedMatMul(x, W, transB=1), with W a 2-D initializer -> MatMul(x, W^T as
    its own initializer), in place; returns {W^T's name: W's name}.

    Tied output projections export so (the embedding table, transposed at run time), and onnxruntime's
    graph passes fuse that Transpose into a FusedMatMul (the stand-in graph of SmolLM2); the quantizers
    only rewrite MatMuls whose weight is a constant, and would leave this one, the largest, in float."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    folded: dict[str, str] = {}
    for node in model.graph.node:
        w = _transposed_weight(node, producer)
        if w is None or w not in inits or len(inits[w].dims) != 2:
            continue
        name = w + "_T"
        if name not in folded:  # one transposed copy per table, however many MatMuls read it
            model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[w]).T.copy(), name))
            folded[name] = w
        if node.op_type == "FusedMatMul":
            node.op_type, node.domain = "MatMul", ""
            del node.attribute[:]
        node.input[1] = name
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dead = [n for n in model.graph.node if n.op_type == "Transpose" and not any(o in used for o in n.output)]
    for n in dead:
        model.graph.node.remove(n)
    return folded  # W stays where nothing reads it now: each precision's last step drops unread initializers


def _transposed_weight(node: Any, producer: dict[str, Any]) -> str | None:
    """The W of a plain x @ W^T: MatMul(x, Transpose(W)), or FusedMatMul(x, W) with transB=1 alone."""
    from onnx import helper

    if node.op_type == "MatMul":
        t = producer.get(node.input[1])
        perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), [1, 0]) if t is not None else None
        return t.input[0] if t is not None and t.op_type == "Transpose" and perm == [1, 0] else None
    if node.op_type != "FusedMatMul" or node.domain != "com.microsoft":
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    plain = {"alpha": 1.0, "transA": 0, "transB": 1, "transBatchA": 0, "transBatchB": 0}
    return node.input[1] if {**plain, **attrs} == plain and len(node.input) == 2 else None


def _int8_embeddings(model: Any) -> int:
    """Gather from a 2-D float table -> Gather from its int8 rows times each row's scale, in place; returns
    the number of tables so rewritten.

    onnxruntime's block quantizer writes GatherBlockQuantized at 4 bits only; a token table (Whisper's
    51865 x 512: 106 MB in fp32) would stay float beside its 8-bit output projection. One scale per row
    (absmax / 127, as CTranslate2 quantizes its int8 embeddings) with standard ops: Gather, Cast, Mul."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    replaced: set[str] = set()
    for node in list(model.graph.node):
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = inits.get(node.input[0]) if node.op_type == "Gather" and axis == 0 else None
        if table is None or len(table.dims) != 2 or table.data_type != TensorProto.FLOAT:
            continue
        q, s = node.input[0] + "_int8", node.input[0] + "_scale"
        if table.name not in replaced:  # one int8 copy per table, however many Gathers read it
            w = numpy_helper.to_array(table)
            amax = np.abs(w).max(axis=1, keepdims=True)
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
            model.graph.initializer.extend([numpy_helper.from_array(np.rint(w / scale).astype(np.int8), q),
                                            numpy_helper.from_array(scale, s)])
            replaced.add(table.name)
        out, base = node.output[0], node.name or out
        at = list(model.graph.node).index(node)
        new = [helper.make_node("Gather", [q, node.input[1]], [base + "_q"], name=base + "_q"),
               helper.make_node("Gather", [s, node.input[1]], [base + "_s"], name=base + "_s"),
               helper.make_node("Cast", [base + "_q"], [base + "_f"], name=base + "_cast", to=TensorProto.FLOAT),
               helper.make_node("Mul", [base + "_f", base + "_s"], [out], name=base + "_dq")]
        model.graph.node.remove(node)
        for i, n in enumerate(new):
            model.graph.node.insert(at + i, n)
    used = {i for n in model.graph.node for i in n.input}
    for name in replaced - used:
        model.graph.initializer.remove(inits[name])
    return len(replaced)


def _int4_weights(path: Path, cfg: Int4Config) -> dict[str, int]:
    """int4 blocks with a float minimum (int4_minmax.py): onnxruntime's round-to-nearest stretches each
    block to include 0 with an integer zero point, +23% perplexity on SmolLM2-135M at block 32 where
    this form is +1% (README, Real weights). A tied embedding / output matrix is quantized once, at
    cfg.head_bits, for the logits and the token rows both (tied_head.py); other tables (position
    embeddings, untied token tables) get int8 rows. Returns the counts per form."""
    import onnx

    from edgekit.converters import tied_head
    from edgekit.converters.int4_minmax import rewrite

    model = onnx.load(str(path))
    _gemm_to_matmul(model)
    folded = _fold_transposed_weights(model)
    tied = tied_head.quantize(model, folded, cfg.head_bits, cfg.block_size, cfg.accuracy_level)
    tables = _int8_embeddings(model)
    counts = rewrite(model, cfg.block_size, cfg.accuracy_level, skip=tied.float_weights)
    _save(model, path)
    return {**counts, "tied_tables": tied.tables, "int8_tables": tables}


def _gemm_to_matmul(model: Any) -> None:
    """Rewrite Gemm with a constant weight as MatMul + Add, in place.

    The int4 quantizer only rewrites MatMul; GPT-2's Conv1D layers export as Gemm and would stay
    fp32 (measured: a char GPT-2 came out at fp32 size). MatMul(A, B) + C is the same math.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        plain = attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if n.op_type != "Gemm" or not plain or n.input[1] not in inits:
            nodes.append(n)
            continue
        weight = n.input[1]
        if attrs.get("transB", 0):
            w = numpy_helper.to_array(inits[weight]).T.copy()
            weight = weight + "_t"
            model.graph.initializer.append(numpy_helper.from_array(w, weight))
        has_bias = len(n.input) > 2 and n.input[2]
        mm_out = n.output[0] + "_mm" if has_bias else n.output[0]
        nodes.append(helper.make_node("MatMul", [n.input[0], weight], [mm_out], name=n.name + "_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=n.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _replace(src: Path, dst: Path) -> None:
    """Move a quantizer's output (graph + its external data) over the original, renaming the data."""
    import onnx

    model = onnx.load(str(src))
    _save(model, dst)
    _remove_with_data(src)


def _remove_with_data(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
