"""What a `recognize` artifact contains: a CTC model, or Whisper's encoder and cached decoder.

CTC (`CtcSection`), graph "model": the waveform (batch, samples), log-mel features (batch, mels,
frames) or a model's own filterbank features (batch, frames, width) in, with their frame mask where
the graph takes one; logits (batch, frames, vocabulary) out; greedy CTC decoding with `vocabulary`.

Whisper (`WhisperSection`):
    graph "encoder"  input_features (batch, mels, frames) -> cross.{i}.key / .value per decoder layer
    graph "decoder"  the slot-cache decoder of contract/generate.py, with the cross keys/values as
                     extra inputs fed unchanged every step (resident on the backend for a chunk);
                     where the model names `alignment_heads` (generation_config), one more output
                     "alignment" (batch, heads, tokens, frames): the cross-attention weights (after
                     softmax) of those (layer, head) pairs, in their order. Read only for
                     recognize(word_timestamps=True): one pass over a window's decoded tokens, then
                     dynamic time warping (tasks/word_times.py) maps tokens to 20 ms encoder frames.
Other speech encoder-decoders (`SpeechSeq2SeqSection`: Moonshine, ...):
    graph "encoder"  `input` (the waveform (batch, samples)) -> cross.{i}.key / .value
    graph "decoder"  the same decoder, also fed `encoder_attention_mask` (batch, encoder frames)
    Where `mask` names one, the encoder also takes the front end's frame mask (batch, frames or
    samples) and returns `encoder_attention_mask`, its output frames' mask (Canary, Cohere ASR,
    Moonshine Streaming).
Audio is cut into chunks of `chunk_length_s` overlapping by `stride_length_s` on each side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from edgekit.contract.base import BATCH, FLOAT, FRAMES, INT64, SAMPLES, GraphNeeds, Need, Phase, Section
from edgekit.contract.generate import ENCODER_MASK, cross_names, decoder_phases
from edgekit.contract.state import DecoderState


ALIGNMENT = "alignment"  # the Whisper decoder's cross-attention weights of its alignment heads


@dataclass(frozen=True)
class Chunking:
    sample_rate: int
    chunk_length_s: float
    stride_length_s: float

    def __post_init__(self) -> None:
        if not 1000 <= self.sample_rate <= 384_000:
            raise ValueError(f"sample_rate must be 1000..384000 Hz, found {self.sample_rate}")
        if not 0 <= 2 * self.stride_length_s < self.chunk_length_s <= 3600:
            raise ValueError("chunks must be longer than twice their overlap (and at most an hour)")

    @property
    def window(self) -> int:
        return int(self.chunk_length_s * self.sample_rate)

    @property
    def stride(self) -> int:
        return int(self.stride_length_s * self.sample_rate)


@dataclass(frozen=True)
class CtcSection(Section):
    task: ClassVar[str] = "recognize"
    tag: ClassVar[str] = "ctc"
    model: ClassVar[str] = "edgekit.tasks.ctc:CtcRecognizer"

    audio: Chunking
    # The numpy front end (edgekit/tasks/ctc.py FRONT_ENDS): "parakeet-fbank", "lasr-fbank" and
    # "kaldi-fbank" (wav2vec2-BERT's) are transformers' extractors of those names (preprocess/filterbank.py).
    features: Literal["waveform", "log-mel", "parakeet-fbank", "lasr-fbank", "kaldi-fbank"]
    normalize: bool  # waveform: zero mean, unit variance per chunk (wav2vec2's do_normalize)
    n_fft: int
    hop_length: int
    n_mels: int
    input: str
    vocabulary: tuple[str, ...]
    blank_id: int
    word_delimiter: str
    skip: tuple[str, ...]  # tokens never printed (<s>, </s>, ...)
    output: str = "logits"
    win_length: int = 0  # the STFT window inside n_fft (0: n_fft)
    preemphasis: float = 0.0  # x[t] - preemphasis * x[t - 1] before the STFT
    stack: int = 1  # consecutive frames stacked into one feature vector (wav2vec2-BERT: 2)
    mask: str | None = None  # the graph's frame-mask input (batch, frames): 1 for the front end's real frames

    def __post_init__(self) -> None:
        if not 0 <= self.blank_id < len(self.vocabulary):
            raise ValueError(f"blank_id {self.blank_id} is not an index of the {len(self.vocabulary)}-token vocabulary")
        if min(self.n_fft, self.hop_length, self.n_mels, self.stack) < 1 or not 0 <= self.win_length <= self.n_fft:
            raise ValueError("n_fft, hop_length, n_mels and stack must be positive, win_length within n_fft")

    def needs(self) -> dict[str, GraphNeeds]:
        rank = 2 if self.features == "waveform" else 3
        mask = (Need(self.mask, INT64, 2),) if self.mask else ()
        return {"model": GraphNeeds((Need(self.input, FLOAT, rank), *mask), (Need(self.output, FLOAT, 3),))}

    def call_shapes(self, graph: str) -> list[Phase]:
        samples = self.audio.window
        if self.features == "waveform":  # chunks of chunk_length_s; clips down to 0.1 s
            return [("all", {BATCH: self.batch, SAMPLES: (min(1600, samples), samples, samples)})]
        frames = samples // self.hop_length + 1
        least = 1 if self.features == "log-mel" else 8  # a filterbank graph is exported for 8 frames and up
        return [("all", {BATCH: self.batch, FRAMES: (least, frames, frames)})]


@dataclass(frozen=True)
class WhisperSection(Section):
    task: ClassVar[str] = "recognize"
    tag: ClassVar[str] = "whisper"
    model: ClassVar[str] = "edgekit.tasks.whisper:WhisperRecognizer"

    audio: Chunking
    n_mels: int
    n_fft: int
    hop_length: int
    n_samples: int  # the fixed window the encoder takes (30 s)
    tokenizer: str
    cache: DecoderState
    decoder_start_token_id: int
    eos_token_id: int
    no_timestamps_token_id: int
    is_multilingual: bool
    lang_to_id: dict[str, int]
    task_to_id: dict[str, int]
    suppress_tokens: tuple[int, ...]
    begin_suppress_tokens: tuple[int, ...]
    max_initial_timestamp_index: int | None
    max_length: int  # new tokens after the forced prompt (generation_config.max_length, as transformers counts)
    max_target_positions: int  # the decoder's position table
    time_precision: float
    # (decoder layer, head) pairs whose cross-attention follows the audio (generation_config.alignment_heads);
    # empty: the model has none, and no word timestamps.
    alignment_heads: tuple[tuple[int, int], ...] = ()
    median_filter_width: int = 7  # config.median_filter_width: smoothing of the weights along the frames
    # What goes before the previous text when long-form conditions on it: generation_config's
    # prev_sot_token_id, else suppress_tokens[-2] (transformers' fallback), else nothing. None: an
    # artifact converted before long-form recorded it (long_form conditioning refuses it).
    startofprev: tuple[int, ...] | None = None

    def needs(self) -> dict[str, GraphNeeds]:
        cross = cross_names(self.cache)
        decoder = self.cache.needs(cross)
        if self.alignment_heads:
            decoder = GraphNeeds(decoder.inputs, (*decoder.outputs, Need(ALIGNMENT, FLOAT, 4)))
        return {"encoder": GraphNeeds((Need("input_features", FLOAT, 3),), tuple(Need(n, FLOAT, 4) for n in cross)),
                "decoder": decoder}

    def call_shapes(self, graph: str) -> list[Phase]:
        if graph == "encoder":
            return [("all", {BATCH: self.batch})]
        # The position table bounds a decode, not max_length (recognize(max_new_tokens=...) may pass it).
        return decoder_phases(self.max_target_positions, self.batch)


@dataclass(frozen=True)
class SpeechSeq2SeqSection(Section):
    """A speech encoder-decoder without Whisper's prompt and timestamp tokens: the decoder starts at
    `decoder_start_token_id` and runs greedy or beam search to eos, with the generation config's
    suppressed tokens."""

    task: ClassVar[str] = "recognize"
    tag: ClassVar[str] = "speech-seq2seq"
    model: ClassVar[str] = "edgekit.tasks.speech_seq2seq:SpeechSeq2SeqRecognizer"
    audio: Chunking
    # The encoder's input as edgekit's front end makes it: the samples (batch, samples),
    # Speech2TextFeatureExtractor's Kaldi fbank with utterance CMVN (batch, frames, n_mels), or
    # SeamlessM4TFeatureExtractor's, `stack` frames per row (batch, frames / stack, n_mels * stack), or
    # ParakeetFeatureExtractor's normalized log mel (Canary's; Cohere ASR's CohereAsrFeatureExtractor is
    # the same less its dither: see the README) (batch, frames, n_mels).
    features: Literal["waveform", "speech2text-fbank", "kaldi-fbank", "parakeet-fbank"]
    normalize: bool  # waveform: zero mean, unit variance per chunk (the extractor's do_normalize)
    input: str
    tokenizer: str
    cache: DecoderState
    decoder_start_token_id: int
    eos_token_id: int
    suppress_tokens: tuple[int, ...]
    begin_suppress_tokens: tuple[int, ...]
    max_length: int  # new tokens after the start token (generation_config.max_length - 1, as transformers counts)
    max_target_positions: int  # the decoder's positions
    n_mels: int = 80  # the fbank front ends: mel bands per frame
    stack: int = 1  # kaldi-fbank: consecutive frames per encoder row (SeamlessM4T's stride, 2)
    # generation_config.forced_eos_token_id (mBART decoders): the only token at the last position, as
    # transformers' ForcedEOSTokenLogitsProcessor makes it when a decode reaches its length.
    forced_eos_token_id: int | None = None
    # SeamlessM4T's target languages (generation_config.text_decoder_lang_to_code_id, "eng" -> id):
    # recognize(language="eng") decodes from [decoder_start_token_id, that id], as generate(tgt_lang="eng").
    lang_to_id: dict[str, int] = field(default_factory=dict)
    # parakeet-fbank's STFT: FFT size, hop, window inside the FFT, pre-emphasis coefficient.
    n_fft: int = 512
    hop_length: int = 160
    win_length: int = 400
    preemphasis: float = 0.0
    # The encoder's frame-mask input (batch, frames or samples; 1 for the front end's real frames), where
    # it takes one; it then returns its own frames' mask, which the decoder's cross-attention reads.
    # parakeet-fbank's last frame is padding (Canary, Cohere ASR: their encoders subsample the mask); a
    # waveform's zeros up to pad_to_multiple_of (Moonshine Streaming, whose encoder attends within its
    # per-layer sliding windows only when given a mask).
    mask: str | None = None
    pad_to_multiple_of: int = 1  # waveform: zeros up to a multiple (Moonshine Streaming's 5 ms frames, 80 samples)

    def needs(self) -> dict[str, GraphNeeds]:
        cross = cross_names(self.cache)
        rank = 2 if self.features == "waveform" else 3
        mask_in = (Need(self.mask, INT64, 2),) if self.mask else ()
        mask_out = (Need(ENCODER_MASK, INT64, 2),) if self.mask else ()
        return {"encoder": GraphNeeds((Need(self.input, FLOAT, rank), *mask_in),
                                      (*(Need(n, FLOAT, 4) for n in cross), *mask_out)),
                "decoder": self.cache.needs(cross, (Need(ENCODER_MASK, INT64, 2),))}

    def call_shapes(self, graph: str) -> list[Phase]:
        samples = self.audio.window
        if graph == "encoder" and self.features == "parakeet-fbank":  # a centered STFT: one frame per hop, + 1
            frames = samples // self.hop_length + 1
            return [("all", {BATCH: self.batch, FRAMES: (8, frames, frames)})]
        if graph == "encoder" and self.features != "waveform":  # 10 ms frames of 25 ms, `stack` per row
            rows = (samples // 160 - 1) // self.stack
            return [("all", {BATCH: self.batch, FRAMES: (8, rows, rows)})]
        if graph == "encoder":
            return [("all", {BATCH: self.batch, SAMPLES: (min(1600, samples), samples, samples)})]
        # The encoder's frames: at most one per 10 ms hop (Moonshine's are 24 ms). Beam search runs a
        # row per beam through the decoder.
        frames = (1, samples // 400, samples // 160)
        return [(name, {**dims, FRAMES: frames}) for name, dims in decoder_phases(self.max_target_positions, (1, 4, 16))]
