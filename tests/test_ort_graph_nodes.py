"""onnxruntime's stand-in decoder stays small: a node budget per layer and per step (issue 19), and the
graph passes that keep it there rewrite only what they can prove is the same computation."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgekit.converters.export import export_graph
from edgekit.converters.ort_attention import shared_kv_graph
from edgekit.converters.ort_graph import finish_for_onnxruntime
from edgekit.converters.ort_simplify import simplify
from edgekit.converters.kv_geometry import KVGeometry
from edgekit.converters.specs.causal_lm import decoder_state

# Measured on a Qwen2 layer with its q/k/v biases (what onnxruntime-genai's builder makes in 11 too):
# MatMul q|k|v, Add bias, GroupQueryAttention (reads the packed projection), MatMul o, SkipSimplified-
# LayerNormalization, MatMul gate|up, Split, QuickGelu, Mul, MatMul down, SkipSimplifiedLayerNormalization.
# Before the passes of ort_simplify.py a layer had 21 (8 Reshapes, a second Split, SiLU as Sigmoid + Mul).
PER_LAYER = 11
# Once per step: Gather (embedding), SimplifiedLayerNormalization (the first norm), MatMul (lm_head),
# and GroupQueryAttention's lengths from total_length: Sub, Cast (seqlens_k), ReduceMax, Cast (total).
PER_STEP = 7


def _stand_in(layers: int, folder: Path) -> onnx.ModelProto:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         tie_word_embeddings=False)).eval()
    with torch.no_grad():  # a fresh Qwen2's biases are zero (and then packed away): a trained one's are not
        for name, p in model.named_parameters():
            if name.endswith("proj.bias"):
                p.normal_()
    path = folder / f"{layers}.onnx"
    export_graph(shared_kv_graph(model, KVGeometry.of(decoder_state(model)), []), path)
    finish_for_onnxruntime(path)
    return onnx.load(str(path), load_external_data=False)


def test_qwen2_stand_in_has_a_node_budget_per_layer(tmp_path: Path) -> None:
    one, two = (collections.Counter(n.op_type for n in _stand_in(n, tmp_path).graph.node) for n in (1, 2))
    layer = two - one
    step = one - layer
    assert sum(layer.values()) <= PER_LAYER and sum(step.values()) <= PER_STEP, (layer, step)
    assert layer["GroupQueryAttention"] == 1 and not {"Reshape", "Transpose", "Shape", "Concat"} & set(two)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    model.opset_import.extend([helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _graph(nodes: list[onnx.NodeProto], shapes: dict[str, list[int | str]], out: str,
           inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    info = {k: helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()}
    g = helper.make_graph(nodes, "g", [info["x"]], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                          inits, value_info=[v for k, v in info.items() if k != "x"])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("back, kept", [([2, 3, 4], 0), ([2, 12], 2)], ids=["identity", "reshaping"])
def test_reshape_chains_go_only_where_they_end_in_their_start_shape(back: list[int], kept: int) -> None:
    inits = [numpy_helper.from_array(np.array([2, 3, 2, 2], np.int64), "s1"),
             numpy_helper.from_array(np.array(back, np.int64), "s2")]
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["b"]),
             helper.make_node("Neg", ["b"], ["y"])]
    model = _graph(nodes, {"x": [2, 3, 4], "a": [2, 3, 2, 2], "b": back}, "y", inits)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    want = _run(onnx.ModelProto.FromString(model.SerializeToString()), {"x": x})[0]
    simplify(model)
    assert sum(n.op_type == "Reshape" for n in model.graph.node) == kept
    np.testing.assert_array_equal(_run(model, {"x": x})[0], want)


def test_silu_becomes_quick_gelu_with_the_same_values() -> None:
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    model = _graph(nodes, {"x": [3, 5]}, "y", [])
    x = np.linspace(-20, 20, 15, dtype=np.float32).reshape(3, 5)
    want = _run(onnx.ModelProto.FromString(model.SerializeToString()), {"x": x})[0]
    assert simplify(model)["quick_gelu"] == 1
    assert [n.op_type for n in model.graph.node] == ["QuickGelu"]
    np.testing.assert_allclose(_run(model, {"x": x})[0], want, rtol=1e-6, atol=1e-7)  # float32 rounding of exp
