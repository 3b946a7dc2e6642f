"""recognize(word_timestamps=True) against transformers: Whisper's DTW over the alignment heads, CTC's frames.

Tolerances: Whisper's token times are encoder frames, 20 ms apart (time_precision); fp32 weights
that differ from PyTorch's in the last bits can move a near-tied DTW step by one frame, no more.
CTC word offsets are output frames, one frame stride (80 samples = 5 ms for the tiny wav2vec2) apart.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.converters.specs.ctc import synthetic_audio
from edgekit.tasks.word_times import dynamic_time_warping, median_filter
from reliability_models import converted_w2v, converted_whisper, w2v_folder, whisper_folder

WHISPER_FRAME = 0.02  # s: one encoder frame (time_precision)
CTC_STRIDE = 5 * 4 * 4 / 16000  # s: prod(conv_stride) of the tiny wav2vec2 (reliability_models.w2v_folder)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted_whisper(tmp_path_factory), device="cpu")


def test_dtw_and_median_filter_equal_transformers() -> None:
    import torch
    from transformers.models.whisper.generation_whisper import _dynamic_time_warping, _median_filter

    rng = np.random.default_rng(0)
    for tokens, frames in ((1, 9), (7, 40), (23, 150)):
        m = rng.standard_normal((tokens, frames))
        m[:, frames // 3] = m[:, frames // 3 + 1]  # ties: the tie-breaking must be transformers'
        assert all(np.array_equal(a, b) for a, b in zip(dynamic_time_warping(m), _dynamic_time_warping(m)))
        w = rng.standard_normal((2, 3, tokens, frames)).astype(np.float32)
        assert np.array_equal(median_filter(w, 7), _median_filter(torch.from_numpy(w), 7).numpy())


def _closing_length(m: Any, wave: np.ndarray) -> int:
    """New tokens up to the last timestamp that closes a segment: both sides then time the same words
    (a tail without its closing timestamp is no segment of recognize, but a chunk of the pipeline)."""
    toks = m.greedy_tokens(m.features(wave), language="en", timestamps=True, max_new_tokens=150)
    begin = m.contract.no_timestamps_token_id + 1
    new, opened, closes = toks[3:], False, [0]
    for i, t in enumerate(new):
        if t >= begin:
            closes += [i + 1] if opened else []
            opened = not opened
    return closes[-1]


def _pipeline_words(folder: Path, wave: np.ndarray, new_tokens: int) -> tuple[list[int], list[dict[str, Any]]]:
    """transformers' pipeline(return_timestamps="word") steps for one 30 s window: generate with
    return_token_timestamps (one call, as the pipeline's for audio of one window that ends its
    segments), then the pipeline's postprocess (`_decode_asr`) on the new tokens and their times."""
    import torch
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    hf = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    inputs = WhisperFeatureExtractor.from_pretrained(folder)(wave, sampling_rate=16000, return_tensors="pt",
                                                             return_attention_mask=True)
    with torch.inference_mode():
        out = hf.generate(inputs.input_features, attention_mask=inputs.attention_mask, language="en",
                          return_timestamps=True, return_token_timestamps=True, force_unique_generate_call=True,
                          max_new_tokens=new_tokens)
    prompt = 3  # <|startoftranscript|> <|en|> <|transcribe|>
    tok = AutoTokenizer.from_pretrained(folder)
    # A real Whisper tokenizer lists <|startoftranscript|> .. <|notimestamps|> as special (the pipeline
    # skips them in the text); the tiny folder's tokenizer_config does not, so they are marked here.
    eos, no_ts = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|notimestamps|>")
    tok.add_special_tokens({"additional_special_tokens": tok.convert_ids_to_tokens(list(range(eos + 1, no_ts + 1)))})
    _, chunks = tok._decode_asr([{"tokens": out["sequences"][:, prompt:], "token_timestamps":
                                  out["token_timestamps"][:, prompt:]}], return_timestamps="word",
                                return_language=False, time_precision=WHISPER_FRAME)
    return out["sequences"][0].tolist(), chunks["chunks"]


