"""Whisper speech recognition: numpy log-mel, the encoder once per 30 s chunk, greedy or beam search.

The loop is greedy search (or `num_beams` beam search, tasks/search.py) with Whisper's own logits
rules, applied in the order `transformers` applies them: forced start/language/task tokens,
`begin_suppress_tokens` at the first free position, `suppress_tokens`, and
`WhisperTimeStampLogitsProcessor`'s timestamp rules. Its cache is the decoder state loop
(tasks/state_loop.py): decode steps through the runner's stepper, the encoder's cross keys/values
resident on the backend for the whole chunk; beams reorder its rows where it lives.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.generate import GenerationDefaults
from edgekit.contract.recognize import ALIGNMENT, WhisperSection
from edgekit.errors import ConfigError, InputError, UnsupportedError
from edgekit.preprocess import audio
from edgekit.preprocess.text import read_tokenizer
from edgekit.preprocess.vad import Span
from edgekit.results import Segment, StreamUpdate, Transcript
from edgekit.tasks.state_loop import StateLoop, vocab_of
from edgekit.tasks.options import GenerateOptions
from edgekit.tasks.recognizer import Options, Recognizer, stitch
from edgekit.tasks.sampling import SamplingConfig, TokenChooser, log_softmax, softmax
from edgekit.tasks.search import Stopper, beam_search
from edgekit.tasks.span_packing import Part, Window, pack, pieces, split
from edgekit.tasks.whisper_longform import FALLBACK_TOP_K, Decoded, LongForm, LongSegment, sequential
from edgekit.tasks.whisper_stream import stream_whisper
from edgekit.tasks.word_times import TokenTiming, token_times


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

    def __init__(self, c: WhisperSection, begin: int, timestamps: bool, forced_eos: int | None = None,
                 limit: int = 0) -> None:
        self.c, self.begin, self.timestamps = c, begin, timestamps
        self.forced_eos, self.limit = forced_eos, limit
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
            if self.forced_eos is not None and len(tokens) == self.limit - 1:
                _force(row, self.forced_eos)
        return out


def _force(row: np.ndarray, token: int) -> None:
    """transformers' ForcedEOSTokenLogitsProcessor at the last position: every score -inf but the token's."""
    row[:] = -np.inf
    row[token] = 0.0


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

    def _check(self, opts: Options) -> None:
        if opts.word_timestamps and not self.contract.alignment_heads:
            raise UnsupportedError("word_timestamps needs the model's alignment heads, and this Whisper has none",
                                   found="no generation_config.alignment_heads when it was converted",
                                   fix="add alignment_heads ([layer, head] pairs) to generation_config.json and "
                                       "convert again, or recognize without word_timestamps")
        if opts.long_form is not None:
            self._check_long_form(opts, opts.long_form)

    def _check_long_form(self, opts: Options, lf: LongForm) -> None:
        if opts.word_timestamps:
            raise UnsupportedError("long_form does not time words yet",
                                   found="recognize(long_form=..., word_timestamps=True)",
                                   fix="drop one: chunked recognize(word_timestamps=True) times words")
        if lf.condition_on_prev_tokens and self.contract.startofprev is None:
            raise UnsupportedError("this Whisper artifact does not record <|startofprev|>, which "
                                   "condition_on_prev_tokens puts before the previous text",
                                   found="an artifact converted before long-form transcription",
                                   fix="convert the model again, or LongForm(condition_on_prev_tokens=False)")

    def _transcribe(self, wave: np.ndarray, opts: Options) -> Transcript:
        if opts.long_form is not None:
            return self._transcribe_long(wave, opts, opts.long_form)
        rate = self.sample_rate
        texts: list[str] = []
        segments: list[Segment] = []
        detected = opts.language
        timestamps = opts.return_timestamps or opts.word_timestamps
        for c in self.chunks(wave):
            if audio.is_silence(c.wave):
                continue
            cross = self.encode(self.features(c.wave)[None].astype(np.float32))
            tokens = self._decode_windows(cross, opts.language, opts.task, timestamps, opts.max_new_tokens,
                                          opts.num_beams or 1)[0]
            detected = detected or self._language_of(tokens)
            texts.append(self.decode_text(tokens))
            if timestamps:  # timestamp tokens count from the window's first sample
                timing = self._timing(cross, tokens, len(c.wave), detected) if opts.word_timestamps else None
                segments += self._segments(tokens, c.start / rate, (c.start + len(c.wave)) / rate, True, timing)
            else:  # one segment per chunk, over the span that chunk is responsible for
                segments += self._segments(tokens, (c.start + c.keep_start) / rate, (c.start + c.keep_end) / rate,
                                           False)
        return Transcript(text=audio.join_words(texts), segments=segments, language=detected)

    def recognize_stream(self, chunks: Iterable[Any], sample_rate: int | None = None, language: str | None = None,
                         task: str | None = None, step_s: float = 1.0, trim_s: float = 20.0,
                         max_new_tokens: int | None = None) -> Iterator[StreamUpdate]:
        """Transcribe audio as it arrives: one `StreamUpdate` per chunk, then a last one (`is_final`).

        Every `step_s` of new audio the buffer is decoded again (greedy, with timestamps); text two
        successive decodes agree on is final (LocalAgreement-2), the rest of the last decode is
        `text_partial`. Past `trim_s` the buffer is cut at a final segment's end. `max_new_tokens`: per
        decode (default 10 per second of buffer). `chunks`: float32/int16 arrays of any length at
        `sample_rate` Hz (default: the model's). See tasks/whisper_stream.py.
        """
        return stream_whisper(self, chunks, sample_rate, language, task, step_s, trim_s, max_new_tokens)

    def _transcribe_spans(self, wave: np.ndarray, spans: list[Span], opts: Options) -> Transcript:
        """Speech spans of one window at most go through the encoder and greedy search `batch` windows
        at a time (the most the graphs are declared for); with `opts.pack` short spans share a window
        (tasks/span_packing.py), else each has its own. A longer span (`max_speech_duration_s` past the
        window) is chunked as `_transcribe` chunks the whole audio."""
        c, rate = self.contract, self.sample_rate
        short = [i for i, s in enumerate(spans) if s.end - s.start <= c.n_samples]
        windows = pack(spans, short, c.n_samples, opts.pack)
        # A shared window is decoded with timestamps: they (and the words' DTW times) say which span
        # each segment's text came from.
        timestamps = opts.return_timestamps or opts.word_timestamps or any(len(w.members) > 1 for w in windows)
        parts: dict[int, Transcript] = {}
        for k in range(0, len(windows), c.batch[2]):
            group = windows[k:k + c.batch[2]]
            cross = self.encode(np.stack([self.features(w.audio(wave, spans)) for w in group]).astype(np.float32))
            rows = self._decode_windows(cross, opts.language, opts.task, timestamps, opts.max_new_tokens,
                                        opts.num_beams or 1)
            for r, (window, tokens) in enumerate(zip(group, rows)):
                one = {name: v[r:r + 1] for name, v in cross.items()}
                parts.update(self._window_parts(one, tokens, window, opts))
        whole = [parts[i] if i in parts else self._transcribe(wave[s.start:s.end], opts) for i, s in enumerate(spans)]
        return stitch(whole, spans, rate, opts.language)

    def _transcribe_long(self, wave: np.ndarray, opts: Options, lf: LongForm) -> Transcript:
        c = self.contract
        # One log-mel over the whole audio (at least one window): its level floor (max - 8) is the
        # whole audio's, as WhisperFeatureExtractor(truncation=False, padding="longest") makes it.
        feats = audio.whisper_log_mel(wave, c.n_mels, max(len(wave), c.n_samples), c.n_fft, c.hop_length,
                                      c.audio.sample_rate)
        found, language = self._long_form(feats, opts.language, opts.task, opts.max_new_tokens, lf,
                                           opts.num_beams or 1)
        segments = [Segment(text, s.start, s.end) for s in found if (text := self.decode_text(list(s.tokens)))]
        text = self.decode_text([t for s in found for t in s.tokens])
        return Transcript(text=text, segments=segments, language=language)

    def long_form_segments(self, features: np.ndarray, language: str | None = None, task: str | None = None,
                           max_new_tokens: int | None = None, options: LongForm = LongForm(),
                           num_beams: int = 1) -> list[LongSegment]:
        """Sequential long-form decoding of (n_mels, frames) features of any length: the segments
        transformers' generate(return_timestamps=True, return_segments=True) gives, same options."""
        self._check_long_form(Options(num_beams=num_beams, long_form=options), options)
        return self._long_form(features, language, task, max_new_tokens, options, num_beams)[0]

    def _long_form(self, features: np.ndarray, language: str | None, task: str | None, max_new_tokens: int | None,
                   lf: LongForm, num_beams: int) -> tuple[list[LongSegment], str | None]:
        c = self.contract
        size = c.n_samples // c.hop_length
        first = np.pad(features[:, :size], ((0, 0), (0, max(0, size - features.shape[-1]))))
        # The language is detected once, on the first window (transformers' `detect_language`).
        init = self.prompt(language, task, True, self.encode(first[None].astype(np.float32)))
        detected = language or self._language_of(init)
        choosers = {t: TokenChooser(SamplingConfig.make(True, t, FALLBACK_TOP_K, seed=None if lf.seed is None else
                                                        lf.seed + k)) if t > 0 else TokenChooser(SamplingConfig())
                    for k, t in enumerate(lf.temperature)}

        def window(piece: np.ndarray, prompt: list[int], sot: int, limit: int, temperature: float,
                   beams: int) -> Decoded:
            cross = self.encode(piece[None].astype(np.float32))
            if beams > 1:
                return self._window_beams(cross, prompt, sot, limit, beams)
            return self._window(cross, prompt, sot, limit, choosers[temperature])

        vocab = vocab_of(self.runners["decoder"])
        found = sequential(features, c, lf, init, c.startofprev or (), max_new_tokens, window, vocab, num_beams)
        return found, detected

    def _window(self, cross: dict[str, np.ndarray], prompt: list[int], sot: int, limit: int,
                chooser: TokenChooser) -> Decoded:
        """One long-form decode of one window from `prompt` (previous text, then <|startoftranscript|>
        at `sot` ...) to eos or `limit` tokens in all: greedy, or sampled at the chooser's temperature."""
        c, begin = self.contract, len(prompt)
        rules, tokens, logprobs = _Rules(c, begin, True), list(prompt), []
        temperature = chooser.cfg.temperature if chooser.cfg.do_sample else 1.0
        if limit <= begin:
            return Decoded([], [], 0.0)
        with self._cache(limit - 1, cross) as cache:
            logits = self._prefill(cache, prompt)
            no_speech = self._no_speech(cache, sot)
            while True:
                scores = chooser.warp(rules(np.asarray([tokens]), logits[None]))
                token = int(chooser.choose(scores)[0])
                # `_retrieve_avg_logprobs`: the warped scores times the temperature, log-softmaxed.
                logprobs.append(float(log_softmax(scores[0] * np.float32(temperature))[token]))
                tokens.append(token)
                if token == c.eos_token_id or len(tokens) >= limit:
                    return Decoded(tokens[begin:], logprobs, no_speech)
                logits = cache.step(np.asarray([token], np.int64))[0].astype(np.float32)

    def _window_beams(self, cross: dict[str, np.ndarray], prompt: list[int], sot: int, limit: int,
                      beams: int) -> Decoded:
        """`_window` by beam search (temperature 0 with num_beams > 1, as transformers runs it): the
        best hypothesis, and its log-probabilities from the scores of the beam each step extended
        (`split_by_batch_index` with `beam_indices`), log-softmaxed again as `_retrieve_avg_logprobs` does."""
        c, begin = self.contract, len(prompt)
        if limit <= begin:
            return Decoded([], [], 0.0)
        opts = GenerateOptions.make({"num_beams": beams}, GenerationDefaults())
        seqs = np.repeat(np.asarray([prompt], np.int64), beams, axis=0)
        with self._cache(limit - 1, cross, beams) as cache:
            logits = cache.prefill(seqs, np.ones_like(seqs))
            no_speech = self._no_speech(cache, sot)
            stop = Stopper(limit, (c.eos_token_id,), begin)
            out = beam_search(cache, logits, seqs, opts, _Rules(c, begin, True), stop, c.eos_token_id, (True, False))
        tokens = [int(t) for t in out.sequences[0][begin:]]
        rows = out.beam_indices[0] if out.beam_indices is not None else np.zeros(0, np.int64)
        logprobs = [float(log_softmax(out.scores[t][r])[tok]) for t, (r, tok) in enumerate(zip(rows, tokens))]
        return Decoded(tokens, logprobs, no_speech)

    def _no_speech(self, cache: StateLoop, sot: int) -> float:
        """WhisperNoSpeechDetection: P(<|nospeech|>) in the unprocessed distribution after
        <|startoftranscript|> (row 0: every beam's prompt is the same)."""
        logits = cache.prompt_logits[0, sot].astype(np.float32)
        return float(softmax(logits)[self.contract.no_timestamps_token_id - 1])

    def _window_parts(self, cross: dict[str, np.ndarray], tokens: list[int], window: Window,
                      opts: Options) -> dict[int, Transcript]:
        """One decoded window -> a transcript per member span, its times from the span's start."""
        c, rate = self.contract, self.sample_rate
        language = opts.language or self._language_of(tokens)
        shared = len(window.members) > 1
        timing = None
        if opts.word_timestamps or (shared and c.alignment_heads):
            timing = self._timing(cross, tokens, window.samples, language)
        asked = opts.return_timestamps or opts.word_timestamps
        if not shared:
            return {window.members[0]: Transcript(self.decode_text(tokens), self._segments(
                tokens, 0.0, window.samples / rate, asked, timing), language)}
        found: dict[int, list[Part]] = {i: [] for i in window.members}
        for piece in pieces(tokens, c.no_timestamps_token_id + 1, c.eos_token_id, c.time_precision,
                            window.samples / rate):
            words = None if timing is None else timing.grouped(piece.tokens, 0.0)
            for part in split(piece, window, rate, words):
                found[part.member].append(part)
        out = {}
        for i, got in found.items():
            text = self.decode_text([tokens[t] for p in got for t in p.tokens])
            segments = [Segment(t, p.start, p.end, p.words if opts.word_timestamps else None)
                        for p in got if (t := self.decode_text([tokens[x] for x in p.tokens]))]
            if not asked:  # one segment per span, as an unshared window gives
                segments = [Segment(text, 0.0, window.lengths[window.members.index(i)] / rate)] if text else []
            out[i] = Transcript(text, segments, language)
        return out

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
        """A self-attention cache of `slots` tokens for `rows` rows: the beams of one window (its cross
        K/V repeated, one copy per row) or one row per window (`cross` has `rows` rows already); the
        cross K/V ride along as resident inputs."""
        windows = next(iter(cross.values())).shape[0]
        resident = {name: np.ascontiguousarray(a if windows == rows else np.repeat(a, rows, axis=0))
                    for name, a in cross.items()}
        origin = np.arange(rows) if windows == rows else np.zeros(rows, np.int64)
        return StateLoop(self.runners["decoder"], self.contract.cache, rows, slots, resident, origin=origin)

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
        """Greedy or beam search on one (n_mels, frames) feature array; the prompt is included."""
        cross = self.encode(features[None].astype(np.float32))
        return self._decode_windows(cross, language, task, timestamps, max_new_tokens, num_beams)[0]

    def encode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """A batch of windows' features -> what every decode step reads beside its cache (the cross K/V)."""
        return self.runners["encoder"].run({"input_features": features})

    def _decode_windows(self, cross: dict[str, np.ndarray], language: str | None, task: str | None,
                        timestamps: bool, max_new_tokens: int | None, num_beams: int) -> list[list[int]]:
        """Every encoded window of `cross` (batch axis first): greedy search on all together, beam
        search one window at a time (its beams are the rows); each row's prompt included."""
        if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
            raise ConfigError("num_beams must be an integer >= 1", found=repr(num_beams))
        c = self.contract
        windows = [{k: v[w:w + 1] for k, v in cross.items()} for w in range(next(iter(cross.values())).shape[0])]
        prompts = [self.prompt(language, task, timestamps, one) for one in windows]
        begin = len(prompts[0])  # every prompt has the same tokens but for the (detected) language
        # As transformers counts: the generation config's max_length bounds the tokens after the
        # forced prompt, like max_new_tokens; the position table bounds both.
        new = c.max_length if max_new_tokens is None else max_new_tokens
        limit = min(begin + new, c.max_target_positions)
        if limit <= begin:
            return prompts
        if num_beams > 1:
            return [self._beams(one, p, limit, timestamps, int(num_beams)) for one, p in zip(windows, prompts)]
        return self._greedy_rows(cross, prompts, limit, timestamps)

    def _greedy_rows(self, cross: dict[str, np.ndarray], prompts: list[list[int]], limit: int,
                     timestamps: bool, begin: int | None = None) -> list[list[int]]:
        """Greedy search for every row of `cross` (one encoded window each) together, each row from its
        prompt (all of one length) to eos or `limit` tokens; a finished row is fed eos and left alone.
        `begin`: where the prompt's forced special tokens end (all of it by default); tokens after it
        are forced text the logits rules read as decoded (a stream's committed tokens).

        The prompt runs once (past length 0); every later token is one step of the runner's stepper,
        which keeps the self-attention cache and the cross K/V on its side for the window.
        """
        c = self.contract
        begin, rows = len(prompts[0]) if begin is None else begin, len(prompts)
        suppress = np.asarray(c.suppress_tokens, dtype=np.int64)
        begin_suppress = np.asarray(c.begin_suppress_tokens, dtype=np.int64)
        forced = self.forced_eos_token_id()
        tokens = [list(p) for p in prompts]
        done = [False] * rows
        with self._cache(limit - 1, cross, rows) as cache:  # the last token is never fed back
            ids = np.asarray(prompts, dtype=np.int64)
            logits = cache.prefill(ids, np.ones_like(ids)).astype(np.float32)
            while True:
                nxt = np.full(rows, c.eos_token_id, np.int64)
                for r in (r for r in range(rows) if not done[r]):
                    row = logits[r]
                    if len(tokens[r]) == begin and begin_suppress.size:
                        row[begin_suppress] = -np.inf
                    if suppress.size:
                        row[suppress] = -np.inf
                    if timestamps:
                        row = _timestamp_rules(row, tokens[r], begin, c)
                    if forced is not None and len(tokens[r]) == limit - 1:
                        _force(row, forced)
                    nxt[r] = int(np.argmax(row))
                    tokens[r].append(int(nxt[r]))
                    done[r] = nxt[r] == c.eos_token_id or len(tokens[r]) >= limit
                if all(done):
                    return tokens
                logits = cache.step(nxt).astype(np.float32)

    def _beams(self, cross: dict[str, np.ndarray], prompt: list[int], limit: int, timestamps: bool,
               beams: int) -> list[int]:
        """Beam search as transformers runs it for Whisper (`_beam_search` with Whisper's processors);
        the best hypothesis, prompt included."""
        c = self.contract
        opts = GenerateOptions.make({"num_beams": beams}, GenerationDefaults())
        seqs = np.repeat(np.asarray([prompt], np.int64), beams, axis=0)
        with self._cache(limit - 1, cross, beams) as cache:  # the prompt runs on every beam's row, as in transformers
            logits = cache.prefill(seqs, np.ones_like(seqs))
            rules = _Rules(c, len(prompt), timestamps, self.forced_eos_token_id(), limit)
            out = beam_search(cache, logits, seqs, opts, rules,
                              Stopper(limit, (c.eos_token_id,), len(prompt)), c.eos_token_id, (False, False))
        return [int(t) for t in out.sequences[0]]

    def forced_eos_token_id(self) -> int | None:
        """The token forced at the last position (generation_config.forced_eos_token_id); Whisper has none."""
        return None

    def _decode_piece(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    def decode_text(self, tokens: list[int]) -> str:
        text_ids = [t for t in tokens if t < self.contract.eos_token_id]
        return str(self._tokenizer.decode(text_ids, skip_special_tokens=True)).strip()

    def _segments(self, tokens: list[int], start: float, end: float, timestamps: bool,
                  timing: TokenTiming | None = None) -> list[Segment]:
        """Segments between timestamp token pairs (or one for the whole window); with `timing`, each
        with its words, grouped inside it as transformers' pipeline groups them per chunk."""
        if not timestamps:
            text = self.decode_text(tokens)
            return [Segment(text, start, end)] if text else []
        c = self.contract
        ts_begin = c.no_timestamps_token_id + 1
        out, open_at, piece = [], None, []
        for i, t in enumerate(tokens):
            if t >= ts_begin:
                at = start + (t - ts_begin) * c.time_precision
                if open_at is None:
                    open_at, piece = at, []
                elif at == open_at:  # a repeat of the opening timestamp opens it again, as transformers' _decode_asr
                    continue
                else:
                    text = self.decode_text([tokens[k] for k in piece])
                    if text:
                        words = None if timing is None else timing.words(piece, start)
                        out.append(Segment(text, open_at, at, words))
                    open_at = None
            elif open_at is not None and t < c.eos_token_id:  # text tokens only, as decode_text keeps
                piece.append(i)
        return out

    def _timing(self, cross: dict[str, np.ndarray], tokens: list[int], samples: int,
                language: str | None) -> TokenTiming:
        """One decoder pass over a window's tokens (the last never fed, as in generation), reading
        the alignment heads' weights and the logits; `samples`: the audio in the window."""
        c, runner = self.contract, self.runners["decoder"]
        # The prompt (<|startoftranscript|>, language, task) is the leading special tokens: they sit
        # between <|endoftext|> and the timestamps, and the first free token is a timestamp.
        special = range(c.eos_token_id + 1, c.no_timestamps_token_id + 1)
        begin = next((i for i, t in enumerate(tokens) if t not in special), len(tokens))
        if begin == len(tokens):  # nothing decoded after the prompt: no token to time
            return TokenTiming(tokens, begin, np.zeros(0), np.zeros(0), self._decode_piece, language)
        fed = np.asarray([tokens[:-1]], np.int64)
        dtypes = {s.name: np.dtype(s.dtype) for s in runner.inputs}
        small = {"input_ids": fed, "attention_mask": np.ones_like(fed), "position_ids": np.arange(fed.shape[1])[None]}
        feeds = {**{n: small[n] for n in c.cache.inputs}, **cross,
                 **{t.input: np.zeros(t.initial_shape(1), dtypes[t.input]) for t in c.cache.tensors()}}
        out = runner.run(feeds, outputs=["logits", ALIGNMENT])
        # The feature extractor's attention mask has one frame per started hop; encoder frames are two mel frames.
        frames = -(-min(samples, c.n_samples) // c.hop_length) // 2
        times = token_times(out[ALIGNMENT][0], begin, len(tokens) - begin, frames, c.median_filter_width,
                            c.time_precision)
        logits = out["logits"][0, begin - 1:].astype(np.float64)  # row r predicts token r + 1
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        chosen = probs[np.arange(len(times)), tokens[begin:]] / probs.sum(-1)
        return TokenTiming(tokens, begin, times, chosen, self._decode_piece, language)
