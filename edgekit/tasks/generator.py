"""`generate`: text generation with Hugging Face `generate()` keyword names and meaning.

The contract's cache layout picks the loop state (`cache_for`): keys/values per layer for
transformer decoders (`KVCache`), fixed state tensors for LSTM-style generators (`RecurrentState`).
Both are sized once per call for prompt + max_new_tokens; nothing grows per step.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.generate import FullSequence, GenerateSection, KVCache, RecurrentState
from edgekit.errors import ConfigError, InputError
from edgekit.preprocess.text import check_texts, read_tokenizer
from edgekit.runtimes.base import Runner
from edgekit.tasks.compactkv import CompactKV
from edgekit.tasks.fullseq import FullSequenceState
from edgekit.tasks.kvcache import SharedKVCache, SlotCache
from edgekit.tasks.model import Model
from edgekit.tasks.sampling import SamplingConfig, TokenChooser

_DEFAULT_MAX_NEW_TOKENS = 20  # transformers' default


class _KVCache:
    """Keys/values for prompt + max_new_tokens, preallocated; each step adds one token's.

    Layout per layer: (batch, heads, prompt + max_new - 1, dim), contiguous (the last new token
    is never fed back). Every decode step feeds the whole buffer with the unwritten slots masked,
    so nothing changes shape or address: the runner's `stepper` keeps the buffers where it
    computes (GPU memory on CUDA/TensorRT, where a CUDA graph replays the step). Portable graphs
    return the token's keys/values and the loop writes them into the next slot (`SlotCache`);
    onnxruntime's fused-attention graphs write them into the buffer themselves (`SharedKVCache`).
    Position ids are explicit (count of real tokens so far), so the unfilled slots between past
    and current token change nothing but the attention work over masked slots.
    """

    def __init__(self, runner: Runner, cfg: KVCache, batch: int, prompt: int, new: int) -> None:
        shape = (batch, cfg.heads, prompt + new - 1, cfg.head_dim)
        kind = SharedKVCache if runner.kv_layout == "shared" else SlotCache
        self.cache: SlotCache | SharedKVCache = kind(runner, cfg.writes(), shape)
        self.prompt_logits: np.ndarray | None = None

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The prompt step, past length 0; returns the last logits (batch, vocab)."""
        self.prompt_logits = self.cache.prefill(ids, mask)
        return self.prompt_logits[:, -1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self.cache.step(tokens)

    def close(self) -> None:
        self.cache.close()


class _RecurrentState:
    """(h, c) per layer for LSTM-style generators: fixed size, replaced each step.

    Prompts are run one row at a time (no padding enters the state), then stacked on the batch axis.
    """

    def __init__(self, runner: Runner, cfg: RecurrentState, batch: int, prompt: int, new: int) -> None:
        self.runner = runner
        self.inputs = list(cfg.inputs)
        self.outputs = list(cfg.outputs)
        self.shape = (cfg.layers, cfg.hidden)
        self.state: list[np.ndarray] = []
        self.prompt_logits: np.ndarray | None = None

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Feed the prompt token by token (the graph takes one). Unpadded batches run together;
        a padded batch runs row by row so that no pad token enters a row's state."""
        if mask.all():
            last, self.state, full = self._feed(ids)
            self.prompt_logits = full
            return last
        lasts, states = [], []
        for row, m in zip(ids, mask):
            last, state, _ = self._feed(row[m.astype(bool)][None])
            lasts.append(last)
            states.append(state)
        self.state = [np.concatenate([s[i] for s in states], axis=1) for i in range(len(self.inputs))]
        return np.concatenate(lasts)

    def _feed(self, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        state = [np.zeros((self.shape[0], ids.shape[0], self.shape[1]), np.float32) for _ in self.inputs]
        logits = []
        for t in range(ids.shape[1]):
            out = self.runner.run({"input_ids": np.ascontiguousarray(ids[:, t : t + 1]), **dict(zip(self.inputs, state))})
            state = [out[n] for n in self.outputs]
            logits.append(out["logits"][:, -1])
        full = np.stack(logits, axis=1)
        return full[:, -1], state, full

    def step(self, tokens: np.ndarray) -> np.ndarray:
        out = self.runner.run({"input_ids": tokens[:, None], **dict(zip(self.inputs, self.state))})
        self.state = [out[n] for n in self.outputs]
        return out["logits"][:, -1]

    def close(self) -> None:
        pass  # nothing held beyond numpy arrays


def cache_for(runner: Runner, cfg: KVCache | RecurrentState | FullSequence, batch: int, prompt: int,
              new: int) -> _KVCache | _RecurrentState | FullSequenceState | CompactKV:
    """The loop state for the contract's cache layout, sized for prompt + new tokens."""
    if isinstance(cfg, KVCache):
        return CompactKV(runner, cfg, batch) if cfg.compact else _KVCache(runner, cfg, batch, prompt, new)
    if isinstance(cfg, FullSequence):
        return FullSequenceState(runner, cfg, batch, prompt, new)
    return _RecurrentState(runner, cfg, batch, prompt, new)


@dataclass
class _Request:
    ids: np.ndarray  # (batch, prompt) left-padded
    mask: np.ndarray
    new: int
    chooser: TokenChooser
    eos: set[int]
    pad: int
    stops: list[str]


class Generator(Model):
    """A loaded text-generation artifact.

    >>> import tempfile, edgekit, numpy as np, torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> folder = tempfile.mkdtemp() + "/gpt2"
    >>> _ = torch.manual_seed(0)
    >>> GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=64)).save_pretrained(folder)
    >>> _ = edgekit.convert(folder, folder + "-art")  # parity: greedy tokens identical to transformers
    >>> gen = edgekit.load(folder + "-art", device="cpu")
    >>> gen.generate(input_ids=np.array([[5, 6, 7]]), max_new_tokens=4).shape  # no tokenizer saved: ids in, ids out
    (1, 7)
    """

    contract: GenerateSection

    @property
    def max_context(self) -> int:
        return self.contract.max_context

    @cached_property
    def tokenizer(self) -> Any:
        """The `tokenizers.Tokenizer` of the artifact, or None for an artifact that takes ids only."""
        name = self.contract.tokenizer
        return None if name is None else read_tokenizer(self.artifact.path, name)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self._need_tokenizer()
        check_texts(texts)  # lone surrogates would make the tokenizer raise a bare TypeError
        special = self.contract.add_special_tokens
        return [list(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=special)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._need_tokenizer().decode([int(i) for i in ids], skip_special_tokens=True))

    def logits(self, input_ids: np.ndarray, decode_steps: int = 0) -> np.ndarray:
        """Teacher-forced logits (batch, sequence, vocab) of unpadded int64 ids: for scoring text
        (perplexity) and next-token agreement, through the same graph and cache as generate.

        The last `decode_steps` positions come from decode steps (one token each, as generate feeds
        them) instead of the prompt run: what parity compares to check the decode path.
        """
        rows, _ = self._prompt_rows(None, input_ids, None)
        ids = np.asarray(input_ids, np.int64)
        if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or not 0 <= decode_steps < ids.shape[1]:
            raise ConfigError("decode_steps must be an integer from 0 to the length - 1", found=repr(decode_steps))
        prompt = ids[:, : ids.shape[1] - decode_steps]
        self._check_lengths([r[: prompt.shape[1]] for r in rows], decode_steps + 1)
        cache = cache_for(self.runners["model"], self.contract.cache, ids.shape[0], prompt.shape[1], decode_steps + 1)
        try:
            cache.prefill(prompt, np.ones_like(prompt))
            out = [np.asarray(cache.prompt_logits, np.float32)]
            out += [cache.step(ids[:, t])[:, None].astype(np.float32) for t in range(prompt.shape[1], ids.shape[1])]
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
                 stream: bool = False, do_sample: bool | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, repetition_penalty: float | None = None,
                 seed: int | None = None, eos_token_id: int | Sequence[int] | None = None,
                 pad_token_id: int | None = None, stop_strings: str | Sequence[str] | None = None,
                 **unknown: Any) -> Any:
        """Generate: str -> str (new text), list[str] -> list[str], stream=True -> Iterator[str],
        input_ids=(batch, prompt) int64 array -> array of prompt + new ids (like transformers)."""
        if unknown:
            raise ConfigError(f"generate got unknown arguments {sorted(unknown)}",
                              fix="use transformers' names: max_new_tokens, do_sample, temperature, top_k, top_p, "
                                  "repetition_penalty, seed, eos_token_id, stop_strings, stream")
        rows, form = self._prompt_rows(inputs, input_ids, attention_mask)
        d, c = self.contract.generation, self.contract
        cfg = SamplingConfig.make(
            do_sample=_pick(do_sample, d.do_sample, False), temperature=_pick(temperature, d.temperature, 1.0),
            top_k=_pick(top_k, d.top_k, 0), top_p=_pick(top_p, d.top_p, 1.0),
            repetition_penalty=_pick(repetition_penalty, d.repetition_penalty, 1.0), seed=seed)
        new = self._check_lengths(rows, _pick(max_new_tokens, d.max_new_tokens, _DEFAULT_MAX_NEW_TOKENS))
        pad = c.pad_token_id if pad_token_id is None else pad_token_id
        ids, mask = left_pad(rows, pad)  # the ids form re-padded on the left: what the cache expects
        eos = set(token_ids(c.eos_token_id if eos_token_id is None else eos_token_id))
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if stops and (self.tokenizer is None or not all(isinstance(s, str) and s for s in stops)):
            raise ConfigError("stop_strings must be non-empty strings, on an artifact with a tokenizer",
                              found=repr(stop_strings))
        req = _Request(ids, mask, new, TokenChooser(cfg), eos, pad, stops)
        if stream:
            if form != "text":
                raise ConfigError("stream=True takes one text prompt", found=f"a {form} prompt",
                                  fix="call generate(prompt, stream=True) once per prompt")
            return self._stream(req)
        out = np.concatenate([ids, *[t[:, None] for t, _ in self._tokens(req)]], axis=1)
        if form == "ids":  # like transformers: the caller's prompt ids, then the new ones
            return np.concatenate([np.asarray(input_ids, np.int64), out[:, ids.shape[1]:]], axis=1)
        texts = [self.decode(_until_eos(row[ids.shape[1]:], eos)) for row in out]
        return texts[0] if form == "text" else texts

    # ---------------------------------------------------------------- prompts and limits

    def _prompt_rows(self, inputs: Any, input_ids: Any, attention_mask: Any) -> tuple[list[list[int]], str]:
        if input_ids is not None:
            if inputs is not None:
                raise ConfigError("pass either a text prompt or input_ids, not both")
            arr = np.asarray(input_ids)
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
                raise InputError("input_ids must be a 2-D integer array (batch, prompt length)",
                                 found=f"{arr.dtype} array of shape {list(arr.shape)}", fix="use np.array([[1, 2, 3]])")
            mask = np.ones_like(arr) if attention_mask is None else np.asarray(attention_mask)
            if mask.shape != arr.shape:
                raise InputError("attention_mask must have the shape of input_ids",
                                 found=f"{list(mask.shape)} vs {list(arr.shape)}")
            vocab = self.runners["model"].outputs[0].shape[-1]
            if arr.size and (arr.min() < 0 or (isinstance(vocab, int) and arr.max() >= vocab)):
                raise InputError(f"input_ids must be in [0, {vocab})", found=f"ids {arr.min()}..{arr.max()}")
            return [[int(t) for t, m in zip(r, mr) if m] for r, mr in zip(arr, mask)], "ids"
        if isinstance(inputs, str):
            return self.encode([inputs]), "text"
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
            return self.encode(list(inputs)), "texts"
        raise InputError("generate takes a prompt string, a non-empty list of strings, or input_ids=",
                         found=type(inputs).__name__ if not isinstance(inputs, (list, tuple)) else "an empty list"
                         if not inputs else "a list with non-strings")

    def _check_lengths(self, rows: list[list[int]], new: Any) -> int:
        if not rows:
            raise InputError("generate got an empty batch (no prompt rows)", fix="pass at least one prompt")
        if any(len(r) == 0 for r in rows):
            raise InputError("a prompt is empty (it encodes to no tokens)", fix="pass at least one token of text")
        longest = max(len(r) for r in rows)
        if isinstance(new, bool) or not isinstance(new, (int, np.integer)) or new < 1:
            raise ConfigError("max_new_tokens must be a positive integer", found=repr(new))
        if longest > self.max_context:
            raise InputError(f"the prompt is longer than the model's context of {self.max_context} tokens",
                             found=f"{longest} tokens", fix="shorten the prompt")
        if longest + new > self.max_context:
            raise ConfigError(f"prompt + max_new_tokens exceeds the model's context of {self.max_context} tokens",
                              found=f"{longest} + {new}", fix=f"use max_new_tokens <= {self.max_context - longest}")
        return int(new)

    # ---------------------------------------------------------------- the decode loop

    def _tokens(self, req: _Request) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (next token per row, finished per row) for each step; stops when all rows finish."""
        cache = cache_for(self.runners["model"], self.contract.cache, req.ids.shape[0], req.ids.shape[1], req.new)
        seen = req.ids.copy() if req.chooser.cfg.repetition_penalty != 1.0 else req.ids[:, :0]
        done = np.zeros(req.ids.shape[0], bool)
        generated: list[np.ndarray] = []
        try:  # the cache may hold GPU memory: freed when the loop ends, however it ends
            logits = cache.prefill(req.ids, req.mask)
            for i in range(req.new):
                if not np.all(np.isfinite(logits[~done])):
                    raise InputError("the model produced non-finite logits",
                                     fix="check the artifact with `edgekit parity`")
                token = np.where(done, req.pad, req.chooser(logits, seen))
                generated.append(token)
                done = done | np.isin(token, list(req.eos)) | self._hit_stop(generated, req.stops, done)
                yield token, done
                if done.all() or i == req.new - 1:
                    return
                if seen.shape[1]:
                    seen = np.concatenate([seen, token[:, None]], axis=1)
                logits = cache.step(token)
        finally:
            cache.close()

    def _hit_stop(self, generated: list[np.ndarray], stops: list[str], done: np.ndarray) -> np.ndarray:
        hit = np.zeros_like(done)
        if not stops:
            return hit
        tail = max(len(s) for s in stops) + 8  # enough tokens to hold any stop string
        recent = np.stack(generated[-tail:], axis=1)
        for i in np.nonzero(~done)[0]:
            text = self.decode(recent[i])
            hit[i] = any(s in text for s in stops)
        return hit

    def _stream(self, req: _Request) -> Iterator[str]:
        """Yield text as decoded: only text that is final (a prefix of every later decode)."""
        new: list[int] = []
        emitted = ""
        for token, _ in self._tokens(req):
            t = int(token[0])
            if t in req.eos:
                break
            new.append(t)
            text = self.decode(new)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next bytes
                continue
            if text.startswith(emitted) and len(text) > len(emitted):
                yield text[len(emitted):]
                emitted = text
        final = self.decode(new)
        if len(final) > len(emitted):
            yield final[len(emitted):]


def _pick(value: Any, default: Any, fallback: Any) -> Any:
    """The caller's value, else the model's generation default, else transformers' default."""
    return value if value is not None else default if default is not None else fallback


def token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    items = [value] if isinstance(value, (int, np.integer)) else list(value)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise ConfigError("eos_token_id must be an int or a list of ints", found=repr(value))
    return [int(v) for v in items]


def left_pad(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of different lengths -> (ids, attention_mask), padded on the left for the cache."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def _until_eos(row: np.ndarray, eos: set[int]) -> list[int]:
    out = []
    for t in row.tolist():
        if t in eos:
            break
        out.append(t)
    return out