@pytest.mark.parametrize("seed,seconds", [(28, 10.0), (20, 10.0)])  # the seeds whose words have most distinct times
def test_whisper_words_match_transformers_pipeline(whisper: Any, tmp_path_factory: pytest.TempPathFactory,
                                                   seed: int, seconds: float) -> None:
    wave = synthetic_audio(seconds, 16000, seed)
    n = _closing_length(whisper, wave)
    assert n > 0
    tokens, ref = _pipeline_words(whisper_folder(tmp_path_factory), wave, n)
    assert tokens == whisper.greedy_tokens(whisper.features(wave), language="en", timestamps=True, max_new_tokens=n)
    t = whisper.recognize(wave, language="en", word_timestamps=True, max_new_tokens=n)
    words = [w for s in t.segments for w in s.words]
    assert [w.word for w in words] == [r["text"] for r in ref] and words
    gaps = [abs(w.start - r["timestamp"][0]) for w, r in zip(words, ref)]
    gaps += [abs(w.end - r["timestamp"][1]) for w, r in zip(words, ref)]
    print(f"whisper words {len(words)}: max |start/end - transformers| = {max(gaps):.4f} s")
    assert max(gaps) <= WHISPER_FRAME + 1e-9
    # As transformers: the DTW times are not held inside the segment's timestamp tokens.
    assert all(w.start <= w.end and 0 < w.probability <= 1 for w in words)


def test_repeated_opening_timestamp_keeps_the_segment_open(whisper: Any) -> None:
    """transformers' _decode_asr ignores a timestamp equal to its chunk's start (the model repeating
    it); recognize's segments (and so the words grouped in them) do the same."""
    c = whisper.contract
    at = [c.no_timestamps_token_id + 1 + k for k in (25, 50)]  # <|0.50|>, <|1.00|>
    prompt = [c.decoder_start_token_id, c.lang_to_id["<|en|>"], c.task_to_id["transcribe"]]
    tokens = [*prompt, at[0], 418, at[0], 339, at[1], c.eos_token_id]
    (one,) = whisper._segments(tokens, 10.0, 40.0, True)
    assert (one.start, one.end, one.text) == (10.5, 11.0, whisper.decode_text([418, 339]))


def test_whisper_words_with_vad_are_in_file_time(whisper: Any) -> None:
    """The VAD path (spans batched through the encoder) gives each span's words, moved by its start."""
    from edgekit.preprocess.vad import Span

    rate = 16000
    wave = synthetic_audio(12.0, rate, 8)
    spans = [Span(rate, 5 * rate), Span(6 * rate, 11 * rate)]
    from edgekit.tasks.recognizer import Options

    opts = Options(language="en", max_new_tokens=40, word_timestamps=True)
    joined = whisper._transcribe_spans(wave, spans, opts)
    alone = [whisper._transcribe(wave[s.start:s.end], opts) for s in spans]
    got = [w for s in joined.segments for w in s.words]
    want = [(w.word, w.start + sp.start / rate, w.end + sp.start / rate) for part, sp in zip(alone, spans)
            for s in part.segments for w in s.words]
    assert got and [w.word for w in got] == [w for w, _, _ in want]
    assert np.allclose([(w.start, w.end) for w in got], [(a, b) for _, a, b in want], atol=1e-9)
    assert all(any(sp.start / rate <= w.start <= w.end <= sp.end / rate for sp in spans) for w in got)


