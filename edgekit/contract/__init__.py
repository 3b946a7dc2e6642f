"""The artifact contract: what `edgekit.json` says about a model, as typed, checked dataclasses.

One file per task declares everything its artifact contains (graph names, inputs and outputs,
named dims, cache layout, tokenizer, pre- and post-processing):
    contract/classify.py   ClassifySection
    contract/generate.py   GenerateSection
    contract/recognize.py  CtcSection, WhisperSection, SpeechSeq2SeqSection
    contract/audio_lm.py   AudioLMSection (recognize with an audio-language model)
`base.py` has what they share; `codec.py` reads and writes them as JSON.
"""
from __future__ import annotations

from edgekit.contract.audio_lm import AudioLMSection
from edgekit.contract.base import GraphSpec, Section, TensorSpec, check_graphs
from edgekit.contract.classify import ClassifySection
from edgekit.contract.generate import GenerateSection
from edgekit.contract.recognize import CtcSection, SpeechSeq2SeqSection, WhisperSection

__all__ = ["AudioLMSection", "ClassifySection", "CtcSection", "GenerateSection", "GraphSpec", "Section", "SpeechSeq2SeqSection",
           "TensorSpec", "WhisperSection", "check_graphs"]
