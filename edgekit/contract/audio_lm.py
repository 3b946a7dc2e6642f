"""What an audio-language `recognize` artifact contains (Voxtral: a speech encoder + projector whose
rows replace the audio placeholder tokens of a causal LM's prompt; the LM then writes the transcript).

graph "audio"  input_features (chunks, n_mels, chunk_frames) -> audio_features (rows, hidden), in order.
               front_end "whisper-windows" (Voxtral): Whisper's log-mel of the waveform padded to whole
               30 s windows, cut per window; `rows_per_chunk` rows each.
               front_end "qwen3-asr": the log-mel of the waveform (at least `min_samples`), padded with
               zero frames to whole chunks; the graph also takes row_mask (chunks, rows_per_chunk) int64,
               1 where a row comes from real frames, and the runtime keeps only those rows.
               front_end "voxtral-realtime": the log-mel (centred frames, floor `log_mel_max` - 8) of
               the waveform padded with `left_pad_samples` zeros before it and, after it, to whole
               tokens of chunk_frames * hop_length samples plus `right_pad_tokens` tokens; one chunk
               and one row per token (a causal encoder: all at once equals token by token).
               front_end "mimi" (Kyutai STT): the waveform padded with `left_pad_samples` zeros before
               and `right_pad_samples` after, then zeros to `min_samples` at least, cut to whole frames
               (chunks, 1, chunk_frames samples; n_fft and hop_length 1) -> (chunks + 1, hidden): the
               audio BOS row, then each frame's summed code embeddings; the runtime keeps the BOS row
               and the real frames' (the codec is causal: the appended frames change no earlier row).
               front_end "waveform" (VibeVoice-ASR): no spectrogram: the waveform scaled to
               `target_dbfs` (where set), zero-padded to whole hops of `chunk_frames` samples and cut
               per hop (chunks, 1, chunk_frames); one row per hop (`n_mels` 1, `hop_length` 1: a
               frame is a sample, `n_fft` 0: unused).
graph "model"  the slot-cache decoder of contract/generate.py plus the input audio_features (rows,
               hidden): row k replaces the embedding of the k-th `audio_token_id` of the call (the
               masked_scatter order of transformers' forward, converters/specs/vision_lm.merge_features);
               decode steps feed zero rows. "voxtral-realtime": audio_features is (batch, tokens,
               hidden), each token's row *added* to its embedding, prompt and steps alike; the
               prompt is `prefix` (no placeholders), then one token per remaining row.
The prompt is `prefix`, one `audio_token_id` per row, `suffix`; a language, where asked, is
`language_suffixes[language]` in place of the suffix (the processor's own prompt per language), or
`language_format` tokenized and put before the suffix's last `language_before` tokens. Where
`suffix_format` is set the suffix is that text, the recording's length put in (`{seconds:.2f}`),
tokenized per call (VibeVoice-ASR's request names it). The text is what follows `text_after` in the decoded answer, where the model writes that
marker; `transcript` "json-segments": the answer is a JSON list of {"Start", "End", "Speaker",
"Content"} and the text its Contents joined, as the family's processor decodes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from edgekit.contract.base import FLOAT, INT64, GraphNeeds, Need, Phase, Section
from edgekit.contract.generate import decoder_phases
from edgekit.contract.recognize import Chunking
from edgekit.contract.state import DecoderState

AUDIO_FEATURES = "audio_features"  # the audio graph's rows and the decoder's input of them
AUDIO_ROWS = "audio_rows"
AUDIO_CHUNKS = "audio_chunks"
ROW_MASK = "row_mask"


@dataclass(frozen=True)
class AudioLMSection(Section):
    task: ClassVar[str] = "recognize"
    tag: ClassVar[str] = "audio-lm"
    model: ClassVar[str] = "edgekit.tasks.audio_lm:AudioLMRecognizer"

    audio: Chunking  # chunk_length_s: the longest speech span recognize(vad=True) hands over
    n_mels: int
    n_fft: int
    hop_length: int
    tokenizer: str
    cache: DecoderState
    hidden: int  # the decoder's embedding width: each audio row's
    chunk_frames: int  # log-mel frames per chunk the audio graph takes
    rows_per_chunk: int
    max_chunks: int  # the most windows one prompt holds within the context
    audio_token_id: int  # added rows (no placeholders): the streaming pad (Voxtral Realtime), the audio BOS code (mimi)
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    eos_token_id: tuple[int, ...]
    max_context: int
    # The default: the generation config's max_new_tokens; None: until eos, within the context this prompt leaves.
    max_new_tokens: int | None
    front_end: Literal["whisper-windows", "qwen3-asr", "voxtral-realtime", "mimi", "waveform"] = "whisper-windows"
    min_samples: int = 0  # shorter waveforms are zero-padded to this many samples first ("mimi": after the pads)
    language_format: str = ""  # e.g. "lang:{}" (Voxtral); empty: see language_suffixes
    language_before: int = 1  # the language tokens go before the suffix's last this many
    language_suffixes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # language code or name -> suffix
    text_after: str = ""  # the marker the transcript follows (Qwen3-ASR's "<asr_text>"); empty: all of it
    left_pad_samples: int = 0  # "voxtral-realtime": silence before the waveform
    right_pad_tokens: int = 0  # "voxtral-realtime": tokens of silence after it (past whole tokens)
    right_pad_samples: int = 0  # "mimi": silence after the waveform
    log_mel_max: float | None = None  # "voxtral-realtime": the fixed log-mel ceiling (None: the spectrogram's max)
    target_dbfs: float | None = None  # "waveform": the RMS level the recording is scaled to; None: as it is
    norm_eps: float = 0.0  # added to the RMS (and the peak) before dividing, as the feature extractor does
    suffix_format: str = ""  # the suffix as text with {seconds:.2f}; empty: `suffix`
    transcript: Literal["text", "json-segments"] = "text"

    def __post_init__(self) -> None:
        # Added rows end with the audio (Kyutai STT names no eos): an eos is needed otherwise only.
        if min(self.rows_per_chunk, self.max_chunks, self.hidden, self.max_new_tokens or 1) < 1 or \
                not (self.eos_token_id or self.added):
            raise ValueError("an audio-LM section needs rows per chunk, max_chunks, hidden and max_new_tokens >= 1, "
                             "and an eos token")
        if not 0 <= self.language_before <= len(self.suffix):
            raise ValueError(f"language_before {self.language_before} is outside the {len(self.suffix)}-token suffix")

    @property
    def added(self) -> bool:
        """Audio rows added per position (every call) rather than in place of placeholder tokens."""
        return self.front_end in ("voxtral-realtime", "mimi")

    @property
    def takes_language(self) -> bool:
        return bool(self.language_format or self.language_suffixes)

    def needs(self) -> dict[str, GraphNeeds]:
        rows = Need(AUDIO_FEATURES, FLOAT, 2)
        added = Need(AUDIO_FEATURES, FLOAT, 3)
        mask = (Need(ROW_MASK, INT64, 2),) if self.front_end == "qwen3-asr" else ()
        return {"audio": GraphNeeds((Need("input_features", FLOAT, 3), *mask), (rows,)),
                "model": self.cache.needs(extra=(added if self.added else rows,))}

    def call_shapes(self, graph: str) -> list[Phase]:
        if graph == "audio":
            least = max(1, self.min_samples // self.chunk_frames) if self.front_end == "mimi" else 1
            return [("all", {AUDIO_CHUNKS: (least, least, self.max_chunks)})]
        if self.added:  # the rows follow the call's batch and sequence
            return decoder_phases(self.max_context, (1, 1, 1))
        most = self.rows_per_chunk * self.max_chunks
        rows = {"prompt": (0, self.rows_per_chunk, most), "decode": (0, 0, 0)}
        # One recording per call: batch 1.
        return [(name, {**dims, AUDIO_ROWS: rows[name]}) for name, dims in decoder_phases(self.max_context, (1, 1, 1))]
