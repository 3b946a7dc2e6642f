"""What a `generate` artifact contains: a decoder graph with its state, the tokenizer, special ids.

Decoders with a state (`DecoderState`, edgekit/contract/state: typed entries per layer), graph
"model", one graph for the prompt and every step:
    inputs   input_ids (batch, sequence) and, where the model attends, attention_mask (batch,
             total_sequence) and position_ids (batch, sequence), int64; every entry's tensors:
             attention keys/values past_key_values.{i}.key / .value (batch, heads, past_sequence,
             key or value head size), convolution / SSM states conv_state.{i}.{k} / ssm_state.{i}.{k},
             an LSTM's state.h / state.c (batch, ...)
    outputs  logits (batch, sequence, vocab); per tensor its update: present.{i}.key / .value, the
             keys/values of this call's tokens only (written into the next slots: a past slot is
             attended iff its mask column is 1, edgekit/tasks/state_loop.py); *_out.* the next state
A "stepwise" state's graph takes one token per call (recurrent models); the prompt is fed token by token.

Decoders without a cache (`FullSequence`, plain `forward(input_ids) -> logits` modules such as
nanoGPT's): input_ids (batch, sequence) in, logits (batch, sequence or 1, vocab) out; every step
runs the whole sequence again (correct, and O(n^2) over a generation).

Encoder-decoder models (`encoder` set: Marian, T5, BART, M2M100/NLLB, Pegasus...):
    graph "encoder"  input_ids, attention_mask (batch, source_sequence) -> cross.{i}.key / .value
                     (batch, heads, source_sequence, head_dim) of every decoder layer, once per input
    graph "decoder"  the slot-cache decoder above, plus encoder_attention_mask (batch,
                     source_sequence) and the cross keys/values: resident inputs, sent once per call
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgekit.contract.base import BATCH, FLOAT, INT64, PAST, SEQUENCE, SOURCE, TOTAL, GraphNeeds, Need, Phase, Section
from edgekit.contract.state import REPLACE, AttentionKV, DecoderState
from edgekit.contract.state.base import PROMPT_FLAG, STEP_INPUTS
from edgekit.contract.vision import ROWS, VisionPart


@dataclass(frozen=True)
class FullSequence:
    """No cache: each step feeds the whole sequence so far and reads the last position's logits."""

    tag: ClassVar[str] = "full"
    input: str = "input_ids"


@dataclass(frozen=True)
class GenerationDefaults:
    """The model's own generation settings (its generation_config.json); None: transformers' default.

    The names and meanings are transformers' (`GenerationConfig`); edgekit/tasks/options.py
    resolves them against the caller's keywords.
    """

    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    early_stopping: bool | str | None = None  # True | False | "never"
    num_return_sequences: int | None = None
    no_repeat_ngram_size: int | None = None
    encoder_repetition_penalty: float | None = None
    encoder_no_repeat_ngram_size: int | None = None
    min_length: int | None = None
    min_new_tokens: int | None = None
    max_length: int | None = None
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None
    suppress_tokens: tuple[int, ...] | None = None
    begin_suppress_tokens: tuple[int, ...] | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EncoderPart:
    """An encoder-decoder model's encoder and how decoding starts.

    `languages` maps the tokenizer's language-code tokens ("__zh__", "zho_Hans", "zh_CN",
    ">>zho<<") to their ids, for `generate(..., tgt_lang=)`: the target language is the forced
    first token (M2M100, NLLB, mBART-50), or with `language_prefix` the first source token
    (multilingual Marian).
    """

    decoder_start_token_id: int
    max_source: int  # longest input the encoder's positions take
    languages: dict[str, int] = field(default_factory=dict)
    language_prefix: bool = False

    def __post_init__(self) -> None:
        if self.max_source < 1 or self.decoder_start_token_id < 0:
            raise ValueError(f"the encoder needs max_source >= 1 and a decoder start id >= 0, found {self}")


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's chat template (Jinja) and the special tokens it is rendered with, as
    transformers' `apply_chat_template` passes them (bos_token, eos_token, ...)."""

    template: str
    special_tokens: dict[str, str] = field(default_factory=dict)


ENCODER_MASK = "encoder_attention_mask"


