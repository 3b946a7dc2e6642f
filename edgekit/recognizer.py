"""`recognize`: audio in, `Transcript` out, for CTC models and Whisper. numpy + onnxruntime only.

The Whisper loop is greedy search written here (not shared with `generate`) because its logits
rules are Whisper's own: forced start/language/task tokens, `suppress_tokens`,
`begin_suppress_tokens` at the first free position, and the timestamp rules of
`transformers.WhisperTimeStampLogitsProcessor`, applied in the order `transformers` applies them.
Its cache is shared: edgekit/kvcache.py's `SlotCache` (fixed slots, decode steps through the
runner's stepper, the encoder's cross K/V kept on the backend for the whole chunk).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from edgekit import audio
from edgekit.artifact import Artifact
from edgekit.errors import ArtifactError, InputError
from edgekit.kvcache import SlotCache
from edgekit.model import Model
from edgekit.results import Segment, Transcript
from edgekit.runtimes.base import Runner

# ---------------------------------------------------------------- CTC front ends and decoding


def _waveform(wave: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    return audio.normalize_wave(wave) if pre.get("normalize") else wave.astype(np.float32)


def _log_mel(wave: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    spec = audio.log_mel(wave, int(pre["sample_rate"]), int(pre["n_fft"]), int(pre["hop_length"]), int(pre["n_mels"]))
    return spec.astype(np.float32)


# preprocess["features"] -> numpy front end; a model with a new front end adds an entry here.
FRONT_ENDS: dict[str, Callable[[np.ndarray, dict[str, Any]], np.ndarray]] = {
    "waveform": _waveform,
    "log-mel": _log_mel,
}


def ctc_features(wave: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    return FRONT_ENDS[str(pre.get("features", "waveform"))](wave, pre)


def ctc_words(ids: np.ndarray, post: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Greedy CTC: collapse repeats, drop blanks -> words with their first and (exclusive) last frame."""
    vocab, blank = post["vocabulary"], int(post["blank_id"])
    delim, skip = post.get("word_delimiter", " "), set(post.get("skip", []))
    words: list[tuple[str, int, int]] = []
    current, start, end, prev = "", 0, 0, -1
    for frame, i in enumerate(int(x) for x in ids):
        is_char = i != blank and i < len(vocab) and vocab[i] not in skip and vocab[i] not in (delim, " ")
        if i == prev:
            end = frame + 1 if is_char else end  # a held character: the word lasts longer
            continue
        prev = i
        if is_char:
            start = frame if not current else start
            current += vocab[i]
            end = frame + 1
        elif i < len(vocab) and vocab[i] in (delim, " ") and current:
            words.append((current, start, end))
            current = ""
    if current:
        words.append((current, start, end))
    return words


def ctc_decode(ids: np.ndarray, post: dict[str, Any]) -> str:
    return " ".join(w for w, _, _ in ctc_words(ids, post))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference words (1.0 per word when the reference is empty)."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return float(len(hyp) > 0)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


# ---------------------------------------------------------------- Whisper logits rules


def _timestamp_rules(logits: np.ndarray, tokens: list[int], begin: int, post: dict[str, Any]) -> np.ndarray:
    """numpy port of transformers' WhisperTimeStampLogitsProcessor for one sequence."""
    ts_begin = post["no_timestamps_token_id"] + 1
    eos = post["eos_token_id"]
    logits[post["no_timestamps_token_id"]] = -np.inf
    seq = tokens[begin:]
    last_ts = len(seq) >= 1 and seq[-1] >= ts_begin
    penult_ts = len(seq) < 2 or seq[-2] >= ts_begin
    if last_ts:
        if penult_ts:
            logits[ts_begin:] = -np.inf  # a pair just closed: text must follow
        else:
            logits[:eos] = -np.inf  # an open timestamp: another timestamp (or eos) must follow
    stamps = [t for t in seq if t >= ts_begin]
    floor = ts_begin
    if stamps:
        floor = stamps[-1] if last_ts and not penult_ts else stamps[-1] + 1
    logits[ts_begin:floor] = -np.inf  # timestamps never go back
    if len(tokens) == begin:
        logits[:ts_begin] = -np.inf  # the first free token is a timestamp
        if post.get("max_initial_timestamp_index") is not None:
            logits[ts_begin + int(post["max_initial_timestamp_index"]) + 1 :] = -np.inf
    z = logits.astype(np.float64)
    finite = np.isfinite(z)
    shift = z[finite].max()
    logp = z - (shift + np.log(np.exp(z[finite] - shift).sum()))
    ts_logp = _logsumexp(logp[ts_begin:])
    if ts_logp > logp[:ts_begin].max():
        logits[:ts_begin] = -np.inf  # timestamps together are likelier than any one text token
    return logits


