"""recognize with speech encoder-decoders other than Whisper: tiny random Moonshine (the waveform in,
rotary decoder) and Speech2Text (Kaldi fbank features in, sinusoidal positions) folders, converted,
their tokens against transformers' generate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.converters.specs.ctc import synthetic_audio
from edgekit.errors import UnsupportedError


def _built(factory: pytest.TempPathFactory, family: str) -> tuple[Path, Path]:
    from coverage_models import save_folder

    root = factory.mktemp(family)
    folder = save_folder("recognize", family, root / "hf")
    edgekit.convert(folder, root / "art")
    return folder, root / "art"


@pytest.fixture(scope="module")
def moonshine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _built(tmp_path_factory, "moonshine")


def test_speech2text_tokens_equal_transformers_generate(tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch
    from transformers import AutoFeatureExtractor

    folder, art = _built(tmp_path_factory, "speech_to_text")
    m = edgekit.load(art, device="cpu")
    assert m.manifest.parity.passed and m.manifest.parity.measures["identical_share"] == 1.0
    assert m.manifest.parity.end_to_end.preprocess.passed and m.contract.features == "speech2text-fbank"
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    wave = synthetic_audio(1.7, 16000, 9)
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_features"]
    for beams in (1, 3):
        with torch.inference_mode():
            want = hf.generate(x, max_new_tokens=16, num_beams=beams, do_sample=False)[0].tolist()
        assert m.decode_tokens(m.features(wave), max_new_tokens=16, num_beams=beams) == want
        assert len(set(want)) > 2


def _hf(folder: Path) -> Any:
    from transformers import AutoModelForSpeechSeq2Seq

    return AutoModelForSpeechSeq2Seq.from_pretrained(folder).eval()


def test_moonshine_convert_gate_is_exact(moonshine: tuple[Path, Path]) -> None:
    m = edgekit.load(moonshine[1], device="cpu")
    r = m.manifest.parity
    assert r.passed and r.measures["identical_share"] == 1.0 and r.measures["token_agreement"] == 1.0
    assert r.end_to_end.preprocess.passed and m.manifest.family == "moonshine"
    assert type(m).__name__ == "SpeechSeq2SeqRecognizer" and set(m.runners) == {"encoder", "decoder"}


@pytest.mark.parametrize("beams", [1, 3])
def test_moonshine_tokens_equal_transformers_generate(moonshine: tuple[Path, Path], beams: int) -> None:
    import torch
    from transformers import AutoFeatureExtractor

    folder, art = moonshine
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    m = edgekit.load(art, device="cpu")
    wave = synthetic_audio(1.7, 16000, 9)  # a length not traced with
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        want = hf.generate(x, max_new_tokens=16, num_beams=beams, do_sample=False)[0].tolist()
    got = m.decode_tokens(m.features(wave), max_new_tokens=16, num_beams=beams)
    assert got == want and len(set(want)) > 2  # a model that repeats one token could not tell two apart
    if beams == 1:
        assert m.recognize(wave, max_new_tokens=16).text == m.decode_text(want) != ""


def test_moonshine_refuses_whisper_options(moonshine: tuple[Path, Path]) -> None:
    m = edgekit.load(moonshine[1], device="cpu")
    with pytest.raises(UnsupportedError, match="language"):
        m.recognize(np.zeros(16000, np.float32) + 0.1, language="en")
    with pytest.raises(UnsupportedError, match="recognize_stream needs timestamp tokens"):
        m.recognize_stream([np.zeros(16000, np.float32)])


@pytest.mark.parametrize("beams", [1, 3])
def test_forced_eos_ends_a_full_length_decode_as_transformers(moonshine: tuple[Path, Path], beams: int,
                                                             tmp_path: Path) -> None:
    """generation_config.forced_eos_token_id (mBART decoders of SpeechEncoderDecoderModel checkpoints):
    transformers makes it the only token at the last position; the artifact's contract carries it."""
    import torch
    from transformers import AutoFeatureExtractor

    folder, art = moonshine
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    wave = synthetic_audio(1.7, 16000, 9)
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    if beams == 1:  # the decode reaches its length without eos of its own
        m = edgekit.load(art, device="cpu")
        free = m.decode_tokens(m.features(wave), max_new_tokens=6)
        assert len(free) == 7 and free[-1] != 2
    m = edgekit.load(_with_contract(art, tmp_path, forced_eos_token_id=2), device="cpu")  # as an mBART decoder's
    with torch.inference_mode():
        want = hf.generate(x, max_new_tokens=6, num_beams=beams, do_sample=False, forced_eos_token_id=2)[0].tolist()
    assert m.decode_tokens(m.features(wave), max_new_tokens=6, num_beams=beams) == want and want[-1] == 2


