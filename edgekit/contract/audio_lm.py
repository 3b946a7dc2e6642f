"""What an audio-language `recognize` artifact contains (Voxtral: a speech encoder + projector whose
rows replace the audio placeholder tokens of a causal LM's prompt; the LM then writes the transcript).

graph "audio"  input_features (chunks, n_mels, chunk frames): Whisper's log-mel of each 30 s chunk of
               the padded waveform -> audio_features (rows, hidden): `rows_per_chunk` per chunk, in order
graph "model"  the slot-cache decoder of contract/generate.py plus the input audio_features (rows,
               hidden): row k replaces the embedding of the k-th `audio_token_id` of the call (the
               masked_scatter order of transformers' forward, converters/specs/vision_lm.merge_features);
               decode steps feed zero rows.
The prompt is `prefix`, one `audio_token_id` per row, `suffix`; a language, where asked, is
`language_format` tokenized and put before the suffix's last `language_before` tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgekit.contract.base import FLOAT, GraphNeeds, Need, Phase, Section
from edgekit.contract.generate import decoder_phases
from edgekit.contract.recognize import Chunking
from edgekit.contract.state import DecoderState

AUDIO_FEATURES = "audio_features"  # the audio graph's rows and the decoder's input of them
AUDIO_ROWS = "audio_rows"
AUDIO_CHUNKS = "audio_chunks"


@dataclass(frozen=True)
class AudioLMSection(Section):
    task: ClassVar[str] = "recognize"
    tag: ClassVar[str] = "audio-lm"
    model: ClassVar[str] = "edgekit.tasks.audio_lm:AudioLMRecognizer"

    audio: Chunking  # chunk_length_s: the encoder's window; a recording is padded to whole windows
    n_mels: int
    n_fft: int
    hop_length: int
    tokenizer: str
    cache: DecoderState
    hidden: int  # the decoder's embedding width: each audio row's
    rows_per_chunk: int
    max_chunks: int  # the most windows one prompt holds within the context
    audio_token_id: int
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    eos_token_id: tuple[int, ...]
    max_context: int
    max_new_tokens: int  # the default: the generation config's, else the context left after the longest prompt
    language_format: str = ""  # e.g. "lang:{}" (Voxtral); empty: the model takes no language
    language_before: int = 1  # the language tokens go before the suffix's last this many

    def __post_init__(self) -> None:
        if min(self.rows_per_chunk, self.max_chunks, self.hidden, self.max_new_tokens) < 1 or not self.eos_token_id:
            raise ValueError("an audio-LM section needs rows per chunk, max_chunks, hidden and max_new_tokens >= 1, "
                             "and an eos token")
        if not 0 <= self.language_before <= len(self.suffix):
            raise ValueError(f"language_before {self.language_before} is outside the {len(self.suffix)}-token suffix")

    @property
    def chunk_frames(self) -> int:
        return self.audio.window // self.hop_length

    def needs(self) -> dict[str, GraphNeeds]:
        rows = Need(AUDIO_FEATURES, FLOAT, 2)
        return {"audio": GraphNeeds((Need("input_features", FLOAT, 3),), (rows,)),
                "model": self.cache.needs(extra=(rows,))}

    def call_shapes(self, graph: str) -> list[Phase]:
        if graph == "audio":
            return [("all", {AUDIO_CHUNKS: (1, 1, self.max_chunks)})]
        most = self.rows_per_chunk * self.max_chunks
        rows = {"prompt": (0, self.rows_per_chunk, most), "decode": (0, 0, 0)}
        # One recording per call: batch 1.
        return [(name, {**dims, AUDIO_ROWS: rows[name]}) for name, dims in decoder_phases(self.max_context, (1, 1, 1))]
