"""The precision stage: what fp16 and int8 graphs contain, and what the manifest says was produced."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classify_models import LABELS, calibration, cnn_artifact, example_input, trained_cnn


def _graph(folder: Path):  # type: ignore[no-untyped-def]
    import onnx

    return onnx.load(str(folder / "model.onnx"))


def test_fp16_casts_keep_io_and_norms_fp32(session_dir: Path) -> None:
    from onnx import TensorProto

    from test_classify_hf import hf_artifact

    folder = hf_artifact(session_dir, "vit", "fp16")
    model = _graph(folder)
    g = model.graph
    assert [i.type.tensor_type.elem_type for i in g.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in g.output] == [TensorProto.FLOAT]
    assert any(n.op_type == "Cast" for n in g.node)
    assert any(i.data_type == TensorProto.FLOAT16 for i in g.initializer)  # the weights really are fp16
    producer = {t: n for n in g.node for t in n.output}
    kept = [n for n in g.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert kept, "the ViT graph has LayerNorm and Softmax"
    for n in kept:
        # Fed through a Cast to float32 (or straight from the float32 input): it runs in fp32.
        src = producer.get(n.input[0])
        to = {a.name: a.i for a in src.attribute}.get("to") if src is not None and src.op_type == "Cast" else None
        assert src is None or to == TensorProto.FLOAT, f"{n.op_type} {n.name} is fed by {src.op_type}"
    m = __import__("edgekit").load(folder).manifest
    assert m.precision.method == "casts" and "LayerNormalization" in m.precision.details["kept_fp32"]


def test_int8_dynamic_for_cpu(tmp_path: Path) -> None:
    import edgekit

    art = edgekit.convert(trained_cnn("mnist"), tmp_path / "dyn", example_inputs=example_input("mnist"),
                          labels=LABELS, precision="int8", int8_method="dynamic", calibration=calibration("mnist"))
    p = art.manifest.precision
    assert p.produced == "int8" and p.method == "dynamic" and p.tensorrt_compatible is False
    assert art.manifest.parity.passed, art.manifest.parity.summary
    ops = {n.op_type for n in _graph(art.path).graph.node}
    assert ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}


def test_int8_weight_bits_follow_the_target(session_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """7-bit weights on an x86 CPU without VNNI (its int8 kernels saturate with 8), 8 bits elsewhere."""
    import platform

    import edgekit
    from edgekit.converters import precision as P
    from onnx import numpy_helper

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(P, "CPUINFO", cpuinfo)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cpuinfo.write_text("flags\t: fpu sse avx2 avx512f\n")
    assert P.int8_weight_bits("cpu") == 7 and P.int8_weight_bits("cuda") == 8 and P.int8_weight_bits("jetson") == 8
    cpuinfo.write_text("flags\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert P.int8_weight_bits("cpu") == 8
    cpuinfo.unlink()
    assert P.int8_weight_bits("cpu") == 7  # unknown: the safe choice
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert P.int8_weight_bits("cpu") == 8
    monkeypatch.undo()

    cpu = cnn_artifact(session_dir, "mnist", "int8")
    gpu = edgekit.convert(trained_cnn("mnist"), tmp_path / "gpu", example_inputs=example_input("mnist"),
                          labels=LABELS, precision="int8", calibration=calibration("mnist"), target="cuda",
                          strict=False).path
    for folder, bits in ((cpu, P.int8_weight_bits("cpu")), (gpu, 8)):
        assert edgekit.load(folder).manifest.precision.details["weight_bits"] == bits
        weights = [numpy_helper.to_array(i) for i in _graph(folder).graph.initializer if i.data_type == 3]
        assert max(int(np.abs(w).max()) for w in weights if w.size > 16) == {7: 64, 8: 127}[bits]


def test_int8_without_calibration_is_refused(tmp_path: Path) -> None:
    import edgekit
    from edgekit.errors import ConfigError

    with pytest.raises(ConfigError, match="calibration"):
        edgekit.convert(trained_cnn("mnist"), tmp_path / "x", example_inputs=example_input("mnist"), labels=LABELS,
                        precision="int8")
    with pytest.raises(ConfigError, match="int4"):
        edgekit.convert(trained_cnn("mnist"), tmp_path / "x", example_inputs=example_input("mnist"), labels=LABELS,
                        precision="int4")


def test_parity_tolerances_are_ordered() -> None:
    """Stricter precisions get stricter gates; every gate is a real bound."""
    from edgekit.converters.parity import OUTPUT_GATES, compare_outputs

    order = ["fp32", "fp16", "int8", "int4"]
    for a, b in zip(order, order[1:]):
        ga, gb = OUTPUT_GATES[a], OUTPUT_GATES[b]
        assert ga["cosine"].min > gb["cosine"].min and ga["top1"].min >= gb["top1"].min
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    s = compare_outputs(ref, ref + [[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    assert s["max_abs"] == 0.5 and abs(s["max_rel"] - 0.5 / 3) < 1e-12 and s["cosine"] < 1.0


def test_fp16_rmsnorm_statistics_stay_fp32_past_fp16_range(tmp_path: Path) -> None:
    """Decomposed RMSNorm (Pow, ReduceMean, Add eps, Sqrt, Reciprocal: Llama's export at opset 18) on an
    input with one channel at 1000: x^2 = 1e6 and its mean exceed fp16's 65504. Before the fix the
    converter passed Pow's output through fp16 to ReduceMean and ran the Add in fp16: inf, outputs 0."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.converters.precision import _to_fp16

    d = 8
    w = np.diag([1.0, 2.0, 0.5, 1.0, 4.0, 1.0, 0.25, 1.0]).astype(np.float32)  # exact in fp16
    gamma = np.full(d, 0.5, np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Pow", ["h", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], keepdims=1),
             helper.make_node("Add", ["ms", "eps"], ["v"]), helper.make_node("Sqrt", ["v"], ["s"]),
             helper.make_node("Reciprocal", ["s"], ["r"]), helper.make_node("Mul", ["h", "r"], ["n"]),
             helper.make_node("Mul", ["n", "gamma"], ["y"])]
    for i, n in enumerate(nodes):
        n.name = f"node_{i}"
    inits = [numpy_helper.from_array(a, k) for k, a in (
        ("w", w), ("two", np.array(2.0, np.float32)), ("axes", np.array([-1], np.int64)),
        ("eps", np.array(1e-5, np.float32)), ("gamma", gamma))]
    graph = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, d])], inits)
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    _to_fp16(path)
    # Integers and halves: h = x @ w is exact in fp16; only the normalized values round.
    x = np.array([[[1000, 3, -2, 0.5, 1, -7, 8, 2], [-500, 1, 1, 1, -1, 0.5, 2, 3]]], np.float32)
    h = x.astype(np.float64) @ w
    want = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-5) * gamma
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.isfinite(got).all()
    # Three fp16 roundings after the fp32 statistics (rsqrt's Cast, then two Muls): 3 * 2^-11 relative.
    np.testing.assert_allclose(got, want, rtol=3 * 2.0 ** -11, atol=1e-6)