def kv_state(layers: int, heads: int, head_dim: int, compact: bool = False) -> DecoderState:
    """Keys and values of one size in every layer: most transformer decoders, Whisper's and the
    encoder-decoders' self-attention."""
    return DecoderState(tuple(AttentionKV(i, heads, head_dim, head_dim, compact=compact) for i in range(layers)))


def cross_names(state: DecoderState) -> list[str]:
    """An encoder's keys/values per decoder layer (cross-attention), fed unchanged every step: one
    pair per entry of an encoder-decoder's decoder state (one attention entry per layer)."""
    return [f"cross.{i}.{k}" for i in range(len(state.entries)) for k in ("key", "value")]


def shared_decoder_needs(state: DecoderState) -> GraphNeeds:
    """The onnxruntime stand-in of a KV decoder (GroupQueryAttention, converters/ort_attention.py): the
    cache buffers are fed whole and written in place (each present is bound to its past); each row's
    tokens are right-aligned in its buffer and `total_length` says how many there are after the call."""
    ins = [Need("input_ids", INT64, 2), Need("position_ids", INT64, 2), Need("total_length", INT64, 1)]
    ins += [Need(n, FLOAT, 4) for n in state.past()]
    outs = [Need("logits", FLOAT, 3)] + [Need(n, FLOAT, 4) for n in state.present()]
    return GraphNeeds(tuple(ins), tuple(outs))


# Speculative decoding's check of its drafts (`StateLoop.verify`) feeds the last token and up to k drafts in
# one call: (min, typical, max) tokens. transformers' assisted generation drafts num_assistant_tokens = 20 by
# default (a 21-token call), prompt lookup's prompt_lookup_num_tokens is commonly 10 (11); 16 lies between,
# 32 takes up to 31 drafts. More tokens after a cache that spans the context (a conversation turn's new
# tokens) go in consecutive calls of at most 32 (StateLoop.verify, Runner.tokens_per_call).
VERIFY_TOKENS = (2, 16, 32)


def verify_refusal(cache: DecoderState | FullSequence) -> str | None:
    """Why this decoder graph cannot verify several drafted tokens in one call, or None if it can."""
    if isinstance(cache, FullSequence):
        return "the graph recomputes the whole sequence each step (no cache to verify drafts through)"
    if cache.compact:
        return "the past must stay compact (rolling back would copy it)"
    if any(t.update == REPLACE for t in cache.tensors()):
        return "a recurrent state (conv/SSM/LSTM) is overwritten each call and cannot be rolled back"
    if PROMPT_FLAG in cache.inputs:
        return "the graph's prompt and steps are different programs (prompt_flag)"
    if cache.prompt == "stepwise":
        return "the graph takes one token per call"
    return None