def test_target_language_prompt_as_transformers(moonshine: tuple[Path, Path], tmp_path: Path) -> None:
    """SeamlessM4T's text_decoder_lang_to_code_id: language="eng" (or "__eng__") decodes from [start, eng],
    as generate(tgt_lang="eng") feeds [[eng]] and transformers puts the start token before it."""
    import torch
    from transformers import AutoFeatureExtractor

    from edgekit.errors import InputError

    folder, art = moonshine
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    m = edgekit.load(_with_contract(art, tmp_path, lang_to_id={"eng": 20, "fra": 21}), device="cpu")  # a Seamless's
    wave = synthetic_audio(1.7, 16000, 9)
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        want = hf.generate(x, decoder_input_ids=torch.tensor([[20]]), max_new_tokens=8, do_sample=False)[0].tolist()
    assert want[:2] == [1, 20] and m.decode_tokens(m.features(wave), "__eng__", max_new_tokens=8) == want
    assert m.recognize(wave, language="eng", max_new_tokens=8).text == m.decode_text(want)
    with pytest.raises(InputError, match="fra"):
        m.recognize(wave, language="deu")


def _with_contract(art: Path, tmp: Path, **changes: Any) -> Path:
    """A copy of the artifact whose contract differs by `changes` (what a folder with those generation
    settings converts to; the graphs are the same)."""
    import dataclasses
    import shutil

    from edgekit.manifest import Manifest

    out = tmp / "art"
    shutil.copytree(art, out)
    man = Manifest.load(out)
    dataclasses.replace(man, contract=dataclasses.replace(man.contract, **changes)).save(out)
    return out


def test_canary_front_end_and_frame_mask_are_parakeets() -> None:
    """Canary's convention: the encoder takes ParakeetFeatureExtractor's features and frame mask (its
    last frame is padding); edgekit's numpy front end makes both, and the section carries them."""
    from transformers import ParakeetFeatureExtractor

    from edgekit.contract.codec import decode, encode
    from edgekit.contract.recognize import Chunking, SpeechSeq2SeqSection
    from edgekit.converters.kv_geometry import KVGeometry
    from edgekit.converters.specs.ctc import PREPROCESS_MAX_ABS
    from edgekit.tasks.speech_seq2seq import encoder_feeds, features

    section = SpeechSeq2SeqSection(
        audio=Chunking(16000, 32.0, 2.0), features="parakeet-fbank", normalize=False, input="input_features",
        tokenizer="tokenizer.json", cache=KVGeometry(1, 2, 8).state(), decoder_start_token_id=1, eos_token_id=2,
        suppress_tokens=(), begin_suppress_tokens=(), max_length=8, max_target_positions=64, n_mels=80,
        preemphasis=0.97, mask="attention_mask")
    assert decode(SpeechSeq2SeqSection, encode(section), "recognize") == section
    fe = ParakeetFeatureExtractor(feature_size=80)
    for seconds, seed in ((0.73, 0), (1.31, 1), (2.0, 2)):  # lengths on and off the 10 ms hop
        wave = synthetic_audio(seconds, 16000, seed)
        theirs = fe(wave, sampling_rate=16000, return_tensors="np", return_attention_mask=True)
        mine = features(wave, section)
        assert mine.shape == theirs["input_features"][0].shape
        assert np.abs(mine - theirs["input_features"][0]).max() <= PREPROCESS_MAX_ABS["parakeet-fbank"]
        feeds = encoder_feeds(mine[None], section)
        assert (feeds["input_features"][0] == mine).all()  # fbank frames are fed unpadded
        mask = feeds["attention_mask"][0]
        assert (mask == theirs["attention_mask"][0].astype(np.int64)).all() and mask[-1] == 0 and mask[:-1].all()


