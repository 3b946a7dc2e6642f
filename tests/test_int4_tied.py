"""int4 on a tied decoder: the embedding / output matrix is quantized once (converters/tied_head.py), the
logits' MatMulNBits and the token rows' GatherBlockQuantized read the same blocks, no float copy is left."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from edgekit.converters.pipeline import ExportedSource

V, K = 96, 64  # a tied table: vocab x hidden


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportedSource]:
    """generate_models' tiny Llama with tied embeddings, exported once (its portable and stand-in graphs)."""
    import generate_models as gm
    from edgekit.converters.pipeline import exported

    src = gm.save_tiny("llama", tmp_path_factory.mktemp("tied") / "hf", gm.train_tokenizer(), tied=True)
    with exported(src) as ex:
        yield ex


def _tied_graph(table: np.ndarray, mix: np.ndarray) -> Any:
    """ids -> rows = Gather(table) -> h = rows @ mix -> logits = h @ table^T, as a tied model exports."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed"),
             helper.make_node("MatMul", ["rows", "mix"], ["h"], name="mix"),
             helper.make_node("Transpose", ["table"], ["table_t"], name="tie", perm=[1, 0]),
             helper.make_node("MatMul", ["h", "table_t"], ["logits"], name="lm_head")]
    g = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", K]),
                           helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", V])],
                          [numpy_helper.from_array(table, "table"), numpy_helper.from_array(mix, "mix")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _float_matrices(model: Any) -> dict[str, tuple[int, ...]]:
    from onnx import TensorProto

    return {i.name: tuple(i.dims) for i in model.graph.initializer
            if i.data_type == TensorProto.FLOAT and len(i.dims) == 2}


def _dequantized(table: np.ndarray, bits: int, block: int) -> np.ndarray:
    """The table as its blocks along the hidden axis hold it: Q4_1 (scale, float minimum) or Q8_0."""
    from edgekit.converters.int4_minmax import quantize_blocks

    if bits == 4:
        q, d, m = quantize_blocks(np.ascontiguousarray(table.T), block)
        return (d[:, None] * q + m[:, None]).reshape(K, V).T
    tb = table.reshape(V, K // block, block)
    d = np.abs(tb).max(axis=2, keepdims=True) / 127.0
    return (np.rint(tb / d) * d).reshape(V, K)


@pytest.mark.parametrize("head_bits", [4, 8])
def test_token_rows_and_logits_come_from_one_quantized_copy(tmp_path: Path, head_bits: int) -> None:
    import onnx
    import onnxruntime as ort

    from edgekit.converters.precision import Int4Config, _int4_weights

    rng = np.random.default_rng(0)
    table = (rng.standard_normal((V, K)) * 0.05 + 0.01).astype(np.float32)
    mix = np.eye(K, dtype=np.float32)  # exact in every form (each 32-block of a row: one 1, zeros)
    path = tmp_path / "model.onnx"
    onnx.save(_tied_graph(table, mix), str(path))
    counts = _int4_weights(path, Int4Config(32, accuracy_level=1, head_bits=head_bits))
    assert counts["tied_tables"] == 1 and counts["int8_tables"] == 0 and counts["float"] == 0
    model = onnx.load(str(path))
    # No float table, transposed copy or head left: only the 4-bit blocks' minimums, one row per block of 32.
    assert_no_float_weights(model)
    assert ("lm_head_q4_min" in _float_matrices(model)) == (head_bits == 4)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GatherBlockQuantized") == 1 and ("Gather" in ops) == (head_bits == 4)  # rows of minimums
    assert [n for n in model.graph.node if n.op_type == "MatMulNBits" and n.name.startswith("lm_head")]

    ids = np.array([[0, 5, V - 1], [7, 7, 3]], np.int64)
    rows, logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    deq = _dequantized(table, head_bits, 32)
    # Rows: one float multiply-add per value (d * q + m, or d * (q - 8) + (m + 8d)): a few ulps of the row's range.
    assert np.abs(rows - deq[ids]).max() <= 8 * np.finfo(np.float32).eps * np.abs(table).max()
    # Logits: h is exactly the rows (identity mix, float activations); K products summed in another order,
    # and at 4 bits the minimum's block-sum correction: relative error a few ulps times sqrt(K).
    want = deq[ids] @ deq.T
    assert np.abs(logits - want).max() <= 1e-5 * np.abs(want).max()
    # The quantization itself is real: different from the float table by about a grid step.
    assert np.abs(deq - table).max() > 0


def test_tied_llama_at_int4_keeps_no_float_matrix(tied_llama: ExportedSource, tmp_path: Path) -> None:
    """A tiny Llama with tied embeddings, converted at int4: its graph reads the embedding / output matrix
    from one quantized copy, and it generates. Its random weights give near-tied logits (top-1 against
    PyTorch 0.43 measured; the stand-in graph, failing its proof so, is dropped), so the gate is not held
    here: the trained tied char GPT (test_generate_trained) checks perplexity, tokens and the stand-in."""
    import onnx

    import edgekit
    from edgekit.converters.precision import TIED_HEAD_BITS

    art = tied_llama.convert(tmp_path / "int4", precision="int4", strict=False)
    details = art.manifest.precision.details
    assert details["tied_head"]["bits"] == TIED_HEAD_BITS and details["tied_head"]["tables"] >= 1, details
    assert details["int8_row_tables"] == 0 and details["matmuls"]["float"] == 0  # Llama has no other table
    for g in sorted(art.path.rglob("*.onnx")):
        model = onnx.load(str(g))
        assert any(n.op_type == "GatherBlockQuantized" for n in model.graph.node), g
        assert_no_float_weights(model)
    model = edgekit.load(art.path, device="cpu")
    assert model.generate(input_ids=np.array([[3, 4, 5]]), max_new_tokens=5, eos_token_id=[]).shape == (1, 8)


def test_the_stand_in_graphs_untied_head_is_quantized_once(tied_llama: ExportedSource, tmp_path: Path) -> None:
    """The onnxruntime stand-in gives its tied output projection a copy of the table (ort_graph.untie_prepacked)
    read by a FusedMatMul(transB=1): int4 still finds the tie by value and stores the matrix once (the copy
    read as its own table put SmolLM2's head at 4 bits: +7.3% perplexity, the stand-in failed its proof).
    The stand-in as exported and finished is what a convert's int4 stage rewrites."""
    import shutil

    import onnx

    from edgekit.converters.precision import TIED_HEAD_BITS, Int4Config, _int4_weights

    stand_in = tmp_path / "q" / "model.ort.onnx"
    stand_in.parent.mkdir()
    for f in tied_llama.export.folder.glob("model.ort.onnx*"):  # the graph and its weights
        shutil.copy(f, stand_in.parent / f.name)
    ops = [n.op_type for n in onnx.load(str(stand_in), load_external_data=False).graph.node]
    assert "FusedMatMul" in ops, ops  # the form this test is about
    counts = _int4_weights(stand_in, Int4Config(block_size=32, accuracy_level=4, head_bits=TIED_HEAD_BITS))
    assert counts["tied_tables"] == 1 and counts["int8_tables"] == 0, counts
    model = onnx.load(str(stand_in))
    assert [n.op_type for n in model.graph.node].count("GatherBlockQuantized") == 1
    assert_no_float_weights(model)


def assert_no_float_weights(model: Any) -> None:
    """No float 2-D initializer read as a weight (by a MatMul, Gemm or Gather) but a 4-bit MatMulNBits' block
    minimums (`<node>_min`: 1/32 the size of its weight) and int8 row tables' scales (one column)."""
    from onnx import TensorProto

    nbits = {n.name for n in model.graph.node if n.op_type == "MatMulNBits"}
    matrices = {i.name: tuple(i.dims) for i in model.graph.initializer
                if i.data_type == TensorProto.FLOAT and len(i.dims) == 2}
    read = {t for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "FusedMatMul", "Gather") for t in n.input}
    left = {name: dims for name, dims in matrices.items() if name in read}
    assert all((name.endswith("_q4_min") and name.removesuffix("_min") in nbits) or
               (name.endswith("_scale") and dims[1] == 1) for name, dims in left.items()), left


