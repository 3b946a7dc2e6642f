"""The export specs, one per model family, and `match`: the one place that picks a spec for a source.

    classify.py   TorchClassifier, HFImageClassifier, HFTextClassifier
    causal_lm.py  HFCausalLM (every decoder with a Hugging Face KV cache)
    seq2seq.py    HFSeq2Seq (Marian, BART/mBART, M2M100/NLLB, Pegasus, T5/mT5/UMT5; graphs in seq2seq_graphs.py)
    recurrent.py  RecurrentGenerator (plain LSTM modules)
    torch_decoder.py  TorchKVDecoder, TorchDecoder (plain transformer decoders, with or without a cache)
    ctc.py        HFCtc, TorchCtc
    whisper.py    Whisper
A Hugging Face folder is matched by its architecture's name (`*ForImageClassification`, ...), so a
new family following the convention needs no entry; a plain module by the task it is given.
"""
from __future__ import annotations

from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions, ExportSpec
from edgekit.converters.specs.causal_lm import HFCausalLM
from edgekit.converters.specs.classify import HFImageClassifier, HFTextClassifier, TorchClassifier
from edgekit.converters.specs.ctc import HFCtc, TorchCtc
from edgekit.converters.specs.recurrent import RecurrentGenerator
from edgekit.converters.specs.seq2seq import HFSeq2Seq
from edgekit.converters.specs.torch_decoder import TorchDecoder, TorchKVDecoder
from edgekit.converters.specs.whisper import Whisper
from edgekit.errors import ConfigError, SourceError

SPECS: tuple[type[ExportSpec], ...] = (
    HFImageClassifier, HFTextClassifier, HFCausalLM, HFSeq2Seq, HFCtc, Whisper,
    TorchClassifier, RecurrentGenerator, TorchKVDecoder, TorchDecoder, TorchCtc,
)


def match(src: Source, options: ConvertOptions) -> ExportSpec:
    """The spec that converts `src` (for `src.task`, or the task it infers), built; or why none does."""
    for spec in SPECS:
        if spec.matches(src, src.task):
            return spec(src, options)
    if src.is_plain:
        raise ConfigError(
            "the task of a plain PyTorch model cannot be inferred",
            fix="pass task='classify' | 'generate' | 'recognize' (CLI: --task), or labels for a classifier",
        )
    archs = src.config.get("architectures") or []
    supported = sorted({s.task for s in SPECS})
    if src.task is None:
        raise ConfigError(f"cannot infer the task of '{src.description}'", found=f"architectures {archs}",
                          fix=f"pass task={' | '.join(supported)} (CLI: --task), for a supported architecture")
    raise SourceError(
        f"'{src.description}' is a {src.architecture or 'model without architectures'}, which edgekit cannot "
        f"convert for {src.task}",
        fix="classify takes *ForImageClassification / *ForSequenceClassification folders, generate *ForCausalLM "
            "/ *LMHeadModel and encoder-decoder *ForConditionalGeneration / MarianMTModel, recognize *ForCTC and "
            "WhisperForConditionalGeneration",
    )