def _logsumexp(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return -np.inf
    m = finite.max()
    return float(m + np.log(np.exp(finite - m).sum()))


class Recognizer(Model):
    """A loaded speech recognition artifact (CTC or Whisper)."""

    task = "recognize"

    def __init__(self, artifact: Artifact, runners: dict[str, Runner]) -> None:
        super().__init__(artifact, runners)
        if self.kind == "whisper":
            try:
                _check_whisper_decoder(self)
            except ArtifactError:
                self.close()  # the runners may hold GPU memory: nothing will use them
                raise

    @property
    def kind(self) -> str:
        return str(self.manifest.preprocess["kind"])

    @property
    def sample_rate(self) -> int:
        return int(self.manifest.preprocess["sample_rate"])

    @cached_property
    def _tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.artifact.path / self.manifest.postprocess["tokenizer"]))

    def recognize(self, audio_in: Any, sample_rate: int | None = None, language: str | None = None,
                  task: str | None = None, return_timestamps: bool = False,
                  max_new_tokens: int | None = None) -> Transcript:
        """Transcribe a path (WAV/FLAC/OGG) or a float32/int16 array (mono or stereo, `sample_rate` Hz)."""
        wave = audio.load_audio(audio_in, sample_rate, self.sample_rate)
        if audio.is_silence(wave):
            return Transcript(text="", segments=[], language=language)
        if self.kind == "ctc":
            return self._recognize_ctc(wave)
        return self._recognize_whisper(wave, language, task, return_timestamps, max_new_tokens)

    # ------------------------------------------------------------ CTC

    def _recognize_ctc(self, wave: np.ndarray) -> Transcript:
        pre, post = self.manifest.preprocess, self.manifest.postprocess
        rate = self.sample_rate
        window, stride = int(pre["chunk_length_s"] * rate), int(pre["stride_length_s"] * rate)
        ids: list[np.ndarray] = []
        times: list[np.ndarray] = []  # start time (s) of every kept frame
        hop = 0.0
        for c in audio.chunks(wave, window, stride):
            feats = ctc_features(c.wave, pre)[None]
            logits = self.runners["model"].run({pre["input"]: feats})[post.get("output", "logits")][0]
            hop = len(c.wave) / logits.shape[0]  # samples per frame (the model's total stride)
            # Keep only this chunk's own span: the overlap gave context, its frames belong to a neighbour.
            lo, hi = int(round(c.keep_start / hop)), int(round(c.keep_end / hop))
            ids.append(logits[lo:hi].argmax(-1))
            times.append((c.start + np.arange(lo, lo + len(ids[-1])) * hop) / rate)
        frame_times = np.concatenate(times)
        words = ctc_words(np.concatenate(ids), post)
        segments = [Segment(w, float(frame_times[s]), float(frame_times[e - 1]) + hop / rate) for w, s, e in words]
        return Transcript(text=" ".join(w for w, _, _ in words), segments=segments)

    # ------------------------------------------------------------ Whisper

    def _recognize_whisper(self, wave: np.ndarray, language: str | None, task: str | None, timestamps: bool,
                           max_new_tokens: int | None) -> Transcript:
        pre = self.manifest.preprocess
        rate = self.sample_rate
        window, stride = int(pre["chunk_length_s"] * rate), int(pre["stride_length_s"] * rate)
        texts: list[str] = []
        segments: list[Segment] = []
        detected = language
        for c in audio.chunks(wave, window, stride):
            if audio.is_silence(c.wave):
                continue
            feats = self.features(c.wave)
            tokens = self.greedy_tokens(feats, language, task, timestamps, max_new_tokens)
            detected = detected or self._language_of(tokens)
            texts.append(self.decode_text(tokens))
            if timestamps:  # timestamp tokens count from the window's first sample
                segments += self._segments(tokens, c.start / rate, (c.start + len(c.wave)) / rate, True)
            else:  # one segment per chunk, over the span that chunk is responsible for
                segments += self._segments(tokens, (c.start + c.keep_start) / rate, (c.start + c.keep_end) / rate, False)
        return Transcript(text=audio.join_words(texts), segments=segments, language=detected)

    def features(self, wave: np.ndarray) -> np.ndarray:
        pre = self.manifest.preprocess
        return audio.whisper_log_mel(wave, int(pre["n_mels"]), int(pre["n_samples"]), int(pre["n_fft"]),
                                     int(pre["hop_length"]), int(pre["sample_rate"]))

    def prompt(self, language: str | None, task: str | None, timestamps: bool, cross: dict[str, np.ndarray]) -> list[int]:
        """<|startoftranscript|> <|lang|> [<|task|>] [<|notimestamps|>], built as transformers builds it:
        the language is detected when not given; the task token is added when a task or a language
        was given (transcribe by default)."""
        post = self.manifest.postprocess
        ids = [post["decoder_start_token_id"]]
        if language is not None or post["lang_to_id"]:
            ids.append(self._language_id(language, cross))
        if task is not None:
            if task not in post["task_to_id"]:
                raise InputError(f"unknown Whisper task '{task}'", found=f"tasks {sorted(post['task_to_id'])}")
            ids.append(post["task_to_id"][task])
        elif language is not None and "transcribe" in post["task_to_id"]:
            ids.append(post["task_to_id"]["transcribe"])
        if not timestamps:
            ids.append(post["no_timestamps_token_id"])
        return ids

    def _language_id(self, language: str | None, cross: dict[str, np.ndarray]) -> int:
        table = self.manifest.postprocess["lang_to_id"]
        if not table:
            raise InputError("this Whisper model has no language tokens", found=f"language={language!r}",
                             fix="leave language unset")
        if language is None:
            # Detection as transformers does it: one step from <|startoftranscript|>, best language token.
            with self._cache(1, cross) as cache:
                logits = self._prefill(cache, [self.manifest.postprocess["decoder_start_token_id"]])
            ids = np.array(sorted(table.values()))
            return int(ids[np.argmax(logits[ids])])
        key = language if language.startswith("<|") else f"<|{language}|>"
        if key not in table:
            raise InputError(f"unknown language '{language}' for this Whisper model",
                             found=f"languages {sorted(k.strip('<|>') for k in table)}")
        return int(table[key])

    def _language_of(self, tokens: list[int]) -> str | None:
        names = {v: k.strip("<|>") for k, v in self.manifest.postprocess["lang_to_id"].items()}
        return names.get(tokens[1]) if len(tokens) > 1 else None

    def _cache(self, slots: int, cross: dict[str, np.ndarray]) -> SlotCache:
        """A self-attention cache of `slots` tokens; the cross K/V ride along as resident inputs."""
        post = self.manifest.postprocess
        return SlotCache(self.runners["decoder"], dict(zip(post["present_names"], post["past_names"])),
                         (1, int(post["heads"]), slots, int(post["head_dim"])), cross)

    @staticmethod
    def _prefill(cache: SlotCache, ids: list[int]) -> np.ndarray:
        prompt = np.asarray([ids], dtype=np.int64)
        return cache.prefill(prompt, np.ones_like(prompt))[0, -1].astype(np.float32)

    def greedy_tokens(self, features: np.ndarray, language: str | None = None, task: str | None = None,
                      timestamps: bool = False, max_new_tokens: int | None = None) -> list[int]:
        """Greedy search on one (n_mels, frames) feature array; the prompt is included in the result.

        The prompt runs once (past length 0); every later token is one step of the runner's
        stepper, which keeps the self-attention cache and the cross K/V on its side for the chunk.
        """
        post = self.manifest.postprocess
        cross = self.runners["encoder"].run({"input_features": features[None].astype(np.float32)})
        tokens = self.prompt(language, task, timestamps, cross)
        begin = len(tokens)
        # As transformers counts: the generation config's max_length bounds the tokens after the
        # forced prompt, like max_new_tokens; the position table bounds both.
        new = post["max_length"] if max_new_tokens is None else max_new_tokens
        limit = min(begin + new, post["max_target_positions"])
        if limit <= begin:
            return tokens
        suppress = np.asarray(post["suppress_tokens"], dtype=np.int64)
        begin_suppress = np.asarray(post["begin_suppress_tokens"], dtype=np.int64)
        with self._cache(limit - 1, cross) as cache:  # the last token is never fed back
            logits = self._prefill(cache, tokens)
            while True:
                if len(tokens) == begin and begin_suppress.size:
                    logits[begin_suppress] = -np.inf
                if suppress.size:
                    logits[suppress] = -np.inf
                if timestamps:
                    logits = _timestamp_rules(logits, tokens, begin, post)
                nxt = int(np.argmax(logits))
                tokens.append(nxt)
                if nxt == post["eos_token_id"] or len(tokens) >= limit:
                    return tokens
                logits = cache.step(np.asarray([nxt], np.int64))[0].astype(np.float32)

    def decode_text(self, tokens: list[int]) -> str:
        text_ids = [t for t in tokens if t < self.manifest.postprocess["eos_token_id"]]
        return str(self._tokenizer.decode(text_ids, skip_special_tokens=True)).strip()

    def _segments(self, tokens: list[int], start: float, end: float, timestamps: bool) -> list[Segment]:
        post = self.manifest.postprocess
        ts_begin = post["no_timestamps_token_id"] + 1
        if not timestamps:
            text = self.decode_text(tokens)
            return [Segment(text, start, end)] if text else []
        out, open_at, piece = [], None, []
        for t in tokens:
            if t >= ts_begin:
                at = start + (t - ts_begin) * post["time_precision"]
                if open_at is None:
                    open_at, piece = at, []
                else:
                    text = self.decode_text(piece)
                    if text:
                        out.append(Segment(text, open_at, at))
                    open_at = None
            elif open_at is not None:
                piece.append(t)
        return out


def _check_whisper_decoder(model: Recognizer) -> None:
    """An artifact whose decoder predates the slot cache (past grew by concatenation) cannot run here."""
    post = model.manifest.postprocess
    names = {t.name for t in model.manifest.graph("decoder").inputs}
    if post.get("cache", {}).get("layout") != "slots" or not {"attention_mask", "position_ids"} <= names:
        raise ArtifactError("this Whisper artifact was converted by an older edgekit; convert it again",
                            found="a decoder without the fixed-slot cache (no attention_mask/position_ids inputs)",
                            fix=f"run `edgekit convert` on the source model again (artifact '{model.artifact.path}')")
