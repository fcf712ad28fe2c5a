"""Provider registry, built lazily from the providers JSON file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.config import ConfigurationError, Settings
from chalicelib.errors import ValidationError
from chalicelib.providers.base import Provider


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's limits, shared by every worker (``limits`` in the providers file)."""

    requests_per_second: float = 10.0
    burst: int = 10
    """Calls allowed at once after a quiet spell (the bucket's capacity)."""
    max_concurrent_syncs: int = 10


DEFAULT_LIMITS = ProviderLimits()
_LIMIT_KEYS = frozenset({"requests_per_second", "burst", "max_concurrent_syncs"})


def parse_limits(name: str, raw: Any) -> ProviderLimits:
    if raw is None:
        return DEFAULT_LIMITS
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"provider {name!r}: limits must be a JSON object")
    unknown = sorted(set(raw) - _LIMIT_KEYS)
    if unknown:
        raise ConfigurationError(
            f"provider {name!r}: limits has unknown key(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(_LIMIT_KEYS))})"
        )
    rps = raw.get("requests_per_second", DEFAULT_LIMITS.requests_per_second)
    if isinstance(rps, bool) or not isinstance(rps, int | float) or not 0 < rps <= 10_000:
        raise ConfigurationError(f"provider {name!r}: limits.requests_per_second must be a number above 0")
    values: dict[str, int] = {}
    for key in ("burst", "max_concurrent_syncs"):
        value = raw.get(key, getattr(DEFAULT_LIMITS, key))
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise ConfigurationError(f"provider {name!r}: limits.{key} must be a whole number from 1 to 10000")
        values[key] = value
    return ProviderLimits(requests_per_second=float(rps), **values)


class ProviderRegistry:
    def __init__(self, providers: Mapping[str, Provider], limits: Mapping[str, ProviderLimits] | None = None) -> None:
        self._providers = dict(providers)
        self._limits = dict(limits or {})

    def limits(self, name: str) -> ProviderLimits:
        return self._limits.get(name, DEFAULT_LIMITS)

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            known = ", ".join(sorted(self._providers))
            raise ValidationError(f"unknown provider {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._providers)


def build_provider(name: str, config: Mapping[str, Any]) -> Provider:
    kind = config.get("type", "rest")
    if kind == "demo":
        from chalicelib.providers.demo import DemoProvider

        return DemoProvider(name, config)
    if kind == "rest":
        from chalicelib.providers.rest import RestProvider

        return RestProvider.from_config(name, config)
    raise ConfigurationError(f"provider {name!r}: unknown type {kind!r} (expected 'demo' or 'rest')")


def registry_from_config(config: Mapping[str, Any]) -> ProviderRegistry:
    providers = config.get("providers", config)
    if not isinstance(providers, Mapping):
        raise ConfigurationError("providers config must be a JSON object of name -> provider")
    built: dict[str, Provider] = {}
    limits: dict[str, ProviderLimits] = {}
    for name, cfg in providers.items():
        if not isinstance(cfg, Mapping):
            raise ConfigurationError(f"provider {name!r}: must be a JSON object")
        own = {key: value for key, value in cfg.items() if key != "limits"}
        built[name] = build_provider(name, own)
        limits[name] = parse_limits(name, cfg.get("limits"))
    return ProviderRegistry(built, limits)


def load_registry(settings: Settings) -> ProviderRegistry:
    path = Path(settings.providers_file)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read providers file {path}: {exc}") from exc
    return registry_from_config(config)
