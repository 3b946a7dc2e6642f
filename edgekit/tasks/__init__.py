"""The tasks edgekit serves, one descriptor each: the only table that names them.

A task's name is also the method its models answer to (`model.classify(...)`). The descriptor says
which contract sections an artifact of the task may hold (each names the runtime class that serves
it), and where `edgekit run` and `edgekit bench` find the task's code. Adding a task is one entry
here, a contract file, a runtime class and the converter specs that build it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edgekit.contract import (AudioLMSection, ClassifySection, CtcSection, GenerateSection, Section,
                              SpeechSeq2SeqSection, WhisperSection)


@dataclass(frozen=True)
class Task:
    name: str
    sections: tuple[type[Section], ...]
    run: str  # "module:function" printing results for `edgekit run`
    workload: str  # "module:function" making the timed call of `edgekit bench`
    bench_runs: int  # timed calls by default


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("classify", (ClassifySection,), "edgekit.cli:run_classify", "edgekit.bench:classify_workload", 50),
    Task("generate", (GenerateSection,), "edgekit.cli:run_generate", "edgekit.bench:generate_workload", 5),
    Task("recognize", (CtcSection, WhisperSection, SpeechSeq2SeqSection, AudioLMSection), "edgekit.cli:run_recognize",
         "edgekit.bench:recognize_workload", 5),
)}


def resolve(ref: str) -> Any:
    """The object a "module:attribute" reference names (the descriptor's lazy links)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
