"""The export specs, one per model family, and `match`: the one place that picks a spec for a source.

Every concrete `ExportSpec` is a candidate, those of this package's modules and any defined
elsewhere: a new family is one new file here (or in the user's code), with no registry to edit. The modules now:

    classify.py   TorchClassifier, HFImageClassifier, HFTextClassifier
    causal_lm.py  HFCausalLM (generic: every Hugging Face decoder no specific spec claims)
    full_sequence_lm.py  HFFullSequenceLM (Hugging Face decoders generate runs without a cache: OpenAI-GPT, XLM)
    xlnet.py      HFXLNetLM (XLNet with mems: hidden-state memories, one graph)
    state_space.py  HFStateSpaceLM (decoders whose cache holds conv/SSM states: Mamba, hybrids; a step graph)
    minimax.py    HFMiniMaxLM (MiniMax: lightning states and keys/values in its own MiniMaxCache; the step graph)
    rwkv.py       HFRwkvLM (RWKV: its own five-tensor state, a one-token step graph)
    recurrent_gemma.py  HFRecurrentGemmaLM (Recurrent Gemma: states its modules keep, a one-token step graph)
    xlstm.py      HFXlstmLM (xLSTM: its mLSTM states C, n, m per layer, a one-token step graph)
    seq2seq.py    HFSeq2Seq (Marian, BART/mBART, M2M100/NLLB, Pegasus, T5/mT5/UMT5; graphs in seq2seq_graphs.py)
    recurrent.py  RecurrentGenerator (plain LSTM modules)
    torch_decoder.py  TorchKVDecoder, TorchDecoder (plain transformer decoders, with or without a cache)
    ctc.py        HFCtc, TorchCtc
    whisper.py    Whisper
    speech_seq2seq.py  HFSpeechSeq2Seq (Moonshine, Speech2Text; the other speech encoder-decoders refused by name)
A Hugging Face folder is matched by its architecture's name (`*ForImageClassification`, ...), so a
new family following the convention needs no spec at all; one that needs something special gets
its own file, and wins over the generic spec whatever its name or place.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions, ExportSpec
from edgekit.errors import ConfigError, SourceError


def specs() -> tuple[type[ExportSpec], ...]:
    """Every concrete ExportSpec: this package's modules (imported once) and any subclass defined
    elsewhere (a user's own family), specific ones first, each group by module and name."""
    _import_specs()
    found, todo = [], list(ExportSpec.__subclasses__())
    while todo:
        c = todo.pop()
        todo += c.__subclasses__()
        if not inspect.isabstract(c):
            found.append(c)
    return tuple(sorted(set(found), key=lambda c: (c.generic, c.__module__, c.__name__)))


@cache
def _import_specs() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def match(src: Source, options: ConvertOptions) -> ExportSpec:
    """The spec that converts `src` (for `src.task`, or the task it infers), built; or why none does.

    Specific specs are asked first and must not overlap (two claiming one source is a bug in them,
    reported, never settled by order); a generic spec takes what none of them claims."""
    claimed = [s for s in specs() if s.matches(src, src.task)]
    specific = [s for s in claimed if not s.generic]
    if len(specific) > 1:
        raise ConfigError(f"more than one export spec claims '{src.description}'",
                          found=f"{[s.__name__ for s in specific]}",
                          fix="make their `matches` exclusive (edgekit.converters.specs)")
    if claimed:
        return (specific or claimed)[0](src, options)
    if src.is_plain:
        raise ConfigError(
            "the task of a plain PyTorch model cannot be inferred",
            fix="pass task='classify' | 'generate' | 'recognize' (CLI: --task), or labels for a classifier",
        )
    archs = src.config.get("architectures") or []
    supported = sorted({s.task for s in specs()})
    if src.task is None:
        raise ConfigError(f"cannot infer the task of '{src.description}'", found=f"architectures {archs}",
                          fix=f"pass task={' | '.join(supported)} (CLI: --task), for a supported architecture")
    raise SourceError(
        f"'{src.description}' is a {src.architecture or 'model without architectures'}, which edgekit cannot "
        f"convert for {src.task}",
        fix="classify takes *ForImageClassification / *ForSequenceClassification folders, generate *ForCausalLM "
            "/ *LMHeadModel and encoder-decoder *ForConditionalGeneration / MarianMTModel, recognize *ForCTC, "
            "WhisperForConditionalGeneration and the speech encoder-decoders (Moonshine, Speech2Text)",
    )
