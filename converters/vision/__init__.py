"""A vision-language folder's processor -> the contract's `ImageSteps`, and its vision graph's module.

One module per processor family here, each defining
    PROCESSORS: tuple[str, ...]                the transformers processor class names it reads
    steps(processor) -> ImageSteps             the saved config as the contract holds it
and, where `model.get_image_features(**feeds)` is not a graph torch.export can trace per image,
    encoder(model, steps) -> torch.nn.Module   forward(*feeds in steps.graph_inputs() order) -> (rows, hidden)
A processor no module names is refused by name: never converted into silent drift.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType
from typing import Any

from edgekit.errors import UnsupportedError


@cache
def _modules() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(f"{__name__}.{i.name}") for i in pkgutil.iter_modules(__path__))


def family_of(processor: Any) -> ModuleType:
    """The module that reads `processor` (by its class name), or a refusal naming what exists."""
    name = type(processor).__name__
    for m in _modules():
        if name in m.PROCESSORS:
            return m
    raise UnsupportedError(f"edgekit cannot reproduce the processor {name} in numpy yet", found=f"supported: {list(supported())}",
                           fix="run this model with transformers, or file an issue naming the processor")


def supported() -> tuple[str, ...]:
    """Every processor class name a module here reads."""
    return tuple(sorted(p for m in _modules() for p in m.PROCESSORS))
