"""Encoder-decoder generate: every family token for token against `transformers.generate`.

Tiny random Marian, BART, mBART, M2M100, Pegasus, T5, mT5 and UMT5 folders (seq2seq_models.py),
each converted once: the convert's own parity gate compares greedy decoding (batch 1 and a padded
batch), beam search, step logits and teacher-forced top-1 with transformers. The tests below add
text prompts, padded text batches, the folder's generation defaults, the options of transformers'
generate, target-language control, streaming, return_dict and the lower precisions.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.converters.kv_geometry import KVGeometry
from edgekit.converters.pipeline import ExportedSource, exported
import edgekit
import seq2seq_models as sm
from edgekit.errors import ConfigError, InputError
from tolerances import fp32_atol, transformer_stages

FAMILIES = list(sm.FAMILIES)
TEXTS = ["The class statement defines a new type", "def f(x): return x", "A list"]
# Marian's checkpoints carry these in their generation config; transformers applies them by default.
MARIAN_DEFAULTS = dict(num_beams=3, max_length=24, bad_words_ids=[[sm.PAD]])


@pytest.fixture(scope="module")
def tok() -> Any:
    return sm.train_tokenizer()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tok: Any) -> Iterator[_Built]:
    with ExitStack() as exports:
        yield _Built(tmp_path_factory, tok, exports)


class _Built(dict):  # type: ignore[type-arg]
    """family -> (Hugging Face folder, fp32 artifact), each converted when a test first asks for it
    (a targeted run converts only the families it uses). `exports[family]`: its export, kept for the
    module, which a convert at another precision starts from (as edgekit.convert does after its own)."""

    def __init__(self, factory: pytest.TempPathFactory, tok: Any, exports: ExitStack) -> None:
        super().__init__()
        self.factory, self.root, self.tok = factory, factory.mktemp("seq2seq"), tok
        self.stack, self.exports = exports, {}

    def __missing__(self, fam: str) -> tuple[Path, Path]:
        if fam == "t5":  # the reliability tests' T5 (the same save_tiny, same tokenizer), converted once per session
            from reliability_models import converted_seq2seq, t5_folder

            self[fam] = (t5_folder(self.factory), converted_seq2seq(self.factory))
            return self[fam]
        extra = MARIAN_DEFAULTS if fam == "marian" else {}
        src = sm.save_tiny(fam, self.root / f"{fam}-hf", self.tok, **extra)
        self.exports[fam] = self.stack.enter_context(exported(src))
        self[fam] = (src, self.exports[fam].convert(self.root / f"{fam}-fp32").path)
        return self[fam]

    def export_of(self, fam: str) -> ExportedSource:
        """The family's export, made by its fp32 convert."""
        if fam not in self:
            self.__missing__(fam)
        return self.exports[fam]


def _hf(folder: Path) -> Any:
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(folder).eval()


