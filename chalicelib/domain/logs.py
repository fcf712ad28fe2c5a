"""Logging helpers that keep secrets out of log lines."""

from __future__ import annotations

import logging
import traceback


def log_crash(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log where an unexpected exception came from, but not its message, which may quote credentials."""
    logger.error("%s: %s\n%s", what, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
