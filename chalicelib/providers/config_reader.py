"""Checking a providers-file entry's values one by one, every error naming the provider and the key.

``ConfigReader`` holds the checks every section shares (objects with known keys, text,
dotted paths, header values, integers); the section readers of ``rest_config.py``,
``pagination_config.py`` and ``data_type_config.py`` build on it, and ``snaptrade.py`` uses
it for ``for_each``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.domain.config import ConfigurationError
from chalicelib.providers.http import header_safe


class ConfigReader:
    """Validates one provider entry; every error names the provider and the key."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def fail(self, where: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"provider {self.provider!r}: {where} {problem}")

    def mapping(self, value: Any, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, "must be a JSON object")
        unknown = sorted(str(key) for key in value if key not in allowed)
        if unknown:
            raise self.fail(where, f"has unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "must be a non-empty string")
        return value

    def optional_text(self, value: Any, where: str) -> str | None:
        return None if value is None else self.text(value, where)

    def dotted_path(self, value: Any, where: str, *, allow_empty: bool = False) -> str:
        if allow_empty and (value is None or value == ""):
            return ""
        path = self.text(value, where)
        if any(not part for part in path.split(".")):
            raise self.fail(where, f"{path!r} is not a dotted path like 'data.items'")
        return path

    def optional_dotted_path(self, value: Any, where: str) -> str | None:
        return None if value is None else self.dotted_path(value, where)

    def header_value(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not header_safe(value):
            raise self.fail(where, "must be a string without line breaks, in Latin-1 (what an HTTP header carries)")
        return value

    def integer(self, value: Any, where: str, *, minimum: int, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"must be an integer >= {minimum}")
        if maximum is not None and value > maximum:
            raise self.fail(where, f"must be an integer from {minimum} to {maximum}")
        return value
