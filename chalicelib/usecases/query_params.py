"""Query-string values the read and status pages accept: booleans and page limits, with clear errors."""

from __future__ import annotations

from chalicelib.domain.errors import ValidationError

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
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"limit must be a whole number from 1 to {maximum}") from None
    if not 1 <= value <= maximum:
        raise ValidationError(f"limit must be a whole number from 1 to {maximum}")
    return value
