"""Query-string values the read and status pages accept: booleans and page limits, with clear errors."""

from __future__ import annotations

import re

from chalicelib.domain.errors import ValidationError

_DIGITS = re.compile(r"[0-9]{1,9}")
"""ASCII digits only: ``int()`` would also take fullwidth digits, " 12", "+12" and "1_2", which no client means."""

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def parse_bool(name: str, raw: str | None) -> bool:
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(f"{name} must be true or false")


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw):
        raise ValidationError(f"limit must be a whole number from 1 to {maximum}")
    value = int(raw)
    if not 1 <= value <= maximum:
        raise ValidationError(f"limit must be a whole number from 1 to {maximum}")
    return value