def _ctc_with_word_breaks(tmp: Path, folder: Path, wave: np.ndarray) -> Path:
    """The tiny wav2vec2 with the "|" logit raised so that it wins a fifth of this wave's frames:
    random weights alone never end a word, and a one-word transcript would test no word boundary."""
    import shutil

    import torch
    from transformers import AutoProcessor, Wav2Vec2ForCTC

    hf = Wav2Vec2ForCTC.from_pretrained(folder).eval()
    bar = AutoProcessor.from_pretrained(folder).tokenizer.convert_tokens_to_ids("|")
    with torch.inference_mode():
        logits = hf(torch.from_numpy((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))[None]).logits[0]
        others = torch.cat([logits[:, :bar], logits[:, bar + 1:]], dim=1).max(-1).values
        hf.lm_head.bias[bar] += torch.quantile(others - logits[:, bar], 0.2)
    out = tmp / "w2v-words"
    hf.save_pretrained(out)
    for f in folder.iterdir():
        if f.suffix == ".json" and f.name != "config.json":
            shutil.copy(f, out / f.name)
    return out


def test_ctc_words_match_transformers_pipeline(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from transformers import pipeline

    wave = synthetic_audio(3.1, 16000, 5)
    folder = _ctc_with_word_breaks(tmp_path, w2v_folder(tmp_path_factory), wave)
    art = tmp_path / "art"
    edgekit.convert(folder, art)
    m = edgekit.load(art, device="cpu")
    ref = pipeline("automatic-speech-recognition", model=str(folder))(wave.copy(), return_timestamps="word")["chunks"]
    t = m.recognize(wave, word_timestamps=True)
    words = [w for s in t.segments for w in s.words]
    assert [w.word for w in words] == [r["text"] for r in ref] and len(words) > 3
    gaps = [abs(w.start - r["timestamp"][0]) for w, r in zip(words, ref)]
    gaps += [abs(w.end - r["timestamp"][1]) for w, r in zip(words, ref)]
    print(f"ctc words {len(words)}: max |start/end - transformers| = {max(gaps):.6f} s")
    assert max(gaps) <= CTC_STRIDE
    assert all(len(s.words) == 1 and s.words[0].word == s.text and 0 < s.words[0].probability <= 1 for s in t.segments)
    assert all(s.words is None for s in m.recognize(wave).segments)


def test_cli_json_has_words_only_when_asked(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    import soundfile as sf
    from click.testing import CliRunner

    from edgekit.cli import cli

    art = converted_w2v(tmp_path_factory)
    wav = tmp_path / "a.wav"
    sf.write(wav, synthetic_audio(2.0, 16000, 3), 16000)
    run = CliRunner()

    def out(*args: str) -> str:
        r = run.invoke(cli, ["run", str(art), str(wav), *args])
        assert r.exit_code == 0, r.output
        return r.output

    plain = json.loads(out("--format", "json"))
    timed = json.loads(out("--format", "json", "--word-timestamps"))
    assert "words" not in plain["segments"][0]
    assert [s["text"] for s in timed["segments"]] == [s["words"][0]["word"] for s in timed["segments"]]
    assert out("--format", "srt", "--word-timestamps") == out("--format", "srt")
    listed = json.loads(out("--json", "--word-timestamps"))["results"][0]["segments"]
    assert listed[0]["words"][0]["word"] == listed[0]["text"]


def test_whisper_without_alignment_heads_refuses_word_timestamps(tmp_path_factory: pytest.TempPathFactory,
                                                                 tmp_path: Path) -> None:
    import shutil

    from edgekit.errors import UnsupportedError

    art = tmp_path / "no-heads"
    shutil.copytree(converted_whisper(tmp_path_factory), art)
    manifest = json.loads((art / "edgekit.json").read_text())
    manifest["contract"]["alignment_heads"] = []  # what a source without generation_config.alignment_heads gives
    (art / "edgekit.json").write_text(json.dumps(manifest))
    m = edgekit.load(art, device="cpu")
    wave = synthetic_audio(1.0, 16000, 2)
    assert m.recognize(wave, language="en", max_new_tokens=4).segments[0].words is None
    with pytest.raises(UnsupportedError, match="alignment heads"):
        m.recognize(wave, word_timestamps=True)
