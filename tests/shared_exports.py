"""Source exports shared by a test run: a source's float graphs exported once, for its converts at every
precision (each is edgekit.convert less the export, which no precision reads: converters/pipeline.py)."""
from __future__ import annotations

import atexit
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.converters.pipeline import ExportedSource

EXPORTS = contextlib.ExitStack()
atexit.register(EXPORTS.close)  # the export folders go when the run ends


def exported_once(source: Any, **source_kwargs: Any) -> ExportedSource:
    """`source` exported into a folder that lives until the run ends (callers cache what this returns)."""
    from edgekit.converters.pipeline import exported

    return EXPORTS.enter_context(exported(source, **source_kwargs))
