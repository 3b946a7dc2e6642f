"""`generate()` keywords: transformers' names, values and precedence, validated once per call.

Precedence as in `transformers.generate`: the caller's value, else the model's own generation
config (the artifact's `GenerationDefaults`), else transformers' global default. A keyword
transformers has and edgekit does not implement is refused by name unless its value is the one
that changes nothing (`num_beam_groups=1`); a keyword neither knows is refused as unknown.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from edgekit.contract.generate import GenerationDefaults
from edgekit.errors import ConfigError

# transformers' global defaults (GenerationConfig._get_default_generation_params) for what edgekit does.
DEFAULTS: dict[str, Any] = {
    "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None, "typical_p": 1.0,
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0,
    "min_new_tokens": None, "max_length": None, "max_new_tokens": None, "num_beams": 1, "length_penalty": 1.0,
    "early_stopping": False, "num_return_sequences": 1, "suppress_tokens": None, "begin_suppress_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "return_dict_in_generate": False,
    "output_scores": False, "output_logits": False,
}
DEFAULT_MAX_LENGTH = 20  # transformers: max_length 20 counts the prompt, and is raised by its length

# transformers generate keywords edgekit does not implement -> the values that change nothing.
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "num_beam_groups": (1,), "diversity_penalty": (0.0,), "penalty_alpha": (0.0,), "constraints": (),
    "force_words_ids": (), "guidance_scale": (1.0,), "negative_prompt_ids": (), "negative_prompt_attention_mask": (),
    "sequence_bias": (), "renormalize_logits": (False,), "remove_invalid_values": (False,), "epsilon_cutoff": (0.0,),
    "eta_cutoff": (0.0,), "exponential_decay_length_penalty": (), "top_h": (), "token_healing": (False,),
    "watermarking_config": (), "max_time": (), "output_attentions": (False,), "output_hidden_states": (False,),
    "assistant_early_exit": (), "use_mtp": (False,),
    "dola_layers": (), "low_memory": (False,), "prefix_allowed_tokens_fn": (), "logits_processor": (),
    "stopping_criteria": (), "streamer": (), "synced_gpus": (False,), "custom_generate": (),
    "generation_config": (), "tokenizer": (), "decoder_input_ids": (), "inputs_embeds": (), "past_key_values": (),
}
# Settings of how transformers computes, not of what: they change no token, so any value is accepted.
NO_EFFECT = ("use_cache", "cache_implementation", "cache_config", "max_cache_len", "compile_config",
             "disable_compile", "prefill_chunk_size", "continuous_batching_config", "is_assistant",
             "assistant_lookbehind", "target_lookbehind")


def refuse_unimplemented(given: Mapping[str, Any], where: str) -> None:
    """Raise on any keyword transformers knows and edgekit does not implement, with a value that matters."""
    bad = sorted(k for k, v in given.items() if k in NOT_IMPLEMENTED and v is not None
                 and not any(v == ok and type(v) is type(ok) for ok in NOT_IMPLEMENTED[k]))
    if bad:
        raise ConfigError(f"{where}: edgekit does not implement the generate option(s) {bad}",
                          found=", ".join(f"{k}={given[k]!r}"[:80] for k in bad),
                          fix="leave them out (their no-op values are accepted); the supported options are "
                              + ", ".join(sorted(DEFAULTS)))


@dataclass(frozen=True)
class GenerateOptions:
    """Every decoding setting of one call, resolved and checked (lengths count as transformers does)."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float | None
    typical_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    encoder_repetition_penalty: float
    encoder_no_repeat_ngram_size: int
    bad_words_ids: tuple[tuple[int, ...], ...] | None
    min_length: int
    min_new_tokens: int | None
    max_length: int | None
    max_new_tokens: int | None
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    num_return_sequences: int
    suppress_tokens: tuple[int, ...] | None
    begin_suppress_tokens: tuple[int, ...] | None
    forced_bos_token_id: int | None
    forced_eos_token_id: tuple[int, ...] | None
    return_dict_in_generate: bool
    output_scores: bool
    output_logits: bool

    @classmethod
    def make(cls, given: Mapping[str, Any], model: GenerationDefaults) -> GenerateOptions:
        """Caller's values over the model's defaults over transformers' defaults.

        A keyword the caller gives wins even when it is None, as in `transformers.generate`, where
        an explicit None switches off the model's own setting (`forced_eos_token_id=None`): here
        it then takes transformers' global default.
        """
        own = {f.name: getattr(model, f.name) for f in fields(model)}
        v = {k: (d if given[k] is None else given[k]) if k in given else own[k] if own.get(k) is not None else d
             for k, d in DEFAULTS.items()}
        return cls(
            do_sample=_flag("do_sample", v["do_sample"]), temperature=_positive("temperature", v["temperature"],
                                                                                fix="use do_sample=False for greedy"),
            top_k=_count("top_k", v["top_k"]), top_p=_unit("top_p", v["top_p"], open_low=True),
            min_p=None if v["min_p"] is None else _unit("min_p", v["min_p"]),
            typical_p=_unit("typical_p", v["typical_p"], open_low=True),
            repetition_penalty=_positive("repetition_penalty", v["repetition_penalty"]),
            no_repeat_ngram_size=_count("no_repeat_ngram_size", v["no_repeat_ngram_size"]),
            encoder_repetition_penalty=_positive("encoder_repetition_penalty", v["encoder_repetition_penalty"]),
            encoder_no_repeat_ngram_size=_count("encoder_no_repeat_ngram_size", v["encoder_no_repeat_ngram_size"]),
            bad_words_ids=_sequences("bad_words_ids", v["bad_words_ids"]),
            min_length=_count("min_length", v["min_length"]),
            min_new_tokens=None if v["min_new_tokens"] is None else _count("min_new_tokens", v["min_new_tokens"]),
            max_length=None if v["max_length"] is None else _count("max_length", v["max_length"], least=1),
            max_new_tokens=None if v["max_new_tokens"] is None else _count("max_new_tokens", v["max_new_tokens"],
                                                                           least=1),
            num_beams=_count("num_beams", v["num_beams"], least=1),
            length_penalty=_number("length_penalty", v["length_penalty"]),
            early_stopping=_early_stopping(v["early_stopping"]),
            num_return_sequences=_count("num_return_sequences", v["num_return_sequences"], least=1),
            suppress_tokens=_ids("suppress_tokens", v["suppress_tokens"]),
            begin_suppress_tokens=_ids("begin_suppress_tokens", v["begin_suppress_tokens"]),
            forced_bos_token_id=None if v["forced_bos_token_id"] is None else _count("forced_bos_token_id",
                                                                                     v["forced_bos_token_id"]),
            forced_eos_token_id=_ids("forced_eos_token_id", v["forced_eos_token_id"]),
            return_dict_in_generate=_flag("return_dict_in_generate", v["return_dict_in_generate"]),
            output_scores=_flag("output_scores", v["output_scores"]),
            output_logits=_flag("output_logits", v["output_logits"]),
        ).checked()

    def checked(self) -> GenerateOptions:
        """Combinations transformers refuses too, refused here with the same reasons."""
        if self.num_return_sequences > 1:
            if self.num_beams == 1 and not self.do_sample:
                raise ConfigError("greedy search makes one sequence per prompt",
                                  found=f"num_return_sequences={self.num_return_sequences}",
                                  fix="use num_beams >= num_return_sequences, or do_sample=True")
            if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
                raise ConfigError("num_return_sequences must be at most num_beams",
                                  found=f"{self.num_return_sequences} > {self.num_beams}")
        forced = [(n, t) for n, t in (("forced_bos_token_id", (self.forced_bos_token_id,)),
                                      ("forced_eos_token_id", self.forced_eos_token_id)) if t and t[0] is not None]
        for name, tokens in forced:
            if self.suppress_tokens and set(tokens) <= set(self.suppress_tokens):
                raise ConfigError(f"every token of {name} is also suppressed", found=f"{name}={list(tokens)}",
                                  fix="remove it from suppress_tokens (use min_new_tokens to delay an eos)")
        return self

    def total_length(self, prompt: int, limit: int) -> int:
        """The longest sequence (prompt included) this call may make, as transformers computes it:
        max_new_tokens (the caller's or the model's) wins over max_length; with neither, 20 new
        tokens within the model's positions."""
        if self.max_new_tokens is not None:
            return prompt + self.max_new_tokens
        if self.max_length is not None:
            return self.max_length
        return min(DEFAULT_MAX_LENGTH + prompt, limit)

    def min_total(self, prompt: int) -> int:
        """min_new_tokens counts after the prompt and wins over min_length."""
        return self.min_length if self.min_new_tokens is None else self.min_new_tokens + prompt


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False", found=repr(value))
    return bool(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            not np.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number", found=repr(value))
    return float(value)


def _positive(name: str, value: Any, fix: str | None = None) -> float:
    v = _number(name, value)
    if not v > 0:
        raise ConfigError(f"{name} must be > 0", found=repr(value), fix=fix)
    return v


def _unit(name: str, value: Any, open_low: bool = False) -> float:
    v = _number(name, value)
    if not (0 < v <= 1 if open_low else 0 <= v <= 1):
        raise ConfigError(f"{name} must be in {'(0' if open_low else '[0'}, 1]", found=repr(value))
    return v


def _count(name: str, value: Any, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ConfigError(f"{name} must be an integer >= {least}", found=repr(value))
    return int(value)


def _ids(name: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple, np.ndarray)) or not all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 0 for t in items):
        raise ConfigError(f"{name} must be a token id or a list of token ids (integers >= 0)", found=repr(value)[:80])
    return tuple(int(t) for t in items)


def _sequences(name: str, value: Any) -> tuple[tuple[int, ...], ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(s, (list, tuple)) and s for s in value):
        raise ConfigError(f"{name} must be a non-empty list of non-empty lists of token ids", found=repr(value)[:80],
                          fix="e.g. bad_words_ids=[[5], [7, 8]]")
    return tuple(_ids(name, list(s)) or () for s in value)


def _early_stopping(value: Any) -> bool | str:
    if value not in (True, False, "never") or not isinstance(value, (bool, str)):
        raise ConfigError("early_stopping must be True, False or 'never'", found=repr(value))
    return value