def _encode(tok: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = [tok.encode(t).ids for t in texts]
    width = max(map(len, rows))
    ids = np.array([r + [sm.PAD] * (width - len(r)) for r in rows], np.int64)
    return ids, (np.arange(width)[None, :] < np.array([len(r) for r in rows])[:, None]).astype(np.int64)


def _ref(hf: Any, ids: np.ndarray, mask: np.ndarray, **kw: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kw).numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_greedy_and_beams_match_transformers(built: dict[str, tuple[Path, Path]], family: str) -> None:
    m = json.loads((built[family][1] / "edgekit.json").read_text())
    p = m["parity"]
    assert p["passed"], p
    measures = p["measures"]
    assert p["rows"]["greedy_rows"] == [1.0, 1.0, 1.0] and measures["beam_agreement"] == 1.0
    assert measures["top1_agreement"] == 1.0 and measures["logits_max_rel"] < 1e-4
    assert set(m["graphs"]) == {"encoder", "decoder"} and m["contract"]["encoder"]["max_source"] >= 64
    dec = [t["name"] for t in m["graphs"]["decoder"]["inputs"]]
    assert "encoder_attention_mask" in dec and "cross.1.value" in dec and "past_key_values.1.key" in dec


@pytest.mark.parametrize("family", ["marian", "t5", "m2m_100"])
def test_text_batches_match_transformers(built: dict[str, tuple[Path, Path]], tok: Any, family: str) -> None:
    """Right-padded text batches through the model's own defaults, decoded as transformers decodes."""
    src, art = built[family]
    hf, model = _hf(src), edgekit.load(art, device="cpu")
    ids, mask = _encode(tok, TEXTS)
    for kw in (dict(max_new_tokens=16), dict(max_new_tokens=16, num_beams=4), dict()):
        ref = _ref(hf, ids, mask, **kw)
        np.testing.assert_array_equal(model.generate(input_ids=ids, attention_mask=mask, **kw), ref)
        texts = model.generate(TEXTS, **kw)
        assert texts == [tok.decode(r[1:].tolist(), skip_special_tokens=True) for r in ref]
        assert model.generate(TEXTS[0], **kw) == texts[0]


def test_generation_config_defaults_apply(built: dict[str, tuple[Path, Path]], tok: Any) -> None:
    src, art = built["marian"]
    model = edgekit.load(art, device="cpu")
    g = model.contract.generation
    assert (g.num_beams, g.max_length, g.bad_words_ids) == (3, 24, ((sm.PAD,),))
    assert g.forced_eos_token_id == (sm.PAD,)  # MarianConfig's own default, as transformers keeps it
    ids, mask = _encode(tok, TEXTS[:2])
    ref = _ref(_hf(src), ids, mask)  # no keywords: the folder's beams, length and bad words
    assert ref.shape[1] == 24
    np.testing.assert_array_equal(model.generate(input_ids=ids, attention_mask=mask), ref)


OPTIONS: list[tuple[dict[str, Any], dict[str, Any]]] = [  # (the call without the option, the option)
    # The stopping rules matter once hypotheses end well before the limit: the model's most frequent
    # token ends them. "never" differs from the default only where length_penalty > 0
    # (transformers' _check_early_stop_heuristic).
    (dict(num_beams=4), dict(length_penalty=-1.5)),
    (dict(num_beams=3, eos_token_id="FREQUENT"), dict(early_stopping=True)),
    (dict(num_beams=2, length_penalty=2.0, eos_token_id="FREQUENT"), dict(early_stopping="never")),
    (dict(num_beams=4), dict(num_return_sequences=2)), ({}, dict(no_repeat_ngram_size=1)),
    (dict(num_beams=2), dict(no_repeat_ngram_size=2)), ({}, dict(min_new_tokens=12)), ({}, dict(min_length=13)),
    (dict(max_new_tokens=None), dict(max_length=9)),  # without either, the generation config's max_length: 20
    ({}, dict(bad_words_ids="FROM_OUTPUT")), ({}, dict(suppress_tokens="FROM_OUTPUT")),
    ({}, dict(begin_suppress_tokens="FROM_OUTPUT")), ({}, dict(forced_bos_token_id=12)),
    ({}, dict(forced_eos_token_id=1)), ({}, dict(repetition_penalty=1.4)),
    (dict(num_beams=3), dict(repetition_penalty=2.0)),  # 1.4 over two beams leaves UMT5's output as it is
]


@pytest.mark.parametrize("family", ["bart", "umt5"])
def test_options_match_transformers(built: dict[str, tuple[Path, Path]], tok: Any, family: str) -> None:
    """Each option, batch 1 and the padded batch, with an eos the model emits (so that rows and beams
    end at different steps); each option must also change the output of the same call without it
    (same beams, lengths), or it proves nothing."""
    src, art = built[family]
    hf, model = _hf(src), edgekit.load(art, device="cpu")
    ids, mask = _encode(tok, TEXTS)
    new = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=14, eos_token_id=[])[:, 1:]
    late = [t for t in new[:, 3:9].ravel().tolist() if t not in set(new[:, :3].ravel().tolist())]
    eos = max(set(late), key=late.count)
    bites = {  # tokens the model does make, so that banning them changes the output
        "bad_words_ids": [[int(new[0, 2])], [int(new[1, 0]), int(new[1, 1])]],
        "suppress_tokens": sorted({int(t) for t in new[:, :3].ravel()}),
        "begin_suppress_tokens": sorted({int(t) for t in new[:, 0]}),
        "eos_token_id": int(np.bincount(new.ravel()).argmax()),
    }
    for without, option in OPTIONS:
        without = {"max_new_tokens": 14, "eos_token_id": eos, **without}
        without, option = ({k: bites[k] if v in ("FROM_OUTPUT", "FREQUENT") else v for k, v in kw.items()}
                           for kw in (without, option))
        changed = []
        for b in (slice(0, 1), slice(0, 3)):
            rows, m = ids[b][:, : int(mask[b].sum(axis=1).max())], mask[b][:, : int(mask[b].sum(axis=1).max())]
            ref = _ref(hf, rows, m, **without, **option)
            got = model.generate(input_ids=rows, attention_mask=m, **without, **option)
            assert got.shape == ref.shape and np.array_equal(got, ref), (family, option, ref, got)
            base = model.generate(input_ids=rows, attention_mask=m, **without)
            changed.append(base.shape != got.shape or not np.array_equal(base, got))
        assert any(changed), f"{option} changed nothing against the same call without it: the comparison proves little"


