"""Provider registry, built lazily from the providers JSON file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chalicelib.config import ConfigurationError, Settings
from chalicelib.errors import ValidationError
from chalicelib.providers.base import Provider


class ProviderRegistry:
    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)

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
    return ProviderRegistry({name: build_provider(name, cfg) for name, cfg in providers.items()})


def load_registry(settings: Settings) -> ProviderRegistry:
    path = Path(settings.providers_file)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read providers file {path}: {exc}") from exc
    return registry_from_config(config)
