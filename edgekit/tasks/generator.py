"""`generate`: text generation with Hugging Face `generate()` keyword names, meaning and tokens.

The contract's decoder state (edgekit/contract/state: typed entries per layer, keys/values,
convolution and SSM states, LSTM h/c) runs through one loop (`StateLoop`, tasks/state_loop.py);
an encoder-decoder's decoder is the same loop with the encoder's output resident. Every state is
sized once per call for the longest sequence it may make; nothing grows per step, except the
compact pasts of models that need exactly the tokens so far (tasks/compactkv.py). The decode
loops (greedy, sampling, beam search) are tasks/search.py, the logits processors
tasks/processors.py, the keywords tasks/options.py, chat prompts tasks/chat.py.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator as Gen, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.generate import ENCODER_MASK, FullSequence, GenerateSection, verify_refusal
from edgekit.contract.state import DecoderState
from edgekit.errors import ArtifactError, ConfigError, InputError
from edgekit.preprocess.text import check_texts, read_tokenizer
from edgekit.results import GenerateOutput, Speculation
from edgekit.runtimes.base import Runner
from edgekit.tasks import chat
from edgekit.tasks.compactkv import CompactKV
from edgekit.tasks.conversation import Conversation
from edgekit.tasks.fullseq import FullSequenceState
from edgekit.tasks.kvcache import SharedKVCache
from edgekit.tasks.state_loop import StateLoop
from edgekit.tasks.vision_inputs import VisionInputs, messages_images, per_prompt
from edgekit.tasks.model import Model
from edgekit.tasks.options import DEFAULTS, NO_EFFECT, NOT_IMPLEMENTED, GenerateOptions, refuse_unimplemented
from edgekit.tasks.processors import LogitsPipeline
from edgekit.tasks.prompts import Prompt, check_rows, from_ids, language_code, left_pad, right_pad
from edgekit.tasks.search import DecodeState, Searched, Stopper, beam_search, sample
from edgekit.tasks.speculative import AssistantDraft, PromptLookup, Speculate, speculative_decode
from edgekit.tasks.structured import GrammarRows, OutputFormat, llg_tokenizer

log = logging.getLogger("edgekit")


def cache_for(runner: Runner, cfg: DecoderState | FullSequence, batch: int, prompt: int, new: int,
              resident: Mapping[str, np.ndarray] | None = None, origin: np.ndarray | None = None,
              features: np.ndarray | None = None) -> StateLoop | SharedKVCache | CompactKV | FullSequenceState:
    """The loop state for the contract's state, sized for prompt + new tokens (the last new token is
    never fed back, so prompt + new - 1 slots). `features`: a vision-language prompt's image rows."""
    if features is not None and (isinstance(cfg, FullSequence) or cfg.compact or runner.kv_layout == "shared"):
        raise ArtifactError("image features need the portable slot-cache decoder graph",
                            found=f"kv_layout {runner.kv_layout}", fix="load with the artifact's portable graph")
    if isinstance(cfg, FullSequence):
        return FullSequenceState(runner, cfg, batch, prompt, new)
    if cfg.compact:
        return CompactKV(runner, cfg, batch)
    if runner.kv_layout == "shared":  # onnxruntime's decoder-only stand-in: no resident inputs
        if resident:
            raise ArtifactError("a shared-buffer decoder graph cannot take an encoder's output",
                                found=f"resident inputs {sorted(resident)}", fix="convert the model again")
        return SharedKVCache(runner, cfg, batch, prompt + new - 1)
    return StateLoop(runner, cfg, batch, prompt + new - 1, resident, origin, features=features)


@dataclass
class _Run:
    """A started decode: the state after its prompt, and what the loop needs."""

    state: DecodeState
    logits: np.ndarray
    seqs: np.ndarray  # what the loop starts from: the padded prompt, or the decoder's start tokens
    opts: GenerateOptions
    pipeline: LogitsPipeline
    stop: Stopper
    pad: int
    expand: int  # rows per input (beams, or sequences to return)
    grammar: GrammarRows | None = None  # structured output's matchers, one per row