def test_a_table_exported_with_its_transpose_as_a_constant_is_shared(tmp_path: Path) -> None:
    """A small tied table's Transpose is folded by the exporter into a constant (GPT-2's 98 x 64): it is
    recognised by value and shared too; a constant that merely has the transposed shape is not."""
    import onnx

    from edgekit.converters.precision import Int4Config, _int4_weights

    rng = np.random.default_rng(2)
    table = rng.standard_normal((V, K)).astype(np.float32)
    for weight, tied in ((table.T.copy(), 1), (table.T + np.float32(1e-3), 0)):
        model = _tied_graph(table, np.eye(K, dtype=np.float32))
        g = model.graph
        g.node.remove(next(n for n in g.node if n.op_type == "Transpose"))
        g.initializer.append(onnx.numpy_helper.from_array(weight, "table_t"))
        path = tmp_path / f"tied{tied}.onnx"
        onnx.save(model, str(path))
        counts = _int4_weights(path, Int4Config(32, accuracy_level=1, head_bits=8))
        assert (counts["tied_tables"], counts["int8_tables"]) == (tied, 1 - tied)
        assert_no_float_weights(onnx.load(str(path)))


@pytest.mark.parametrize("head_bits", [4, 8])
def test_onnxruntimes_fused_transposed_head_is_shared(tmp_path: Path, head_bits: int) -> None:
    """onnxruntime's graph passes fuse the tied head's Transpose into FusedMatMul(h, table, transB=1) (the
    stand-in graph): folded and shared the same; the logits are the quantized table's."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from edgekit.converters.precision import Int4Config, _int4_weights

    rng = np.random.default_rng(3)
    table = (rng.standard_normal((V, K)) * 0.05).astype(np.float32)
    model = _tied_graph(table, np.eye(K, dtype=np.float32))
    g = model.graph
    nodes = [n for n in g.node if n.op_type != "Transpose"]
    nodes[-1] = helper.make_node("FusedMatMul", ["h", "table"], ["logits"], name="lm_head", domain="com.microsoft",
                                 transB=1)
    del g.node[:]
    g.node.extend(nodes)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    counts = _int4_weights(path, Int4Config(32, accuracy_level=1, head_bits=head_bits))
    assert (counts["tied_tables"], counts["int8_tables"]) == (1, 0)
    assert_no_float_weights(onnx.load(str(path)))
    ids = np.array([[1, 2, V - 2]], np.int64)
    _, logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    deq = _dequantized(table, head_bits, 32)
    want = deq[ids] @ deq.T
    assert np.abs(logits - want).max() <= 1e-5 * np.abs(want).max()  # as above: sqrt(K) ulps