def test_target_language_is_the_forced_first_token(built: dict[str, tuple[Path, Path]], tok: Any) -> None:
    src, art = built["m2m_100"]
    model = edgekit.load(art, device="cpu")
    assert model.contract.encoder.languages == {c: tok.token_to_id(c) for c in sorted(sm.LANGS)}
    zh = tok.token_to_id("__zh__")
    ids, mask = _encode(tok, TEXTS[:2])
    ref = _ref(_hf(src), ids, mask, max_new_tokens=10, num_beams=2, forced_bos_token_id=zh)
    for lang in ("zh", "__zh__"):
        got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, num_beams=2, tgt_lang=lang)
        np.testing.assert_array_equal(got, ref)
        assert (got[:, 1] == zh).all()
    with pytest.raises(ConfigError, match="__en__"):
        model.generate(TEXTS[0], tgt_lang="klingon")
    with pytest.raises(ConfigError, match="language codes"):
        edgekit.load(built["t5"][1], device="cpu").generate(TEXTS[0], tgt_lang="zh")


def test_nllb_language_codes_are_the_forced_first_token(tmp_path: Path) -> None:
    """A tiny NLLB (M2M100 weights, NllbTokenizer): tgt_lang="zho_Hans" forces that code's id first,
    token for token as transformers with forced_bos_token_id, greedy and with beams."""
    from transformers import AutoTokenizer

    tok = sm.train_nllb_tokenizer()
    src = sm.save_tiny_nllb(tmp_path / "hf", tok)
    assert type(AutoTokenizer.from_pretrained(src)).__name__ == "NllbTokenizer"  # the folder is an NLLB one
    model = edgekit.load(edgekit.convert(src, tmp_path / "fp32").path, device="cpu")
    codes = model.contract.encoder.languages
    zh = tok.convert_tokens_to_ids("zho_Hans")
    assert codes["zho_Hans"] == zh and codes["eng_Latn"] == tok.convert_tokens_to_ids("eng_Latn")
    assert set(codes) == set(tok.extra_special_tokens) and len(codes) > 200  # NLLB's codes, nothing else
    enc = tok(TEXTS, padding=True, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    assert (ids[:, 0] == codes["eng_Latn"]).all()  # NLLB frames the source with its language
    hf = _hf(src)
    for kw in (dict(max_new_tokens=10), dict(max_new_tokens=10, num_beams=3)):
        ref = _ref(hf, ids, mask, forced_bos_token_id=zh, **kw)
        got = model.generate(input_ids=ids, attention_mask=mask, tgt_lang="zho_Hans", **kw)
        np.testing.assert_array_equal(got, ref)
        assert (got[:, 1] == zh).all() and (model.generate(input_ids=ids, attention_mask=mask, **kw)[:, 1] != zh).all()
        assert model.generate(TEXTS, tgt_lang="zho_Hans", **kw) == tok.batch_decode(ref, skip_special_tokens=True)
    with pytest.raises(ConfigError, match="zho_Hant"):  # "zho" names two scripts: ambiguous, not a guess
        model.generate(TEXTS[0], tgt_lang="zho")


def test_stream_return_dict_and_scores(built: dict[str, tuple[Path, Path]], tok: Any) -> None:
    import torch

    src, art = built["pegasus"]
    hf, model = _hf(src), edgekit.load(art, device="cpu")
    pieces = list(model.generate(TEXTS[0], max_new_tokens=12, stream=True))
    assert "".join(pieces) == model.generate(TEXTS[0], max_new_tokens=12)
    ids, mask = _encode(tok, TEXTS)
    for kw in (dict(), dict(num_beams=3)):
        with torch.no_grad():
            ref = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                              max_new_tokens=10, return_dict_in_generate=True, output_scores=True, **kw)
        got = model.generate(TEXTS, max_new_tokens=10, return_dict_in_generate=True, output_scores=True, **kw)
        np.testing.assert_array_equal(got.sequences, ref.sequences.numpy())
        assert got.texts == model.generate(TEXTS, max_new_tokens=10, **kw)
        c = hf.config  # fp32 onnxruntime against fp32 torch: round-off only (tests/tolerances.py)
        width = max(c.d_model, c.encoder_ffn_dim, c.decoder_ffn_dim)
        stages = transformer_stages(c.encoder_layers + c.decoder_layers, cross_layers=c.decoder_layers)
        for mine, theirs in zip(got.scores, ref.scores):
            t = theirs.numpy()
            assert np.array_equal(np.isinf(mine), np.isinf(t))
            atol = fp32_atol(t, width, stages)
            np.testing.assert_allclose(mine[np.isfinite(mine)], t[np.isfinite(t)], atol=atol, rtol=0)