def test_sentencepiece_only_tokenizer_gets_a_tokenizer_json_that_decodes_alike(tmp_path: Path) -> None:
    """SpeechT5's convention: a sentencepiece model and no tokenizer.json. edgekit's tokenizer.json
    decodes every id and random sequences as SpeechT5Tokenizer does; a wrong decoder is caught."""
    import json

    import sentencepiece as spm
    from tokenizers import Tokenizer
    from transformers import SpeechT5Tokenizer

    from edgekit.converters.sentencepiece_tokenizer import decodes_alike, sentencepiece_json

    lines = [" ".join(np.random.default_rng(i).choice(["the", "big", "cat", "ran", "on", "a", "mat"], 6))
             for i in range(200)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "spm_char"),
                                   vocab_size=24, model_type="char", minloglevel=2)
    tok = SpeechT5Tokenizer(str(tmp_path / "spm_char.model"))
    tok.add_tokens(["<mask>"], special_tokens=True)  # as the checkpoints add <mask> and <ctc_blank>
    tok.add_tokens(["<ctc_blank>"])
    built = sentencepiece_json(tok)
    assert decodes_alike(tok, built) == ""
    ids = tok("the big cat ran")["input_ids"]
    assert Tokenizer.from_str(built.decode()).decode(ids, skip_special_tokens=True) == "the big cat ran"
    broken = json.loads(built)
    broken["decoder"] = None  # "▁" printed as is
    assert "decode to" in decodes_alike(tok, json.dumps(broken).encode())


def test_cohere_front_end_is_its_extractor_without_dither() -> None:
    """edgekit's convention for CohereAsrFeatureExtractor: its features and frame mask at dither=0.0 (the
    extractor's 1e-5 dither is seeded noise from torch's generator; edgekit's front end adds none)."""
    from transformers import CohereAsrFeatureExtractor

    from edgekit.converters.specs.speech_seq2seq import _front_end
    from edgekit.preprocess.filterbank import parakeet_fbank

    saved = {"feature_extractor_type": "CohereAsrFeatureExtractor", "dither": 1e-5}  # as checkpoints ship it
    assert _front_end("folder", "cohere_asr", saved)[2] == "parakeet-fbank"
    wave = synthetic_audio(1.37, 16000, 4)  # not a whole number of hops
    mine, valid = parakeet_fbank(wave, 16000, 512, 400, 160, 32, 0.97)
    for dither, limit in ((0.0, 1e-3), (1e-5, None)):
        out = CohereAsrFeatureExtractor(feature_size=32, dither=dither)(wave, sampling_rate=16000, return_tensors="np")
        assert ((np.arange(len(mine)) < valid) == out["attention_mask"][0]).all() and valid == len(mine) - 1
        # PREPROCESS_MAX_ABS["parakeet-fbank"]: torch.stft's float32 rounding in the quietest bands.
        worst = float(np.abs(out["input_features"][0] - mine).max())
        assert worst <= limit if limit is not None else worst > 1e-3  # the dither moves the quiet bands


def test_waveform_feeds_are_the_extractors_padded_to_whole_frames() -> None:
    """Moonshine Streaming's convention: the waveform padded with zeros to whole 5 ms frames and the mask
    of its real samples, as Wav2Vec2FeatureExtractor(return_attention_mask=True) pads with the
    processor's pad_to_multiple_of; a section without a mask gets the padded waveform alone."""
    import dataclasses

    from transformers import Wav2Vec2FeatureExtractor

    from edgekit.contract.recognize import Chunking, SpeechSeq2SeqSection
    from edgekit.converters.kv_geometry import KVGeometry
    from edgekit.tasks.speech_seq2seq import encoder_feeds

    section = SpeechSeq2SeqSection(
        audio=Chunking(16000, 32.0, 2.0), features="waveform", normalize=False, input="input_values",
        tokenizer="tokenizer.json", cache=KVGeometry(1, 2, 8).state(), decoder_start_token_id=1, eos_token_id=2,
        suppress_tokens=(), begin_suppress_tokens=(), max_length=8, max_target_positions=64,
        mask="attention_mask", pad_to_multiple_of=80)
    fe = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
    for samples in (16000, 16001, 16079):  # on, just past and just short of a whole frame
        wave = synthetic_audio(samples / 16000, 16000, samples)
        theirs = fe(wave, sampling_rate=16000, return_tensors="np", padding=True, pad_to_multiple_of=80)
        feeds = encoder_feeds(wave[None], section)
        assert feeds["input_values"].shape == theirs["input_values"].shape and feeds["input_values"].shape[1] % 80 == 0
        assert (feeds["input_values"] == theirs["input_values"]).all()
        assert (feeds["attention_mask"] == theirs["attention_mask"]).all() and feeds["attention_mask"].sum() == samples
    unmasked = encoder_feeds(wave[None], dataclasses.replace(section, mask=None))
    assert list(unmasked) == ["input_values"] and unmasked["input_values"].shape[1] == 16080