def decoder_phases(max_context: int, batch: tuple[int, int, int], state: DecoderState | None = None,
                   verify: bool = False) -> list[Phase]:
    """The prompt (any length, empty cache) and decode steps (one token, up to max_context - 1 slots);
    with `verify` (a decoder-only slot cache that speculative decoding drives) between them, the
    verify calls: 2 to 32 tokens, one row, over the resident cache.

    Phases, not one static max-context shape: the cache is sized per call (prompt +
    max_new_tokens), so a short answer does not attend over the whole context every step. A
    stepwise state feeds its prompt through the decode step, so that is its one phase. Only the
    dims the graph has are kept (a state-space model has no past sequence). TensorRT runs a call on
    the last profile that holds its shapes (runtimes/tensorrt/runner.py `pick_profile`), so the
    order prompt, verify, decode gives each call its own profile's tactics.
    """
    n, opt = max_context, min(128, max_context)
    decode = {BATCH: batch, SEQUENCE: (1, 1, 1), PAST: (1, n // 2, n - 1), TOTAL: (2, n // 2 + 1, n)}
    if state is not None and not state.slotted:
        decode = {BATCH: batch, SEQUENCE: (1, 1, 1)}
    if state is not None and state.prompt == "stepwise":
        return [("decode", decode)]
    phases = [("prompt", {BATCH: batch, SEQUENCE: (1, opt, n), PAST: (0, 0, n - 1), TOTAL: (1, opt, n)})]
    lo, mid, hi = (min(v, n - 1) for v in VERIFY_TOKENS)
    if verify and state is not None and state.slotted and lo == VERIFY_TOKENS[0]:  # 2+ tokens fit n - 1 slots
        # The past is the cache's slots (prompt + max_new_tokens - 1), all of them fed every call, masked
        # past the tokens so far: a verify near the end of the context attends to up to n - 1 + 32 columns.
        phases.append(("verify", {BATCH: (1, 1, 1), SEQUENCE: (lo, mid, hi), PAST: (1, n // 2, n - 1),
                                  TOTAL: (1 + lo, n // 2 + mid, n - 1 + hi)}))
    return [*phases, ("decode", decode)]


@dataclass(frozen=True)
class GenerateSection(Section):
    task: ClassVar[str] = "generate"
    tag: ClassVar[str] = "generate"
    model: ClassVar[str] = "edgekit.tasks.generator:Generator"

    tokenizer: str | None  # tokenizer.json in the artifact; None: the artifact takes and returns ids
    add_special_tokens: bool
    eos_token_id: tuple[int, ...]
    bos_token_id: int | None
    pad_token_id: int
    max_context: int
    cache: DecoderState | FullSequence
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    encoder: EncoderPart | None = None  # set: an encoder-decoder ("encoder" + "decoder" graphs)
    chat: ChatTemplate | None = None
    vision: VisionPart | None = None  # set: images beside the text ("vision" graph, edgekit/contract/vision)

    def __post_init__(self) -> None:
        if self.max_context < 2:
            raise ValueError(f"max_context must be at least 2 tokens, found {self.max_context}")
        if self.encoder is not None and not (isinstance(self.cache, DecoderState) and self.cache.slotted
                                             and self.cache.prompt == "whole"):
            raise ValueError("an encoder-decoder artifact needs a key/value cache")
        if self.vision is not None and (self.encoder is not None or not isinstance(self.cache, DecoderState)
                                        or self.cache.prompt != "whole"):
            raise ValueError("a vision-language artifact needs a decoder-only key/value cache")

    def needs(self) -> dict[str, GraphNeeds]:
        c = self.cache
        if isinstance(c, FullSequence):
            return {"model": GraphNeeds((Need(c.input, INT64, 2),), (Need("logits", FLOAT, 3),))}
        if self.encoder is not None:
            enc = GraphNeeds((Need("input_ids", INT64, 2), Need("attention_mask", INT64, 2)),
                             tuple(Need(n, FLOAT, 4) for n in cross_names(c)))
            return {"encoder": enc, "decoder": c.needs(cross_names(c), (Need(ENCODER_MASK, INT64, 2),))}
        if self.vision is not None:
            return {"vision": self.vision.graph_needs(), "model": c.needs(extra=(self.vision.decoder_input(),))}
        return {"model": c.needs()}

    def call_shapes(self, graph: str) -> list[Phase]:
        if self.encoder is not None:
            n = self.encoder.max_source
            source = (1, min(64, n), n)
            if graph == "encoder":
                return [("all", {BATCH: self.batch, SOURCE: source})]
            # Beam search runs batch * num_beams rows through the decoder.
            return [(name, {**dims, SOURCE: source}) for name, dims in decoder_phases(self.max_context, (1, 4, 16))]
        if graph == "vision" and self.vision is not None:
            return [("all", self.vision.steps.dim_ranges())]  # one image per call
        if isinstance(self.cache, FullSequence):
            return [("all", {BATCH: self.batch, SEQUENCE: (1, min(128, self.max_context), self.max_context)})]
        phases = decoder_phases(self.max_context, self.batch, self.cache, verify=verify_refusal(self.cache) is None)
        if self.vision is not None:  # the prompt takes its images' rows (each has its tokens), other calls none
            _, one, most = self.vision.steps.rows()
            n = self.max_context
            rows = {"prompt": (0, min(one, n), min(most * self.vision.max_images, n)), "verify": (0, 0, 0),
                    "decode": (0, 0, 0)}
            phases = [(name, {**dims, ROWS: rows[name]}) for name, dims in phases]
        return phases

    def runtime_needs(self, graph: str, kv_layout: str) -> GraphNeeds | None:
        if graph == "model" and kv_layout == "shared" and isinstance(self.cache, DecoderState):
            return shared_decoder_needs(self.cache)
        return None

