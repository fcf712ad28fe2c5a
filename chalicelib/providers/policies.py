"""Each data type's sync policy: the provider's defaults, the service defaults and the operator's overrides."""

from __future__ import annotations

from chalicelib.domain.config import Settings
from chalicelib.domain.errors import NotFoundError
from chalicelib.domain.policy import SyncPolicy, resolve_policy
from chalicelib.providers import ProviderRegistry


class PolicyResolver:
    def __init__(self, registry: ProviderRegistry, settings: Settings) -> None:
        self._registry = registry
        self._settings = settings

    def data_types(self, provider: str) -> list[str]:
        return sorted(self._registry.get(provider).data_types())

    def policy(self, provider: str, data_type: str) -> SyncPolicy:
        spec = self._registry.get(provider).data_types().get(data_type)
        if spec is None:
            raise NotFoundError(f"provider {provider!r} has no data type {data_type!r}")
        return resolve_policy(
            provider,
            data_type,
            spec.policy,
            default_cooldown_seconds=self._settings.default_cooldown_seconds,
            default_max_staleness_seconds=self._settings.default_max_staleness_seconds,
            overrides=self._settings.policy_overrides,
        )
