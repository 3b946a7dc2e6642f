"""What a `generate` artifact contains: a decoder graph with its cache, the tokenizer, special ids.

Transformer decoders (cache `KVCache`), graph "model", one graph for the prompt and every step:
    inputs   input_ids (batch, sequence), attention_mask (batch, total_sequence),
             position_ids (batch, sequence) int64; per layer i the cache
             past_key_values.{i}.key / .value (batch, heads, past_sequence, head_dim)
    outputs  logits (batch, sequence, vocab); present.{i}.key / .value: the keys/values of this
             call's tokens only (batch, heads, sequence, head_dim)
A past slot is attended iff its mask column is 1, so the runtime preallocates the cache once per
call and writes each step's keys/values into the next slot (edgekit/tasks/kvcache.py).

Recurrent generators (`RecurrentState`, LSTM-style): input_ids (batch, 1) and the state tensors
(layers, batch, hidden) in; logits and the next state out.

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


@dataclass(frozen=True)
class KVCache:
    """Keys/values per layer, (batch, heads, slots, head_dim); the one place their names are spelled."""

    tag: ClassVar[str] = "kv"
    layers: int
    heads: int
    head_dim: int
    # True for models whose answer depends on where the past slots sit, not only on which are
    # attended (positions taken from the cache length: BART-family decoders; ALiBi biases by key
    # index: MPT): the runtime then keeps exactly the tokens so far (edgekit/tasks/compactkv.py)
    # instead of preallocated slots with the unfilled ones masked. Detected at convert.
    compact: bool = False

    def __post_init__(self) -> None:
        if min(self.layers, self.heads, self.head_dim) < 1:
            raise ValueError(f"the cache geometry must be positive, found {self}")

    def past(self) -> list[str]:
        return [f"past_key_values.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]

    def present(self) -> list[str]:
        return [f"present.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]

    def cross(self) -> list[str]:
        """An encoder's keys/values per decoder layer (cross-attention), fed unchanged every step."""
        return [f"cross.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]

    def writes(self) -> dict[str, str]:
        """present output -> the past input it fills."""
        return dict(zip(self.present(), self.past()))


@dataclass(frozen=True)
class RecurrentState:
    """Fixed-size state tensors (layers, batch, hidden) carried from step to step."""

    tag: ClassVar[str] = "recurrent"
    layers: int
    hidden: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.outputs) or not self.inputs:
            raise ValueError("the state needs one output per input")


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


STEP_INPUTS = ("input_ids", "attention_mask", "position_ids")
ENCODER_MASK = "encoder_attention_mask"


def decoder_needs(cache: KVCache, resident: list[str] | None = None, extra: tuple[Need, ...] = ()) -> GraphNeeds:
    """The slot-cache decoder: what generate (and Whisper's decoder) feed and read each step."""
    ins = [Need(n, INT64, 2) for n in STEP_INPUTS] + [Need(n, FLOAT, 4) for n in cache.past() + (resident or [])]
    outs = [Need("logits", FLOAT, 3)] + [Need(n, FLOAT, 4) for n in cache.present()]
    return GraphNeeds(tuple(ins) + extra, tuple(outs))


def shared_decoder_needs(cache: KVCache) -> GraphNeeds:
    """The onnxruntime stand-in of a KV decoder (GroupQueryAttention, converters/ort_attention.py): the
    cache buffers are fed whole and written in place (each present is bound to its past); each row's
    tokens are right-aligned in its buffer and `total_length` says how many there are after the call."""
    ins = [Need("input_ids", INT64, 2), Need("position_ids", INT64, 2), Need("total_length", INT64, 1)]
    ins += [Need(n, FLOAT, 4) for n in cache.past()]
    outs = [Need("logits", FLOAT, 3)] + [Need(n, FLOAT, 4) for n in cache.present()]
    return GraphNeeds(tuple(ins), tuple(outs))


def decoder_phases(max_context: int, batch: tuple[int, int, int]) -> list[Phase]:
    """The prompt (any length, empty cache) and decode steps (one token, up to max_context - 1 slots).

    Two phases, not one static max-context shape: the cache is sized per call (prompt +
    max_new_tokens), so a short answer does not attend over the whole context every step.
    """
    n, opt = max_context, min(128, max_context)
    return [("prompt", {BATCH: batch, SEQUENCE: (1, opt, n), PAST: (0, 0, n - 1), TOTAL: (1, opt, n)}),
            ("decode", {BATCH: batch, SEQUENCE: (1, 1, 1), PAST: (1, n // 2, n - 1), TOTAL: (2, n // 2 + 1, n)})]


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
    cache: KVCache | RecurrentState | FullSequence
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    encoder: EncoderPart | None = None  # set: an encoder-decoder ("encoder" + "decoder" graphs)
    chat: ChatTemplate | None = None

    def __post_init__(self) -> None:
        if self.max_context < 2:
            raise ValueError(f"max_context must be at least 2 tokens, found {self.max_context}")
        if self.encoder is not None and not isinstance(self.cache, KVCache):
            raise ValueError("an encoder-decoder artifact needs a KV cache")

    def needs(self) -> dict[str, GraphNeeds]:
        c = self.cache
        if isinstance(c, KVCache) and self.encoder is not None:
            enc = GraphNeeds((Need("input_ids", INT64, 2), Need("attention_mask", INT64, 2)),
                             tuple(Need(n, FLOAT, 4) for n in c.cross()))
            return {"encoder": enc, "decoder": decoder_needs(c, c.cross(), (Need(ENCODER_MASK, INT64, 2),))}
        if isinstance(c, KVCache):
            return {"model": decoder_needs(c)}
        if isinstance(c, FullSequence):
            return {"model": GraphNeeds((Need(c.input, INT64, 2),), (Need("logits", FLOAT, 3),))}
        ins = (Need("input_ids", INT64, 2), *(Need(n, FLOAT, 3) for n in c.inputs))
        outs = (Need("logits", FLOAT, 3), *(Need(n, FLOAT, 3) for n in c.outputs))
        return {"model": GraphNeeds(ins, outs)}

    def call_shapes(self, graph: str) -> list[Phase]:
        if self.encoder is not None:
            n = self.encoder.max_source
            source = (1, min(64, n), n)
            if graph == "encoder":
                return [("all", {BATCH: self.batch, SOURCE: source})]
            # Beam search runs batch * num_beams rows through the decoder.
            return [(name, {**dims, SOURCE: source}) for name, dims in decoder_phases(self.max_context, (1, 4, 16))]
        if isinstance(self.cache, KVCache):
            return decoder_phases(self.max_context, self.batch)
        if isinstance(self.cache, FullSequence):
            return [("all", {BATCH: self.batch, SEQUENCE: (1, min(128, self.max_context), self.max_context)})]
        return [("all", {BATCH: self.batch})]

    def runtime_needs(self, graph: str, kv_layout: str) -> GraphNeeds | None:
        if graph == "model" and kv_layout == "shared" and isinstance(self.cache, KVCache):
            return shared_decoder_needs(self.cache)
        return None

