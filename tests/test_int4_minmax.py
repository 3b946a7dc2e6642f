"""int4 blocks with a float minimum (converters/int4_minmax.py) on onnxruntime's MatMulNBits."""
from __future__ import annotations

import numpy as np
import pytest


def _matmul(w: np.ndarray, x_shape: bool = True) -> object:
    from onnx import TensorProto, helper, numpy_helper

    k, n = w.shape
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", k] if x_shape else None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", n])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_weights_on_a_q4_1_grid_come_back_exactly() -> None:
    from edgekit.converters.int4_minmax import quantize_blocks

    rng = np.random.default_rng(0)
    d = rng.uniform(0.01, 0.05, (4, 8)).astype(np.float32)
    m = rng.uniform(-0.3, 0.1, (4, 8)).astype(np.float32)  # blocks that do not straddle 0 among them
    q = rng.integers(0, 16, (4, 32, 8))
    q[:, 0], q[:, 1] = 0, 15  # each block spans its whole grid, as Q4_1's blocks do
    w = (d[:, None] * q + m[:, None]).reshape(128, 8).astype(np.float32)
    q2, d2, m2 = quantize_blocks(w, 32)
    back = (d2[:, None] * q2 + m2[:, None]).reshape(128, 8)
    # float32 rounding of (w - min) / d and back: a few ulps of the block's range
    assert np.abs(back - w).max() <= 8 * np.finfo(np.float32).eps * np.abs(w).max()


@pytest.mark.parametrize("k", [64, 48])  # 48: blocks of 16, the fallback for K not a multiple of 32
@pytest.mark.parametrize("x_shape, nodes", [(True, 5), (False, 7)], ids=["rank-known", "rank-unknown"])
def test_graph_computes_the_dequantized_weights(k: int, x_shape: bool, nodes: int) -> None:
    import onnxruntime as ort

    from edgekit.converters.int4_minmax import quantize_blocks, rewrite

    rng = np.random.default_rng(1)
    w = (rng.standard_normal((k, 24)) * 0.05 + 0.03).astype(np.float32)
    model = _matmul(w, x_shape)
    counts = rewrite(model, 32, accuracy_level=1)  # float activations: only the weights are quantized
    assert counts == {"int4": 1, "int4_block16": int(k % 32 != 0), "float": 0}
    ops = [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
    # MatMulNBits, the block sums (Reshape, ReduceSum), their MatMul, Add; + Shape, Reshape without x's rank
    assert ops.count("MatMulNBits") == 1 and len(ops) == nodes, ops
    block = 32 if k % 32 == 0 else 16
    q, d, m = quantize_blocks(w, block)
    deq = (d[:, None] * q + m[:, None]).reshape(k, 24)
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # type: ignore[attr-defined]
    want = x @ deq
    # float32 sums of k products, in a different order: relative error a few ulps times sqrt(k)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
