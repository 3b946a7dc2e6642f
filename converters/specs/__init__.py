"""The export specs, one per model family, and `match`: the one place that picks a spec for a source.

Every concrete `ExportSpec` defined in a module of this package is a candidate: a new family is one
new file here, with no registry to edit. The modules now:

    classify.py   TorchClassifier, HFImageClassifier, HFTextClassifier
    causal_lm.py  HFCausalLM (generic: every Hugging Face decoder no specific spec claims)
    full_sequence_lm.py  HFFullSequenceLM (Hugging Face decoders generate runs without a cache: OpenAI-GPT, XLM)
    seq2seq.py    HFSeq2Seq (Marian, BART/mBART, M2M100/NLLB, Pegasus, T5/mT5/UMT5; graphs in seq2seq_graphs.py)
    recurrent.py  RecurrentGenerator (plain LSTM modules)
    torch_decoder.py  TorchKVDecoder, TorchDecoder (plain transformer decoders, with or without a cache)
    ctc.py        HFCtc, TorchCtc
    whisper.py    Whisper
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


@cache
def specs() -> tuple[type[ExportSpec], ...]:
    """The concrete specs of this package's modules, specific ones first, each group by name."""
    found: list[type[ExportSpec]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, ExportSpec) and not inspect.isabstract(c) and c.__module__ == module.__name__]
    return tuple(sorted(found, key=lambda c: (c.generic, c.__module__, c.__name__)))


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
            "/ *LMHeadModel and encoder-decoder *ForConditionalGeneration / MarianMTModel, recognize *ForCTC and "
            "WhisperForConditionalGeneration",
    )
