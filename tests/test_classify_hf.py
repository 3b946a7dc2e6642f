"""Hugging Face folders: a tiny trained ViT and BERT sequence classifier, offline, every precision."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from classify_models import SENTENCES, bert_folder, outlier_bert_folder, pictures, vit_folder
from shared_exports import exported_once
from tolerances import fp32_atol, transformer_stages

if TYPE_CHECKING:
    from edgekit.converters.pipeline import ExportedSource

FOLDERS = {"vit": vit_folder, "bert": bert_folder}


@functools.cache
def hf_exported(base: Path, name: str) -> ExportedSource:
    return exported_once(str(FOLDERS[name](base)))


@functools.cache
def hf_artifact(base: Path, name: str, precision: str) -> Path:
    calibration = {"vit": pictures(24, seed=1), "bert": SENTENCES}[name]
    out = base / f"{name}-{precision}"
    hf_exported(base, name).convert(out, precision=precision, calibration=calibration if precision == "int8" else None)
    return out


@functools.cache
def hf_model(base: Path, name: str):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    auto = {"vit": AutoModelForImageClassification, "bert": AutoModelForSequenceClassification}[name]
    return auto.from_pretrained(FOLDERS[name](base)).eval()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("name", ["vit", "bert"])
def test_hf_parity(session_dir: Path, name: str, precision: str) -> None:
    import edgekit

    folder = hf_artifact(session_dir, name, precision)
    clf = edgekit.load(folder, device="cpu")
    m = clf.manifest
    assert m.task == "classify" and m.family == name and m.precision.produced == precision
    assert m.parity.passed, m.parity.summary
    stats = m.parity.outputs["logits"]
    assert stats["cosine"] >= {"fp32": 0.99999, "fp16": 0.999, "int8": 0.98}[precision]
    assert clf.labels == {"vit": ["cat", "dog", "owl", "fox"], "bert": ["negative", "neutral", "positive"]}[name]
    if precision == "int8":
        rounds = m.precision.details["budget_rounds"]["model"]
        assert rounds[-1]["cosine"] >= 0.98  # the accuracy budget was met, maybe after keeping layers float
        assert isinstance(m.precision.details["kept_float_nodes"]["model"], list)
    if (name, precision) == ("bert", "int8"):  # the attention-mask Adds stay float by rule: one pass, all else int8
        assert len(rounds) == 1 and m.precision.details["kept_float_nodes"]["model"] == []


def test_vit_image_files_match_the_hf_pipeline(session_dir: Path, tmp_path: Path) -> None:
    """PNG/JPEG paths and PIL images: edgekit's pre-processing + graph = ViTImageProcessor + model."""
    import torch
    from PIL import Image
    from transformers import ViTImageProcessor

    import edgekit

    clf = edgekit.load(hf_artifact(session_dir, "vit", "fp32"), device="cpu")
    processor = ViTImageProcessor.from_pretrained(vit_folder(session_dir))
    model = hf_model(session_dir, "vit")
    images = []
    for i, arr in enumerate(pictures(6, seed=7, size=(57, 41))):
        path = tmp_path / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(path)
        images.append(path)
    images.append(Image.fromarray(pictures(1, seed=9, size=(20, 64))[0]))  # a PIL image, upscaled
    pil = [Image.open(p).convert("RGB") if isinstance(p, Path) else p for p in images]
    with torch.no_grad():
        ref = model(**processor(images=pil, return_tensors="pt")).logits.numpy()
    got = clf.logits(images)
    np.testing.assert_allclose(got, ref, atol=2e-3 * np.abs(ref).max())
    assert [p[0].label for p in clf.classify(images, top_k=1)] == [clf.labels[i] for i in ref.argmax(1)]


def test_bert_texts_match_the_hf_pipeline(session_dir: Path) -> None:
    """Texts tokenized from the artifact's tokenizer.json; batch and sequence sizes never traced."""
    import torch
    from transformers import AutoTokenizer

    import edgekit

    clf = edgekit.load(hf_artifact(session_dir, "bert", "fp32"), device="cpu")
    spec = clf.manifest.graph().inputs[0]
    assert spec.shape == ("batch", "sequence")
    tok = AutoTokenizer.from_pretrained(bert_folder(session_dir))
    model = hf_model(session_dir, "bert")
    for batch in (SENTENCES[:1], SENTENCES[:5], SENTENCES):
        enc = tok(batch, padding=True, return_tensors="pt")
        with torch.no_grad():
            ref = model(**enc).logits.numpy()
        feeds = clf.prepare(batch)
        np.testing.assert_array_equal(feeds["input_ids"], enc["input_ids"].numpy())
        np.testing.assert_array_equal(feeds["attention_mask"], enc["attention_mask"].numpy())
        got = clf.logits(batch)
        # fp32 onnxruntime against fp32 torch: round-off only (tests/tolerances.py); +1: BERT's pooler
        c = model.config
        atol = fp32_atol(ref, max(c.hidden_size, c.intermediate_size), transformer_stages(c.num_hidden_layers) + 1)
        np.testing.assert_allclose(got, ref, atol=atol, rtol=0)
    assert len(set(ref.argmax(1).tolist())) >= 2  # the model does separate these texts
    one = clf.classify("the movie was good", top_k=2)
    assert len(one) == 2 and one[0].label in clf.labels


def test_bert_int8_keeps_sensitive_layers_float(session_dir: Path) -> None:
    """A BERT with one activation outlier channel feeding the pooler: the search keeps that one Gemm float.

    All-int8 misses the budget by far (the pooler input's per-tensor scale is set by the outlier);
    keeping exactly the pooler's Gemm in float meets it, and everything else stays int8. A search
    that keeps nothing float fails the convert, one that keeps more than needed fails here.
    """
    import onnx

    import edgekit

    out = session_dir / "bert-outlier-int8"
    edgekit.convert(str(outlier_bert_folder(session_dir)), out, precision="int8", calibration=SENTENCES)
    m = edgekit.load(out, device="cpu").manifest
    rounds = m.precision.details["budget_rounds"]["model"]
    kept = m.precision.details["kept_float_nodes"]["model"]
    assert rounds[0]["kept_float"] == 0 and rounds[0]["cosine"] < 0.9  # all-int8 alone is far off
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    pooler = [n.name for n in graph.node if any(i.endswith("pooler.dense.weight") for i in n.input)]
    assert kept == pooler and len(pooler) == 1, (kept, pooler)
    assert rounds[-1]["kept_float"] == 1 and rounds[-1]["cosine"] >= 0.98 and m.parity.passed
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    gemm = next(n for n in graph.node if n.name == pooler[0])
    assert not dq_outputs.intersection(gemm.input)  # really float: no Q/DQ in front of it
    assert sum(n.op_type == "MatMul" and bool(dq_outputs.intersection(n.input)) for n in graph.node) >= 8  # rest int8