class Generator(Model):
    """A loaded text-generation artifact (decoder-only or encoder-decoder).

    >>> import tempfile, edgekit, numpy as np, torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> folder = tempfile.mkdtemp() + "/gpt2"
    >>> _ = torch.manual_seed(0)
    >>> GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=64)).save_pretrained(folder)
    >>> _ = edgekit.convert(folder, folder + "-art")  # parity: greedy tokens identical to transformers
    >>> gen = edgekit.load(folder + "-art", device="cpu")
    >>> gen.generate(input_ids=np.array([[5, 6, 7]]), max_new_tokens=4).shape  # no tokenizer saved: ids in, ids out
    (1, 7)
    >>> gen.generate(input_ids=np.array([[5, 6, 7]]), max_new_tokens=4, num_beams=3, num_return_sequences=2).shape
    (2, 7)
    """

    contract: GenerateSection
    # Where this model's next call as an assistant starts drafting: the length a "heuristic"
    # num_assistant_tokens_schedule left (transformers keeps it in the assistant's generation_config).
    num_assistant_tokens: int | None = None

    @property
    def max_context(self) -> int:
        return self.contract.max_context

    @property
    def is_encoder_decoder(self) -> bool:
        return self.contract.encoder is not None

    @property
    def decoder(self) -> Runner:
        """The runner of the graph every decode step calls."""
        return self.runners["decoder" if self.is_encoder_decoder else "model"]

    @cached_property
    def tokenizer(self) -> Any:
        """The `tokenizers.Tokenizer` of the artifact, or None for an artifact that takes ids only."""
        name = self.contract.tokenizer
        return None if name is None else read_tokenizer(self.artifact.path, name)

    def encode(self, texts: Sequence[str], special: bool | None = None) -> list[list[int]]:
        tok = self._need_tokenizer()
        check_texts(texts)  # lone surrogates would make the tokenizer raise a bare TypeError
        special = self.contract.add_special_tokens if special is None else special
        return [list(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=special)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._need_tokenizer().decode([int(i) for i in ids], skip_special_tokens=True))

    def chat_prompt(self, messages: Any, add_generation_prompt: bool = True) -> list[str]:
        """The prompt texts of one conversation (or a list of them), as `apply_chat_template` renders them."""
        convs, _ = chat.conversations(messages)
        tpl = self.contract.chat
        if tpl is None:
            raise ConfigError("this artifact has no chat template", found="no chat_template in the source's tokenizer",
                              fix="pass a text prompt, or convert from a folder whose tokenizer has a chat_template")
        return [chat.render(tpl.template, c, tpl.special_tokens, add_generation_prompt) for c in convs]

    def conversation(self, system: str | None = None, context: int | None = None) -> Conversation:
        """A multi-turn chat (`conv.say(text) -> str`) that keeps the decoder's cache between turns and
        feeds only each turn's new tokens (tasks/conversation.py); `context` caps its cache (default:
        the model's context). Close it (or use `with`) to free the cache."""
        return Conversation(self, system, context)

    def logits(self, input_ids: np.ndarray, decoder_input_ids: np.ndarray | None = None,
               decode_steps: int = 0) -> np.ndarray:
        """Teacher-forced logits (batch, sequence, vocab) of unpadded int64 ids, through the same
        graphs and cache as generate: for scoring text (perplexity) and next-token agreement. An
        encoder-decoder scores `decoder_input_ids` given the input.

        The last `decode_steps` positions come from decode steps (one token each, as generate feeds
        them) instead of the prompt run: what parity compares to check the decode path.
        """
        ids = np.asarray(input_ids)
        from_ids(ids, np.ones_like(ids), 0, (), not self.is_encoder_decoder, self.decoder.outputs[0].shape[-1],
                 self._limit)  # checks only
        ids = ids.astype(np.int64)
        scored = ids
        if self.is_encoder_decoder:
            dec = np.asarray(decoder_input_ids, np.int64) if decoder_input_ids is not None else None
            if dec is None or dec.ndim != 2 or dec.shape[0] != ids.shape[0] or dec.shape[1] > self.max_context:
                raise InputError("an encoder-decoder scores decoder_input_ids (batch, tokens) given input_ids",
                                 found=None if dec is None else f"shape {list(dec.shape)}")
            scored = dec
        n = scored.shape[1]
        if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or not 0 <= decode_steps < n:
            raise ConfigError("decode_steps must be an integer from 0 to the length - 1", found=repr(decode_steps))
        prompt = scored[:, : n - decode_steps]
        rows = np.arange(ids.shape[0])
        cache = (self._decoder_state(ids, np.ones_like(ids), rows, prompt.shape[1], decode_steps + 1)
                 if self.is_encoder_decoder else
                 cache_for(self.decoder, self.contract.cache, ids.shape[0], prompt.shape[1], decode_steps + 1))
        try:
            cache.prefill(prompt, np.ones_like(prompt))
            out = [np.asarray(cache.prompt_logits, np.float32)]
            out += [cache.step(scored[:, t])[:, None].astype(np.float32) for t in range(prompt.shape[1], n)]
        finally:
            cache.close()
        return np.concatenate(out, axis=1)

    def _need_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise InputError("this artifact has no tokenizer, so it cannot take or return text",
                             fix="pass input_ids=np.array([[...]]), or convert from a folder with tokenizer.json")
        return self.tokenizer

    def generate(self, inputs: str | Sequence[str] | None = None, max_new_tokens: int | None = None, *,
                 input_ids: np.ndarray | None = None, attention_mask: np.ndarray | None = None,
                 messages: Any = None, stream: bool = False, seed: int | None = None,
                 eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
                 stop_strings: str | Sequence[str] | None = None, tgt_lang: str | None = None,
                 images: Any = None, response_format: Any = None, grammar: str | None = None,
                 regex: str | None = None, prompt_lookup_num_tokens: int | None = None,
                 max_matching_ngram_size: int | None = None,
                 assistant_model: Generator | str | os.PathLike[str] | None = None,
                 num_assistant_tokens: int | None = None, num_assistant_tokens_schedule: str | None = None,
                 assistant_confidence_threshold: float | None = None, **options: Any) -> Any:
        """Generate, as `transformers.generate` does, token for token in fp32.

        Prompts: str -> str (the new text), list[str] -> list[str], `messages=[{"role": "user",
        "content": ...}]` (rendered with the model's chat template) -> str, `input_ids=` (batch,
        prompt) int64 -> ids: the prompt and the new tokens (an encoder-decoder: the decoder's
        start token and the new tokens). `stream=True` -> Iterator[str] of one text prompt.
        Options, with transformers' names and meaning: max_new_tokens, max_length, min_new_tokens,
        min_length, do_sample, temperature, top_k, top_p, min_p, typical_p, repetition_penalty,
        no_repeat_ngram_size, encoder_repetition_penalty, encoder_no_repeat_ngram_size, bad_words_ids,
        suppress_tokens, begin_suppress_tokens, forced_bos_token_id, forced_eos_token_id, num_beams,
        length_penalty, early_stopping, num_return_sequences, return_dict_in_generate, output_scores,
        output_logits; and seed, eos_token_id, pad_token_id, stop_strings, tgt_lang (encoder-decoders
        with language codes). A vision-language artifact takes `images=` beside text prompts (a list
        per prompt; paths, PIL images or HxWxC uint8 arrays), or {"type": "image", "image": ...} parts
        in messages.

        Structured output (the llguidance engine, edgekit[structured]): `response_format=` in OpenAI's
        shape ({"type": "json_schema", "json_schema": {"schema": {...}}} or {"type": "json_object"}),
        `grammar=` (Lark, or llama.cpp's GBNF) or `regex=`: every step masks the tokens that would
        leave it, greedy, sampling and beam search alike, and the output ends at eos where it is
        complete (unless max_new_tokens ends it first: logged).

        Speculative decoding: `prompt_lookup_num_tokens=N` (and `max_matching_ngram_size`, default
        2) drafts up to N tokens by n-gram lookup in the text so far and checks them in one target
        call (tasks/speculative.py); `assistant_model=` (a loaded smaller Generator of the same
        tokenizer, or its artifact's path: loaded on this model's device for the call, closed after)
        drafts `num_assistant_tokens` (default 20) with its own cache instead, their number changed
        after each target call by `num_assistant_tokens_schedule` ("constant" (default); "heuristic":
        +2 after a call that accepted every draft, else -1, down to 1, the length kept on the
        assistant for its next call; "heuristic_transient": the same, from `num_assistant_tokens` each
        call), drafting stopped early after a draft of probability below
        `assistant_confidence_threshold` (default 0.4, re-fitted as drafts are judged; 0: off). One
        prompt, one sequence: greedy gives plain greedy's tokens, do_sample=True plain sampling's
        distribution (the target's own draws; an assistant's sampled drafts by speculative sampling),
        with structured output, seed= and stream=True alike; what the drafts did is
        `GenerateOutput.speculation` (return_dict_in_generate=True).
        """
        self._check_keywords(options)
        fmt = OutputFormat.make(response_format, grammar, regex)
        if num_assistant_tokens is None and isinstance(assistant_model, Generator):
            num_assistant_tokens = assistant_model.num_assistant_tokens  # a heuristic schedule's, if one ran
        spec = Speculate.make(prompt_lookup_num_tokens, max_matching_ngram_size, assistant_model, num_assistant_tokens,
                              num_assistant_tokens_schedule, assistant_confidence_threshold)
        c = self.contract
        given = {**options, **({} if max_new_tokens is None else {"max_new_tokens": max_new_tokens})}
        if tgt_lang is not None:
            given.update(self._target_language(tgt_lang, given))
        opts = GenerateOptions.make(given, c.generation)
        pad = _pad_id(c.pad_token_id if pad_token_id is None else pad_token_id)
        eos = tuple(token_ids(c.eos_token_id if eos_token_id is None else eos_token_id))
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if stops and (self.tokenizer is None or not all(isinstance(s, str) and s for s in stops)):
            raise ConfigError("stop_strings must be non-empty strings, on an artifact with a tokenizer",
                              found=repr(stop_strings))
        prompt = self._prompt(inputs, input_ids, attention_mask, messages, pad, eos,
                              tgt_lang if c.encoder is not None and c.encoder.language_prefix else None, images)
        if stream:
            self._check_stream(prompt, opts)
        if spec is not None:
            spec.check(opts, prompt.ids.shape[0])
            spec, owned = self._assistant(spec, opts.total_length(prompt.ids.shape[1], self.max_context))
            try:
                self._check_speculation(spec, opts, prompt)
                run = self._start(prompt, opts, pad, eos, stops, seed, fmt)
            except BaseException:
                if owned:
                    spec.assistant.close()
                raise
            return self._speculate(run, prompt, eos, spec, stream, owned)
        run = self._start(prompt, opts, pad, eos, stops, seed, fmt)
        if stream:
            return self._stream(run, self._sampled(run))
        try:
            if opts.num_beams > 1:
                out = beam_search(run.state, run.logits, run.seqs, opts, run.pipeline, run.stop,
                                  _fill(pad, eos), (opts.output_scores, opts.output_logits), run.grammar)
            else:
                out = Searched(run.seqs)
                for _ in sample(run.state, run.logits, run.seqs, run.pipeline, run.stop, pad, out,
                                (opts.output_scores, opts.output_logits)):
                    pass
        finally:  # the cache may hold GPU memory: freed when the loop ends, however it ends
            run.state.close()
        if run.grammar is not None:
            run.grammar.warn_incomplete(out.sequences[:, run.seqs.shape[1]:], set(eos))
        return self._result(out, prompt, run, eos)

    # ---------------------------------------------------------------- keywords and prompts

    @staticmethod
    def _check_keywords(options: dict[str, Any]) -> None:
        unknown = sorted(k for k in options if k not in DEFAULTS and k not in NOT_IMPLEMENTED and k not in NO_EFFECT)
        if unknown:
            raise ConfigError(f"generate got unknown arguments {unknown}",
                              fix="use transformers' names: " + ", ".join(sorted(DEFAULTS)) +
                                  ", seed, eos_token_id, pad_token_id, stop_strings, stream, messages, tgt_lang, "
                                  "images, response_format, grammar, regex")
        refuse_unimplemented(options, "generate")

    def _target_language(self, lang: str, given: dict[str, Any]) -> dict[str, Any]:
        part = self.contract.encoder
        codes = part.languages if part is not None else {}
        if not codes:
            raise ConfigError("tgt_lang needs a model whose tokenizer has language codes", found=f"tgt_lang={lang!r}",
                              fix="pass forced_bos_token_id=, or leave tgt_lang out")
        code = language_code(codes, lang)
        if part is not None and part.language_prefix:
            return {}  # Marian-style: the code token starts the source text (see _prompt)
        if given.get("forced_bos_token_id") not in (None, codes[code]):
            raise ConfigError("tgt_lang and forced_bos_token_id disagree",
                              found=f"{lang!r} is token {codes[code]}, forced_bos_token_id={given['forced_bos_token_id']}")
        return {"forced_bos_token_id": codes[code]}

    @cached_property
    def vision(self) -> VisionInputs | None:
        """The image side of a vision-language artifact (None for text-only ones)."""
        part = self.contract.vision
        return None if part is None else VisionInputs(part, self.runners["vision"])

    def _prompt(self, inputs: Any, input_ids: Any, attention_mask: Any, messages: Any, pad: int,
                eos: tuple[int, ...], prefix: str | None, images: Any = None) -> Prompt:
        left = not self.is_encoder_decoder  # a decoder's cache wants left padding, an encoder right
        pics: list[list[Any]] | None = None
        if messages is not None and self.vision is not None:
            messages, pics = messages_images(messages)
            pics = pics if any(pics) else None
        if images is not None:
            if self.vision is None:
                raise ConfigError("this artifact reads text only, so it takes no images",
                                  fix="convert a vision-language model folder (image-text-to-text) for images=")
            if messages is not None or input_ids is not None:
                raise ConfigError("images= goes with text prompts; put images in messages= as "
                                  '{"type": "image", "image": ...} parts', found="images= with messages= or input_ids=")
        if sum(x is not None for x in (inputs, input_ids, messages)) != 1:
            raise ConfigError("pass one of: a text prompt, input_ids=, or messages=",
                              found="none" if inputs is input_ids is messages is None else "more than one")
        if input_ids is not None:
            if prefix is not None:
                raise ConfigError("tgt_lang on this model prefixes the text; with input_ids put the code token "
                                  "first yourself", found=f"tgt_lang={prefix!r}")
            return from_ids(input_ids, attention_mask, pad, eos, left, self.decoder.outputs[0].shape[-1],
                            self._limit)
        if messages is not None:
            texts, special, form = self.chat_prompt(messages), False, "texts" if chat.conversations(messages)[1] else "text"
            if self.vision is not None:  # a processor's apply_chat_template adds special tokens unless its text starts with bos
                bos = self.contract.chat.special_tokens.get("bos_token") if self.contract.chat is not None else None
                special = False if bos and texts[0].startswith(bos) else None
        elif isinstance(inputs, str):
            texts, special, form = [inputs], None, "text"
        elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
            texts, special, form = list(inputs), None, "texts"
        else:
            raise InputError("generate takes a prompt string, a non-empty list of strings, messages= or input_ids=",
                             found=type(inputs).__name__ if not isinstance(inputs, (list, tuple)) else "an empty list"
                             if not inputs else "a list with non-strings")
        if prefix is not None:
            texts = [f"{language_code(self.contract.encoder.languages, prefix)} {t}" for t in texts]  # type: ignore[union-attr]
        features = None
        if self.vision is not None:  # text alone feeds no image rows, and must hold no image tokens
            given = pics if pics is not None else per_prompt(images, len(texts)) if images is not None else [[]] * len(texts)
            made = self.vision.prompts(texts, given)
            texts, features = made.texts, made.rows
        rows = self.encode(texts, special)
        check_rows(rows, self._limit)
        ids, mask = left_pad(rows, pad) if left else right_pad(rows, pad)
        if self.vision is not None and features is not None:
            self.vision.check(ids, features)
        return Prompt(ids, mask, form, features=features)

    @property
    def _limit(self) -> int:
        """The longest prompt: the encoder's input for an encoder-decoder, else the context."""
        return self.contract.encoder.max_source if self.contract.encoder is not None else self.max_context

    # ---------------------------------------------------------------- the decode

    def _start(self, p: Prompt, o: GenerateOptions, pad: int, eos: tuple[int, ...], stops: list[str],
               seed: int | None, fmt: OutputFormat | None = None,
               feed: Callable[[np.ndarray], tuple[DecodeState, np.ndarray]] | None = None) -> _Run:
        """Run the prompt (and the encoder) and size the state for the longest output. `feed` (a
        decoder-only prompt of one row) gives the state and the prompt's last logits instead: a
        conversation's kept cache (tasks/conversation.py)."""
        b = p.ids.shape[0]
        if self.is_encoder_decoder:
            assert self.contract.encoder is not None
            seqs = np.full((b, 1), self.contract.encoder.decoder_start_token_id, np.int64)
        else:
            seqs = p.ids
        length = seqs.shape[1]
        total = o.total_length(length, self.max_context)
        if total > self.max_context:
            raise ConfigError(f"prompt + max_new_tokens exceeds the model's context of {self.max_context} tokens",
                              found=f"{length} + {total - length}",
                              fix=f"use max_new_tokens <= {self.max_context - length}")
        if total <= length:
            raise ConfigError("max_length leaves no room for new tokens", found=f"max_length {total}, prompt {length}",
                              fix="use max_new_tokens instead of max_length")
        ignore = None if p.mask.all() or self.is_encoder_decoder else np.argmax(p.mask != 0, axis=1)
        # The encoder processors read the input as transformers gets it: the caller's ids as passed
        # (before any re-padding here), or the tokenized text.
        source = p.given if p.given is not None else p.ids
        pipeline = LogitsPipeline(o, length, total, int(self.decoder.outputs[0].shape[-1]), eos, ignore,
                                  source.astype(np.int64), seed)
        stop = Stopper(total, eos, length, stops, self.decode if stops else None)
        # Each input's rows (beams, or sequences to return) from the start, as transformers expands
        # its inputs before the prompt runs: the cache is sized once and the beams start identical.
        expand = o.num_beams if o.num_beams > 1 else o.num_return_sequences
        rows = np.repeat(np.arange(b), expand)
        seqs = seqs[rows]
        pipeline.expand(rows)
        if fmt is not None:  # before the prompt runs: a bad schema or grammar costs no model time
            pipeline.grammar = self._grammar(fmt, o, eos, len(rows))
        if self.is_encoder_decoder:
            state: DecodeState = self._decoder_state(p.ids, p.mask, rows, 1, total - 1)
            logits = state.prefill(seqs, np.ones_like(seqs))
        elif feed is not None:
            state, logits = feed(p.ids[0])
        else:
            feats = None if p.features is None else np.concatenate([p.features[r] for r in rows])
            state = cache_for(self.decoder, self.contract.cache, len(rows), length, total - length, features=feats)
            logits = state.prefill(p.ids[rows], p.mask[rows])
        return _Run(state, logits, seqs, o, pipeline, stop, pad, expand, pipeline.grammar)

    def _grammar(self, fmt: OutputFormat, o: GenerateOptions, eos: tuple[int, ...], rows: int) -> GrammarRows:
        if o.num_beams > 1 and o.do_sample:
            raise ConfigError("structured output does not take beam sampling",
                              found=f"num_beams={o.num_beams} with do_sample=True",
                              fix="use beam search (do_sample=False) or sampling (num_beams=1): beam sampling draws "
                                  f"{2 * o.num_beams} distinct candidates, more than a grammar forcing one token allows")
        vocab = int(self.decoder.outputs[0].shape[-1])
        key = (vocab, eos)
        made = self._llg_tokenizers.get(key)
        if made is None:
            made = self._llg_tokenizers[key] = llg_tokenizer(self._need_tokenizer().to_str(), vocab, eos)
        return GrammarRows(made, fmt, rows, vocab)

    @cached_property
    def _llg_tokenizers(self) -> dict[tuple[int, tuple[int, ...]], Any]:
        """llguidance's tokenizer data per (vocabulary, eos tokens), built once per artifact."""
        return {}

    def _decoder_state(self, ids: np.ndarray, mask: np.ndarray, rows: np.ndarray, prompt: int,
                       new: int) -> DecodeState:
        """An encoder-decoder's decoder cache for inputs' rows `rows`: the encoder runs once per input
        and its output (each row's input's) stays resident."""
        cross = self.runners["encoder"].run({"input_ids": ids, "attention_mask": mask})
        resident = {name: np.ascontiguousarray(a[rows]) for name, a in {**cross, ENCODER_MASK: mask}.items()}
        return cache_for(self.decoder, self.contract.cache, len(rows), prompt, new, resident, origin=rows)

    def _result(self, out: Searched, p: Prompt, run: _Run, eos: tuple[int, ...]) -> Any:
        start = run.seqs.shape[1]
        new = out.sequences[:, start:]
        if p.form == "ids":
            given = np.repeat(p.given, run.opts.num_return_sequences, axis=0)
            seqs = out.sequences if self.is_encoder_decoder else np.concatenate([given, new], axis=1)
            texts = None
        else:
            seqs = out.sequences
            texts = [self.decode(_until_eos(row, set(eos))) for row in new]
        o = run.opts
        if o.return_dict_in_generate:
            return GenerateOutput(seqs, tuple(out.scores) if o.output_scores else None,
                                  tuple(out.logits) if o.output_logits else None,
                                  out.sequences_scores if o.output_scores else None, out.beam_indices, texts)
        if texts is None:
            return seqs
        return texts[0] if p.form == "text" and len(texts) == 1 else texts

    def _assistant(self, spec: Speculate, total: int) -> tuple[Speculate, bool]:
        """`spec` with its assistant loaded where it is an artifact's path (on this model's device,
        sized for this call's `total` tokens), and whether this call owns it (closes it when the
        decode ends); any other assistant as given."""
        a = spec.assistant
        if not isinstance(a, (str, os.PathLike)):
            return spec, False
        from edgekit.api import load  # the package's entry point, imported when used (it imports this module)
        from edgekit.artifact import open_artifact

        contract = open_artifact(a, verify=False).manifest.contract  # its task and context (load verifies files)
        own = getattr(contract, "max_context", None)
        if own is None:
            raise ConfigError("assistant_model must be a text-generation artifact",
                              found=f"a {type(contract).__name__} at '{a}'", fix="pass a converted causal LM's folder")
        device = self.device.removeprefix("onnxruntime-")  # a runner's name: onnxruntime-cpu/-cuda, tensorrt
        return replace(spec, assistant=load(a, device=device, max_context=min(total, own))), True

    def _check_speculation(self, spec: Speculate, o: GenerateOptions, p: Prompt) -> None:
        if spec.assistant is not None:
            self._check_assistant(spec.assistant, o.total_length(p.ids.shape[1], self.max_context), p)
        for model, role in ((self, "the model"), (spec.assistant, "the assistant")):
            if model is None:
                continue
            why = ("an encoder-decoder's drafts are not wired" if model.is_encoder_decoder
                   else verify_refusal(model.contract.cache))
            if why is not None:
                raise ConfigError(f"{spec.name} needs decoders that check several tokens in one call: {why}",
                                  found=f"{role}: {model!r}", fix=f"leave {spec.name} out for this model")

    def _check_assistant(self, a: Any, total: int, p: Prompt) -> None:
        """transformers' assisted generation takes an assistant of the same tokenizer (or a universal one)."""
        if not isinstance(a, Generator):
            raise ConfigError("assistant_model takes a loaded edgekit text-generation artifact or its path",
                              found=repr(a) if isinstance(a, Model) else type(a).__name__,
                              fix="pass assistant_model=edgekit.load(DRAFT_ARTIFACT), or the artifact's folder")
        mine, its = (None if m.tokenizer is None else m.tokenizer.to_str() for m in (self, a))
        vocab = (int(m.decoder.outputs[0].shape[-1]) for m in (self, a))
        if mine != its or len(set(vocab)) > 1:
            raise ConfigError("assistant_model must have the target's tokenizer and vocabulary",
                              found=f"{a!r}: the tokenizers or logits' vocabularies differ",
                              fix="convert the draft from a model of the same family and tokenizer")
        if p.features is not None:
            raise ConfigError("assistant_model drafts from text alone; this prompt has image or audio rows",
                              fix="use prompt_lookup_num_tokens for a prompt with media, or leave the assistant out")
        if total > a.max_context:
            raise ConfigError(f"the assistant's context ({a.max_context}) is shorter than this call's {total} tokens",
                              fix=f"use max_new_tokens so that prompt + new <= {a.max_context}")

    def _speculate(self, run: _Run, p: Prompt, eos: tuple[int, ...], spec: Speculate, stream: bool,
                   owned: bool) -> Any:
        """Greedy search or sampling with drafts checked by the model; the result as `generate` returns it.
        `owned`: the assistant was loaded for this call, and is closed with it."""
        stats, out = Speculation(), Searched(run.seqs)
        tokens = self._speculated(run, eos, spec, out, stats, owned)
        if stream:
            return self._stream(run, tokens)
        for _ in tokens:
            pass
        if run.grammar is not None:
            run.grammar.warn_incomplete(out.sequences[:, run.seqs.shape[1]:], set(eos))
        result = self._result(out, p, run, eos)
        return replace(result, speculation=stats) if isinstance(result, GenerateOutput) else result

    def _speculated(self, run: _Run, eos: tuple[int, ...], spec: Speculate, out: Searched, stats: Speculation,
                    owned: bool) -> Gen[int, None, None]:
        """The new tokens of a speculative decode, as they are kept; both caches (and an owned
        assistant) are freed when it ends."""
        drafter: PromptLookup | AssistantDraft = PromptLookup(spec.tokens, spec.max_ngram, eos)
        if spec.assistant is not None:
            a, length = spec.assistant, run.seqs.shape[1]
            drafter = AssistantDraft(cache_for(a.decoder, a.contract.cache, 1, length, run.stop.max_length - length),
                                     spec.tokens, eos, run.pipeline, spec.schedule, spec.confidence)
        try:
            assert isinstance(run.state, (StateLoop, SharedKVCache))  # verify_refusal() let only these through
            yield from speculative_decode(run.state, run.logits, run.seqs, run.pipeline, run.stop, drafter, out,
                                          stats, (run.opts.output_scores, run.opts.output_logits))
            if isinstance(drafter, AssistantDraft):
                drafter.finish(out.sequences[0])  # the last target call's accepted drafts
                if spec.schedule == "heuristic":  # transformers keeps the length for the assistant's next call
                    spec.assistant.num_assistant_tokens = drafter.tokens
        finally:
            run.state.close()
            if isinstance(drafter, AssistantDraft):
                drafter.state.close()
            if owned:
                spec.assistant.close()
        log.info("%s: %d tokens in %d target steps after the prompt (%.2f per step), %d of %d drafts "
                 "accepted", spec.name, stats.tokens, stats.steps, stats.tokens_per_step, stats.accepted, stats.drafted)

    def _check_stream(self, p: Prompt, o: GenerateOptions) -> None:
        if p.form != "text":
            raise ConfigError("stream=True takes one text prompt", found=f"a {p.form} prompt",
                              fix="call generate(prompt, stream=True) once per prompt")
        if o.num_beams > 1 or o.num_return_sequences > 1 or o.return_dict_in_generate:
            raise ConfigError("stream=True makes one sequence as it goes (transformers' streamers refuse beam "
                              "search too)", found=f"num_beams={o.num_beams}, num_return_sequences="
                                                   f"{o.num_return_sequences}, return_dict_in_generate="
                                                   f"{o.return_dict_in_generate}")

    def _sampled(self, run: _Run) -> Gen[int, None, None]:
        """The new tokens of one row's greedy search or sampling, as they are chosen."""
        for token, _ in sample(run.state, run.logits, run.seqs, run.pipeline, run.stop, run.pad, Searched(run.seqs),
                               (False, False)):
            yield int(token[0])

    def _stream(self, run: _Run, tokens: Gen[int, None, None]) -> Iterator[str]:
        """Yield text as decoded: only text that is final (a prefix of every later decode)."""
        new: list[int] = []
        emitted = ""
        try:
            for t in tokens:
                if t in run.stop.eos:
                    break
                new.append(t)
                text = self.decode(new)
                if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next bytes
                    continue
                if text.startswith(emitted) and len(text) > len(emitted):
                    yield text[len(emitted):]
                    emitted = text
        finally:
            tokens.close()
            run.state.close()
        final = self.decode(new)
        if len(final) > len(emitted):
            yield final[len(emitted):]


def _pad_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError("pad_token_id must be a token id (an integer >= 0)", found=repr(value))
    return int(value)


def _fill(pad: int, eos: tuple[int, ...]) -> int:
    """What beam search pads finished hypotheses with: transformers' `pad_token_id or eos_token_id[0]`."""
    return pad if pad or not eos else eos[0]


def token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    items = [value] if isinstance(value, (int, np.integer)) else list(value)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise ConfigError("eos_token_id must be an int or a list of ints", found=repr(value))
    return [int(v) for v in items]


def _until_eos(row: np.ndarray, eos: set[int]) -> list[int]:
    out = []
    for t in row.tolist():
        if t in eos:
            break
        out.append(t)
    return out
