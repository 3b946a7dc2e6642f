"""Whisper speech recognition: numpy log-mel, the encoder once per 30 s chunk, greedy or beam search.

The loop is greedy search (or `num_beams` beam search, tasks/search.py) with Whisper's own logits
rules, applied in the order `transformers` applies them: forced start/language/task tokens,
`begin_suppress_tokens` at the first free position, `suppress_tokens`, and
`WhisperTimeStampLogitsProcessor`'s timestamp rules. Its cache is the decoder state loop
(tasks/state_loop.py): decode steps through the runner's stepper, the encoder's cross keys/values
resident on the backend for the whole chunk; beams reorder its rows where it lives.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.generate import GenerationDefaults
from edgekit.contract.recognize import WhisperSection
from edgekit.errors import ConfigError, InputError
from edgekit.preprocess import audio
from edgekit.preprocess.text import read_tokenizer
from edgekit.results import Segment, Transcript
from edgekit.tasks.state_loop import StateLoop
from edgekit.tasks.options import GenerateOptions
from edgekit.tasks.recognizer import Options, Recognizer
from edgekit.tasks.sampling import SamplingConfig, TokenChooser
from edgekit.tasks.search import Stopper, beam_search


def _timestamp_rules(logits: np.ndarray, tokens: list[int], begin: int, c: WhisperSection) -> np.ndarray:
    """numpy port of transformers' WhisperTimeStampLogitsProcessor for one sequence."""
    ts_begin = c.no_timestamps_token_id + 1
    logits[c.no_timestamps_token_id] = -np.inf
    seq = tokens[begin:]
    last_ts = len(seq) >= 1 and seq[-1] >= ts_begin
    penult_ts = len(seq) < 2 or seq[-2] >= ts_begin
    if last_ts:
        if penult_ts:
            logits[ts_begin:] = -np.inf  # a pair just closed: text must follow
        else:
            logits[:c.eos_token_id] = -np.inf  # an open timestamp: another timestamp (or eos) must follow
    stamps = [t for t in seq if t >= ts_begin]
    floor = ts_begin
    if stamps:
        floor = stamps[-1] if last_ts and not penult_ts else stamps[-1] + 1
    logits[ts_begin:floor] = -np.inf  # timestamps never go back
    if len(tokens) == begin:
        logits[:ts_begin] = -np.inf  # the first free token is a timestamp
        if c.max_initial_timestamp_index is not None:
            logits[ts_begin + c.max_initial_timestamp_index + 1 :] = -np.inf
    z = logits.astype(np.float64)
    finite = np.isfinite(z)
    shift = z[finite].max()
    logp = z - (shift + np.log(np.exp(z[finite] - shift).sum()))
    ts_logp = _logsumexp(logp[ts_begin:])
    if ts_logp > logp[:ts_begin].max():
        logits[:ts_begin] = -np.inf  # timestamps together are likelier than any one text token
    return logits


