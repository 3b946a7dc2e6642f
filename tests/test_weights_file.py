"""One weights file per artifact: both graphs of a decoder (portable and onnxruntime's stand-in) read
their external data from `weights.data`, where every distinct tensor payload is stored once."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.converters.weights_file import ALIGN, WEIGHTS_FILE, share_weights
from edgekit.errors import ExportError
from edgekit.external_data import external_locations

from generate_models import FAMILIES, train_tokenizer


def _regions(path: Path) -> dict[str, tuple[int, int]]:
    """Tensor name -> (offset, length) in the weights file, for every external tensor of the graph."""
    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            e = {x.key: x.value for x in t.external_data}
            assert e["location"] == WEIGHTS_FILE
            out[t.name] = (int(e["offset"]), int(e["length"]))
    return out


def _payloads(folder: Path, regions: set[tuple[int, int]]) -> list[str]:
    data = (folder / WEIGHTS_FILE).read_bytes()
    return [hashlib.sha256(data[o : o + n]).hexdigest() for o, n in sorted(regions)]


def _matmul_graph(path: Path, weights: dict[str, np.ndarray]) -> None:
    """y = sum_i x @ W_i, weights external in `<path>.data` (as the exporter and precision stage leave them)."""
    names = list(weights)
    nodes = [helper.make_node("MatMul", ["x", n], [f"y{i}"]) for i, n in enumerate(names)]
    nodes.append(helper.make_node("Sum", [f"y{i}" for i in range(len(names))], ["y"]))
    rows = next(iter(weights.values())).shape[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(w, n) for n, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_share_weights_stores_each_payload_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3))
    _matmul_graph(tmp_path / "one.onnx", {"a": a, "b": b})
    _matmul_graph(tmp_path / "two.onnx", {"a2": a.copy(), "c": c, "b2": b.copy()})  # same bytes, other names
    x = rng.standard_normal((1, 8)).astype(np.float32)
    before = {g: _run(tmp_path / g, x) for g in ("one.onnx", "two.onnx")}

    shared = share_weights(tmp_path, ["one.onnx", "two.onnx"])

    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.onnx", "two.onnx", WEIGHTS_FILE]
    assert (shared.tensors, shared.stored, shared.bytes_in) == (5, 3, 5 * a.nbytes)
    one, two = _regions(tmp_path / "one.onnx"), _regions(tmp_path / "two.onnx")
    assert one["a"] == two["a2"] and one["b"] == two["b2"] and two["c"] not in one.values()
    regions = set(one.values()) | set(two.values())
    assert len(set(_payloads(tmp_path, regions))) == len(regions) == 3
    assert all(o % ALIGN == 0 for o, _ in regions)
    assert shared.bytes_out == (tmp_path / WEIGHTS_FILE).stat().st_size < 3 * ALIGN
    for g, want in before.items():  # onnxruntime reads the moved weights: the same outputs, bit for bit
        np.testing.assert_array_equal(_run(tmp_path / g, x), want)


def test_a_tensor_that_is_rows_of_a_stored_one_reads_those_rows(tmp_path: Path) -> None:
    """The stand-in's packed [a; b] is stored; the portable graph's a and b read its two row ranges."""
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(2))
    packed = np.concatenate([a, b])
    _matmul_graph(tmp_path / "parts.onnx", {"a": a, "b": b})
    _matmul_graph(tmp_path / "packed.onnx", {"p": packed, "q": packed[::-1].copy()})
    x8, x16 = rng.standard_normal((1, 8)).astype(np.float32), rng.standard_normal((1, 16)).astype(np.float32)
    before = _run(tmp_path / "parts.onnx", x8), _run(tmp_path / "packed.onnx", x16)

    shared = share_weights(tmp_path, ["parts.onnx", "packed.onnx"])

    parts, whole = _regions(tmp_path / "parts.onnx"), _regions(tmp_path / "packed.onnx")
    assert (shared.stored, shared.inside) == (2, 2)
    assert parts == {"a": (whole["p"][0], a.nbytes), "b": (whole["p"][0] + a.nbytes, b.nbytes)}
    np.testing.assert_array_equal(_run(tmp_path / "parts.onnx", x8), before[0])
    np.testing.assert_array_equal(_run(tmp_path / "packed.onnx", x16), before[1])


def test_a_tied_weight_is_untied_for_its_matmul_and_stored_once(tmp_path: Path) -> None:
    """A tied embedding and output projection (Gather and Gemm reading one weight): the Gemm gets its own
    initializer, so onnxruntime can drop it once packed; the weights file still holds the bytes once."""
    from edgekit.converters.ort_graph import untie_prepacked

    w = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["w", "ids"], ["e"]), helper.make_node("Gemm", ["e", "w"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 16])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    ids = np.array([3, 0, 15])
    want = w[ids] @ w.T

    assert untie_prepacked(model) == 1
    assert [list(n.input) for n in model.graph.node] == [["w", "ids"], ["e", "w.packed_use"]]
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    shared = share_weights(tmp_path, ["m.onnx"])
    assert (shared.tensors, shared.stored) == (2, 1)
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # fp32 sums of 8 products of unit normals


def test_graphs_sharing_weights_must_sit_in_the_root(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _matmul_graph(tmp_path / "sub" / "one.onnx", {"a": np.eye(8, dtype=np.float32)})
    with pytest.raises(ExportError, match="artifact root"):
        share_weights(tmp_path, ["sub/one.onnx"])


def _tied_llama(folder: Path) -> Path:
    """generate_models' tiny Llama with its embedding tied to the output projection (as SmolLM2's)."""
    import torch
    import transformers

    tokenizer = train_tokenizer()
    eos, pad = tokenizer.token_to_id("<eos>"), tokenizer.token_to_id("<pad>")
    config = transformers.LlamaConfig(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2, eos_token_id=eos,
                                      bos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True,
                                      **FAMILIES["llama"][2])
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_decoder_artifact_has_one_weights_file(tmp_path: Path) -> None:
    """A tiny tied Llama (heads of 16: onnxruntime's stand-in is made): both graphs in the root read one
    weights file, no payload is in it twice, the graphs share what they hold alike (the tied weight,
    untied in the stand-in, once), and both run the same greedy tokens."""
    art = edgekit.convert(_tied_llama(tmp_path / "hf"), tmp_path / "art")
    m = art.manifest
    [rg] = m.runtime_graphs.values()
    assert rg.file == "model.ort.onnx" and m.graph_files() == ["model.onnx", "model.ort.onnx"]
    data_files = [f for f in m.files if not f.endswith((".onnx", ".json", ".txt", ".model"))]
    assert data_files == [WEIGHTS_FILE], sorted(m.files)
    for f in m.graph_files():
        assert set(external_locations(art.path / f)) == {WEIGHTS_FILE}
    portable, stand_in = _regions(art.path / "model.onnx"), _regions(art.path / "model.ort.onnx")
    regions = set(portable.values()) | set(stand_in.values())
    assert len(set(_payloads(art.path, regions))) == len(regions)  # no payload stored twice
    both = set(portable.values()) & set(stand_in.values())
    vocab, hidden = 320, 64
    assert sum(n for _, n in both) >= vocab * hidden * 4  # at least the embedding is one copy for both
    [tied] = [k for k in stand_in if k.endswith(".packed_use")]
    assert stand_in[tied] == stand_in[tied.removesuffix(".packed_use")]
    ids = np.array([[5, 9, 17, 33, 2, 70]])
    fast = edgekit.load(art.path, device="cpu")
    plain = edgekit.load(art.path, device="cpu", portable=True)
    assert fast.runners["model"].kv_layout == "shared" and plain.runners["model"].kv_layout == "slots"
    want = plain.generate(input_ids=ids, max_new_tokens=16, eos_token_id=[])
    np.testing.assert_array_equal(fast.generate(input_ids=ids, max_new_tokens=16, eos_token_id=[]), want)
