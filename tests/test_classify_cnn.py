"""The seed's CNN classifiers, ResNet-18 and MobileNet shapes: parity with PyTorch per precision."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classify_models import CNNS, cnn_artifact, held_out, trained_cnn
from tolerances import fp32_atol, network_width_and_stages

PRECISIONS = ["fp32", "fp16", "int8"]


def _torch_logits(name: str, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return trained_cnn(name)(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(CNNS))
def test_cnn_parity(session_dir: Path, name: str, precision: str) -> None:
    import edgekit

    folder = cnn_artifact(session_dir, name, precision)
    clf = edgekit.load(folder, device="cpu")
    m = clf.manifest
    assert m.precision.produced == precision and m.precision.requested == precision
    report = m.parity
    assert report.passed, report.summary
    stats = report.outputs["logits"]
    # The convert-time gate ran on the calibration pictures (int8) or random pictures.
    assert stats["top1"] >= {"fp32": 1.0, "fp16": 0.98, "int8": 0.9}[precision]
    assert stats["cosine"] >= {"fp32": 0.99999, "fp16": 0.999, "int8": 0.98}[precision]

    # Held-out digits through the artifact's own pre-processing vs PyTorch on the same pixels.
    pics, labels = held_out(name)
    got = clf.logits(list(pics))
    x = clf.prepare(list(pics))["pixel_values"]
    ref = _torch_logits(name, x)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    assert len(set(ref.argmax(1).tolist())) >= 6  # a trained model: top-1 agreement means something
    assert agree >= {"fp32": 1.0, "fp16": 0.98, "int8": 0.9}[precision]
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err <= {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.25}[precision]
    acc_ref = float((ref.argmax(1) == labels).mean())
    acc_got = float((got.argmax(1) == labels).mean())
    assert acc_got >= acc_ref - {"fp32": 0.0, "fp16": 0.011, "int8": 0.03}[precision]


@pytest.mark.parametrize("name", ["cifar", "mobilenet"])
def test_cnn_dynamic_batch(session_dir: Path, name: str) -> None:
    """Batch is a named dynamic dim: sizes never traced with give PyTorch's answers."""
    import edgekit

    clf = edgekit.load(cnn_artifact(session_dir, name, "fp32"), device="cpu")
    assert clf.manifest.graph().inputs[0].shape[0] == "batch"
    pics, _ = held_out(name, 37)
    for b in (1, 3, 37):
        x = clf.prepare(list(pics[:b]))["pixel_values"]
        got = clf(pixel_values=x)["logits"]
        assert got.shape == (b, 10)
        ref = _torch_logits(name, x)  # fp32 onnxruntime against fp32 torch: round-off only (tests/tolerances.py)
        np.testing.assert_allclose(got, ref, atol=fp32_atol(ref, *network_width_and_stages(trained_cnn(name))), rtol=0)


def test_classify_returns_ranked_labels(session_dir: Path) -> None:
    import edgekit

    clf = edgekit.load(cnn_artifact(session_dir, "mnist", "fp32"), device="cpu")
    pics, labels = held_out("mnist", 40)
    one = clf.classify(pics[0], top_k=3)
    assert len(one) == 3 and [p.label for p in one] == sorted([p.label for p in one], key=lambda s: -dict(
        (q.label, q.score) for q in one)[s])
    assert all(0.0 <= p.score <= 1.0 for p in one) and one[0].score >= one[1].score >= one[2].score
    many = clf.classify(list(pics), top_k=1)
    assert len(many) == 40
    accuracy = np.mean([int(p[0].label) == t for p, t in zip(many, labels)])
    assert accuracy > 0.7  # trained for three short epochs on 640 digits


@pytest.mark.parametrize("target", ["cpu", "jetson"])
def test_int8_is_smaller_and_qdq(session_dir: Path, tmp_path: Path, target: str) -> None:
    """int8 is really int8: Q/DQ nodes, per-channel symmetric weights; activations uint8 with zero
    points for onnxruntime (the CPU target), int8 with zero points 0 for TensorRT (jetson)."""
    import onnx
    from onnx import numpy_helper

    import edgekit
    from classify_models import LABELS, calibration, example_input
    from edgekit.converters.precision import int8_weight_bits
    from edgekit.external_data import tensor_bytes

    folder = cnn_artifact(session_dir, "resnet18", "int8") if target == "cpu" else edgekit.convert(
        trained_cnn("resnet18"), tmp_path / "jetson", example_inputs=example_input("resnet18"), labels=LABELS,
        precision="int8", calibration=calibration("resnet18"), target="jetson").path
    model = onnx.load(str(folder / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs
    activations = [inits[n.input[2]] for n in qs if len(n.input) > 2 and n.input[2] in inits]
    weights = [inits[n.input[2]] for n in dqs if n.input[0] in inits and len(n.input) > 2 and n.input[2] in inits]
    assert activations and weights and not any(np.any(z) for z in weights)  # weights: symmetric everywhere
    if target == "cpu":
        assert all(z.dtype == np.uint8 for z in activations) and any(np.any(z) for z in activations)
    else:
        assert all(z.dtype == np.int8 and not np.any(z) for z in activations), "TensorRT reads zero point 0 only"
    assert edgekit.load(folder).manifest.precision.tensorrt_compatible == (target == "jetson")
    per_channel = [n for n in dqs if n.input[1] in inits and inits[n.input[1]].ndim == 1 and inits[n.input[1]].size > 1]
    assert per_channel, "no per-channel weight scales"
    int8_weights = [v for v in inits.values() if v.dtype == np.int8 and v.size > 64]
    bits = int8_weight_bits(target)  # 7 on an x86 CPU without VNNI
    assert int8_weights and max(int(np.abs(w).max()) for w in int8_weights) <= {7: 64, 8: 127}[bits]
    info = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    assert info.opset_import[0].version == 18
    size32 = tensor_bytes(cnn_artifact(session_dir, "resnet18", "fp32") / "model.onnx")  # the weights file is shared
    size8 = tensor_bytes(folder / "model.onnx")
    assert size8 < 0.45 * size32
