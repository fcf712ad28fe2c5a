"""Reading a provider's JSON answer by dotted path: where records, ids, stamps and cursors live."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What ``dig`` returns when a step of the path is absent (distinct from a JSON ``null``)."""


def dig(document: Any, path: str) -> Any:
    """Follow a dotted path (``data.items``, ``results.0.id``); ``MISSING`` when any step is absent."""
    if not path:
        return document
    current = document
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def scalar_text(value: Any) -> str | None:
    """A JSON scalar as text; ``None`` for null, booleans, empty strings and non-scalars."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    return text or None
