"""A TensorRT logger that forwards to `logging` and keeps the errors for the exception message."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("edgekit")


def make_logger(trt: Any) -> Any:
    """An `ILogger` whose `.errors` lists every error TensorRT reported through it."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def logged_errors(logger: Any) -> str:
    """The TensorRT errors a `make_logger` logger has seen, joined for an exception message."""
    return "; ".join(logger.errors)