class _Rules:
    """Whisper's logits processors for the beam loop: (rows, tokens so far) and scores in, scores out."""

    def __init__(self, c: WhisperSection, begin: int, timestamps: bool) -> None:
        self.c, self.begin, self.timestamps = c, begin, timestamps
        self.suppress = np.asarray(c.suppress_tokens, dtype=np.int64)
        self.begin_suppress = np.asarray(c.begin_suppress_tokens, dtype=np.int64)
        self.chooser = TokenChooser(SamplingConfig())  # greedy: beam search never draws

    def __call__(self, seqs: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = scores.copy()
        for row, tokens in zip(out, seqs.tolist()):
            if len(tokens) == self.begin and self.begin_suppress.size:
                row[self.begin_suppress] = -np.inf
            if self.suppress.size:
                row[self.suppress] = -np.inf
            if self.timestamps:
                _timestamp_rules(row, tokens, self.begin, self.c)
        return out


def _logsumexp(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return -np.inf
    m = finite.max()
    return float(m + np.log(np.exp(finite - m).sum()))


class WhisperRecognizer(Recognizer):
    """A Whisper artifact: encoder + cached decoder graphs."""

    contract: WhisperSection

    @cached_property
    def _tokenizer(self) -> Any:
        return read_tokenizer(self.artifact.path, self.contract.tokenizer)

    def _transcribe(self, wave: np.ndarray, opts: Options) -> Transcript:
        rate = self.sample_rate
        texts: list[str] = []
        segments: list[Segment] = []
        detected = opts.language
        for c in self.chunks(wave):
            if audio.is_silence(c.wave):
                continue
            feats = self.features(c.wave)
            tokens = self.decode_tokens(feats, opts.language, opts.task, opts.return_timestamps, opts.max_new_tokens,
                                        opts.num_beams or 1)
            detected = detected or self._language_of(tokens)
            texts.append(self.decode_text(tokens))
            if opts.return_timestamps:  # timestamp tokens count from the window's first sample
                segments += self._segments(tokens, c.start / rate, (c.start + len(c.wave)) / rate, True)
            else:  # one segment per chunk, over the span that chunk is responsible for
                segments += self._segments(tokens, (c.start + c.keep_start) / rate, (c.start + c.keep_end) / rate,
                                           False)
        return Transcript(text=audio.join_words(texts), segments=segments, language=detected)

    def features(self, wave: np.ndarray) -> np.ndarray:
        c = self.contract
        return audio.whisper_log_mel(wave, c.n_mels, c.n_samples, c.n_fft, c.hop_length, c.audio.sample_rate)

    def prompt(self, language: str | None, task: str | None, timestamps: bool, cross: dict[str, np.ndarray]) -> list[int]:
        """<|startoftranscript|> <|lang|> [<|task|>] [<|notimestamps|>], built as transformers builds it:
        the language is detected when not given; the task token is added when a task or a language
        was given (transcribe by default)."""
        c = self.contract
        ids = [c.decoder_start_token_id]
        if language is not None or c.lang_to_id:
            ids.append(self._language_id(language, cross))
        if task is not None:
            if task not in c.task_to_id:
                raise InputError(f"unknown Whisper task '{task}'", found=f"tasks {sorted(c.task_to_id)}")
            ids.append(c.task_to_id[task])
        elif language is not None and "transcribe" in c.task_to_id:
            ids.append(c.task_to_id["transcribe"])
        if not timestamps:
            ids.append(c.no_timestamps_token_id)
        return ids

    def _language_id(self, language: str | None, cross: dict[str, np.ndarray]) -> int:
        table = self.contract.lang_to_id
        if not table:
            raise InputError("this Whisper model has no language tokens", found=f"language={language!r}",
                             fix="leave language unset")
        if language is None:
            # Detection as transformers does it: one step from <|startoftranscript|>, best language token.
            with self._cache(1, cross) as cache:
                logits = self._prefill(cache, [self.contract.decoder_start_token_id])
            ids = np.array(sorted(table.values()))
            return int(ids[np.argmax(logits[ids])])
        key = language if language.startswith("<|") else f"<|{language}|>"
        if key not in table:
            raise InputError(f"unknown language '{language}' for this Whisper model",
                             found=f"languages {sorted(k.strip('<|>') for k in table)}")
        return table[key]

    def _language_of(self, tokens: list[int]) -> str | None:
        names = {v: k.strip("<|>") for k, v in self.contract.lang_to_id.items()}
        return names.get(tokens[1]) if len(tokens) > 1 else None

    def _cache(self, slots: int, cross: dict[str, np.ndarray], rows: int = 1) -> StateLoop:
        """A self-attention cache of `slots` tokens for `rows` rows of one chunk (its beams); the
        chunk's cross K/V ride along as resident inputs, one copy per row."""
        resident = {name: np.ascontiguousarray(np.repeat(a, rows, axis=0)) for name, a in cross.items()}
        return StateLoop(self.runners["decoder"], self.contract.cache, rows, slots, resident,
                         origin=np.zeros(rows, np.int64))

    @staticmethod
    def _prefill(cache: StateLoop, ids: list[int]) -> np.ndarray:
        prompt = np.asarray([ids], dtype=np.int64)
        return cache.prefill(prompt, np.ones_like(prompt))[0].astype(np.float32)

    def greedy_tokens(self, features: np.ndarray, language: str | None = None, task: str | None = None,
                      timestamps: bool = False, max_new_tokens: int | None = None) -> list[int]:
        """Greedy search on one (n_mels, frames) feature array; the prompt is included in the result."""
        return self.decode_tokens(features, language, task, timestamps, max_new_tokens)

    def decode_tokens(self, features: np.ndarray, language: str | None = None, task: str | None = None,
                      timestamps: bool = False, max_new_tokens: int | None = None, num_beams: int = 1) -> list[int]:
        """Greedy or beam search on one (n_mels, frames) feature array; the prompt is included.

        The prompt runs once (past length 0); every later token is one step of the runner's
        stepper, which keeps the self-attention cache and the cross K/V on its side for the chunk.
        """
        if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
            raise ConfigError("num_beams must be an integer >= 1", found=repr(num_beams))
        c = self.contract
        cross = self.runners["encoder"].run({"input_features": features[None].astype(np.float32)})
        tokens = self.prompt(language, task, timestamps, cross)
        begin = len(tokens)
        # As transformers counts: the generation config's max_length bounds the tokens after the
        # forced prompt, like max_new_tokens; the position table bounds both.
        new = c.max_length if max_new_tokens is None else max_new_tokens
        limit = min(begin + new, c.max_target_positions)
        if limit <= begin:
            return tokens
        if num_beams > 1:
            return self._beams(cross, tokens, limit, timestamps, int(num_beams))
        suppress = np.asarray(c.suppress_tokens, dtype=np.int64)
        begin_suppress = np.asarray(c.begin_suppress_tokens, dtype=np.int64)
        with self._cache(limit - 1, cross) as cache:  # the last token is never fed back
            logits = self._prefill(cache, tokens)
            while True:
                if len(tokens) == begin and begin_suppress.size:
                    logits[begin_suppress] = -np.inf
                if suppress.size:
                    logits[suppress] = -np.inf
                if timestamps:
                    logits = _timestamp_rules(logits, tokens, begin, c)
                nxt = int(np.argmax(logits))
                tokens.append(nxt)
                if nxt == c.eos_token_id or len(tokens) >= limit:
                    return tokens
                logits = cache.step(np.asarray([nxt], np.int64))[0].astype(np.float32)

    def _beams(self, cross: dict[str, np.ndarray], prompt: list[int], limit: int, timestamps: bool,
               beams: int) -> list[int]:
        """Beam search as transformers runs it for Whisper (`_beam_search` with Whisper's processors);
        the best hypothesis, prompt included."""
        c = self.contract
        opts = GenerateOptions.make({"num_beams": beams}, GenerationDefaults())
        seqs = np.repeat(np.asarray([prompt], np.int64), beams, axis=0)
        with self._cache(limit - 1, cross, beams) as cache:  # the prompt runs on every beam's row, as in transformers
            logits = cache.prefill(seqs, np.ones_like(seqs))
            out = beam_search(cache, logits, seqs, opts, _Rules(c, len(prompt), timestamps),
                              Stopper(limit, (c.eos_token_id,), len(prompt)), c.eos_token_id, (False, False))
        return [int(t) for t in out.sequences[0]]

    def decode_text(self, tokens: list[int]) -> str:
        text_ids = [t for t in tokens if t < self.contract.eos_token_id]
        return str(self._tokenizer.decode(text_ids, skip_special_tokens=True)).strip()

    def _segments(self, tokens: list[int], start: float, end: float, timestamps: bool) -> list[Segment]:
        c = self.contract
        ts_begin = c.no_timestamps_token_id + 1
        if not timestamps:
            text = self.decode_text(tokens)
            return [Segment(text, start, end)] if text else []
        out, open_at, piece = [], None, []
        for t in tokens:
            if t >= ts_begin:
                at = start + (t - ts_begin) * c.time_precision
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