def test_parity_command_against_the_source(built: dict[str, tuple[Path, Path]]) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    src, art = built["pegasus"]
    r = CliRunner().invoke(cli, ["parity", str(art), "--against", str(src), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["passed"] and report["measures"]["greedy_agreement"] == 1.0
    assert report["measures"]["beam_agreement"] == 1.0


def test_bad_inputs_are_edgekit_errors(built: dict[str, tuple[Path, Path]]) -> None:
    model = edgekit.load(built["t5"][1], device="cpu")
    with pytest.raises(InputError, match="longer than the model's context"):
        model.generate(input_ids=np.full((1, 600), 5, np.int64))
    with pytest.raises(InputError):
        model.generate(input_ids=np.array([[5, 10**6]]))
    with pytest.raises(ConfigError, match="exceeds"):
        model.generate("hello", max_new_tokens=10**6)
    with pytest.raises(InputError, match="decoder_input_ids"):
        model.logits(np.array([[5, 6]]))


def test_fp16(built: _Built, tmp_path: Path) -> None:
    """fp16 through its gate (int8 is measured by the translation example, on a trained model)."""
    art = built.export_of("marian").convert(tmp_path / "fp16", precision="fp16")
    p = art.manifest.parity
    assert art.manifest.precision.produced == "fp16" and p.passed and p.measures["top1_agreement"] >= 0.9, p
    out = edgekit.load(art.path, device="cpu").generate(TEXTS, max_new_tokens=6, num_beams=2)
    assert isinstance(out, list) and len(out) == 3


def test_bench_encoder_latency_beams_and_per_graph_replay(built: dict[str, tuple[Path, Path]]) -> None:
    from edgekit.bench import bench, format_report
    from edgekit.bench_report import GenerateWork

    src, art = built["t5"]
    for beams in (1, 4):
        r = bench(art, against=str(src), device="cpu", runs=2, warmup=1, prompt_tokens=6, max_new_tokens=5,
                  num_beams=beams)
        w, a = r.work, r.against
        assert isinstance(w, GenerateWork) and w.num_beams == beams and w.new_tokens_per_call == 5
        assert w.decode_tokens_per_s is not None and w.decode_tokens_per_s > 0
        assert w.encoder_latency_ms is not None and 0 < w.encoder_latency_ms.p50 < r.latency_ms.p50
        # The encoder alone, then a one-token call (encoder, prompt) and the full call (encoder, prompt, 4 steps).
        assert a is not None and a.graph_calls_per_run == 1 + 2 + 6
        assert set(a.per_graph) == {"encoder", "decoder"}
        assert all(g.speedup_p50 > 0 for g in a.per_graph.values())
        assert "encoder     p50" in format_report(r) and "decoder:" in format_report(r)


def test_gpu_loops_keep_the_encoder_output_resident(built: dict[str, tuple[Path, Path]], tok: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT (recording fakes: engines run the ONNX on fake device memory) and the onnxruntime CUDA
    loop (a cuda-python fake): the same tokens as the CPU, greedy and with beams; the encoder output
    goes up once and beam reorders touch only the self-attention cache."""
    import shutil

    import trt_fakes as F
    from edgekit.manifest import Manifest
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper
    from edgekit.runtimes.tensorrt import build as T

    ids, mask = _encode(tok, TEXTS[:1])
    kw = [dict(max_new_tokens=10), dict(max_new_tokens=10, num_beams=3, num_return_sequences=2)]
    with edgekit.load(built["bart"][1], device="cpu") as cpu:
        want = [cpu.generate(input_ids=ids, attention_mask=mask, **k) for k in kw]
        calls = F.Calls()
        runner = cpu.decoder
        runner._stepper_impl = lambda spec: OrtStepper(runner._session, spec, DeviceMemory(F.make_cudart(calls), "cpu"))
        assert all(np.array_equal(cpu.generate(input_ids=ids, attention_mask=mask, **k), w) for k, w in zip(kw, want))
        cfg = KVGeometry.of(cpu.contract.cache)
    row = cfg.heads * 10 * cfg.head_dim * 4  # one beam's self-attention cache: start token + 10 new - 1 slots
    assert calls.copies and {n for _, n in calls.copies} == {row}  # reorders: self-attention rows only
    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls), F.make_cudart(calls))
    art = tmp_path / "bart"
    shutil.copytree(built["bart"][1], art)
    T.build_engines(art, Manifest.load(art), T.BuildOptions())
    assert {p["encoder_attention_mask"][2][0] for p in calls.profiles if "encoder_attention_mask" in p} == {16}
    with edgekit.load(art, device="tensorrt") as m:
        assert m.device == "tensorrt"
        for k, w in zip(kw, want):
            np.testing.assert_array_equal(m.generate(input_ids=ids, attention_mask=mask, **k), w)
    assert calls.graph_launches > 0
