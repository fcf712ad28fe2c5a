"""Instants as providers write them: epoch seconds, epoch milliseconds or ISO 8601 text.

Pure conversions to and from epoch milliseconds, shared by time windows, incremental
watermarks and signers that stamp a request (OKX).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Final

EPOCH_MS: Final = "epoch_ms"
EPOCH_SECONDS: Final = "epoch_seconds"
ISO8601: Final = "iso8601"
TIME_FORMATS: Final = (EPOCH_MS, EPOCH_SECONDS, ISO8601)

_NUMBER: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# Epoch numbers above this are milliseconds (1973 in ms, year 5138 in seconds).
_MILLISECONDS_THRESHOLD: Final = 100_000_000_000


def parse_instant(value: Any) -> int | None:
    """An instant as epoch milliseconds: epoch seconds or milliseconds (told apart by size),
    as a number or numeric text, or ISO 8601 text (UTC when it has no offset). ``None`` if unusable."""
    number: float
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            number = float(text)
        else:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return math.floor(moment.timestamp() * 1000)
    else:
        return None
    if not math.isfinite(number):
        return None
    return math.floor(number if abs(number) >= _MILLISECONDS_THRESHOLD else number * 1000)


def format_instant(epoch_ms: int, time_format: str) -> str:
    """An instant as a time window sends it: epoch ms, epoch seconds, or ISO 8601 UTC with milliseconds."""
    if time_format == EPOCH_SECONDS:
        return str(epoch_ms // 1000)
    if time_format == ISO8601:
        seconds, millis = divmod(epoch_ms, 1000)
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
    return str(epoch_ms)


def resolution_ms(time_format: str) -> int:
    """The smallest step a time format can express; windows are aligned to it."""
    return 1000 if time_format == EPOCH_SECONDS else 1
