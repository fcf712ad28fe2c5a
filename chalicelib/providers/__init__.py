"""Provider registry, built lazily from the providers JSON file."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from chalicelib.domain.config import ConfigurationError, Settings
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.limits import RateWindow, default_burst
from chalicelib.providers.base import Provider
from chalicelib.providers.config_reader import ConfigReader


class LimitScope(StrEnum):
    """Whose limit a provider's windows are."""

    PROVIDER = "provider"
    """The app's own limit (its client id, its IP): shared by every user's connections."""
    CONNECTION = "connection"
    """Each connection's own API key has its own limit (e.g. a user's exchange key)."""


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's limits, shared by every worker (``limits`` in the providers file).

    Either ``windows`` (each ``{"requests", "per_seconds"}`` plus optional ``burst`` and feedback
    headers, see ``RateWindow``) or the older ``requests_per_second`` + ``burst`` (one bucket).
    """

    windows: tuple[RateWindow, ...] = (RateWindow.per_second(10.0, 10),)
    """A call needs room in every one of them."""
    max_concurrent_syncs: int = 10
    scope: LimitScope = LimitScope.PROVIDER
    calls_per_sync: float = 1.0
    """About how many calls one scheduled sync makes (pages, retries): the tick plans with it."""

    @property
    def smallest_burst(self) -> float:
        """The heaviest call that fits every window at once."""
        return min(w.capacity for w in self.windows)


DEFAULT_LIMITS = ProviderLimits()
_LIMIT_KEYS = frozenset({"windows", "requests_per_second", "burst", "max_concurrent_syncs", "scope", "calls_per_sync"})
_WINDOW_KEYS = frozenset(
    {"requests", "per_seconds", "burst", "remaining_header", "used_header", "reset_header", "limit_header"}
)
_HEADER_KEYS = ("remaining_header", "used_header", "reset_header", "limit_header")
_MAX_WINDOWS = 8
_MAX_WINDOW_SECONDS = 31 * 86_400
_MAX_REQUESTS = 1_000_000_000
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def _whole(value: Any, low: int, high: int) -> int | None:
    """``value`` if it is a whole number in [low, high] (JSON ``true`` is not a number), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _positive(value: Any, high: float) -> float | None:
    """``value`` as a float if it is a number in (0, high], else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        return None
    return float(value)


def _parse_window(name: str, index: int, raw: Any) -> RateWindow:
    where = f"provider {name!r}: limits.windows[{index}]"
    raw = ConfigReader(name).mapping(raw, f"limits.windows[{index}]", _WINDOW_KEYS)
    requests = _whole(raw.get("requests"), 1, _MAX_REQUESTS)
    if requests is None:
        raise ConfigurationError(f"{where}.requests must be a whole number from 1 to {_MAX_REQUESTS}")
    per_seconds = _positive(raw.get("per_seconds"), _MAX_WINDOW_SECONDS)
    if per_seconds is None:
        raise ConfigurationError(f"{where}.per_seconds must be a number above 0, at most {_MAX_WINDOW_SECONDS}")
    top = max(1, requests - 1)  # the rest of the window is what refills; a one-request window is all burst
    burst = _whole(raw.get("burst", default_burst(requests)), 1, top)
    if burst is None:
        raise ConfigurationError(f"{where}.burst must be a whole number from 1 to {top} (below requests)")
    headers: dict[str, str | None] = {}
    for key in _HEADER_KEYS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not _HEADER_NAME.match(value)):
            raise ConfigurationError(f"{where}.{key} must be an HTTP header name")
        headers[key] = value.lower() if isinstance(value, str) else None
    if headers["reset_header"] and not (headers["remaining_header"] or headers["used_header"]):
        raise ConfigurationError(f"{where}.reset_header needs a remaining_header or used_header to go with")
    return RateWindow(
        requests=float(requests),
        per_seconds=per_seconds,
        burst=float(burst),
        remaining_header=headers["remaining_header"],
        used_header=headers["used_header"],
        reset_header=headers["reset_header"],
        limit_header=headers["limit_header"],
    )


def parse_limits(name: str, raw: Any) -> ProviderLimits:
    if raw is None:
        return DEFAULT_LIMITS
    raw = ConfigReader(name).mapping(raw, "limits", _LIMIT_KEYS)
    if "windows" in raw:
        if "requests_per_second" in raw or "burst" in raw:
            raise ConfigurationError(
                f"provider {name!r}: limits takes either windows or requests_per_second/burst, not both"
            )
        listed = raw["windows"]
        if not isinstance(listed, list) or not 1 <= len(listed) <= _MAX_WINDOWS:
            raise ConfigurationError(f"provider {name!r}: limits.windows must be a list of 1 to {_MAX_WINDOWS}")
        windows = tuple(_parse_window(name, index, window) for index, window in enumerate(listed))
        if len({w.key for w in windows}) != len(windows):
            raise ConfigurationError(f"provider {name!r}: limits.windows lists the same window twice")
    else:
        rps = _positive(raw.get("requests_per_second", DEFAULT_LIMITS.windows[0].refill_per_second), 10_000)
        if rps is None:
            raise ConfigurationError(f"provider {name!r}: limits.requests_per_second must be a number above 0")
        burst = _whole(raw.get("burst", int(DEFAULT_LIMITS.windows[0].burst)), 1, 10_000)
        if burst is None:
            raise ConfigurationError(f"provider {name!r}: limits.burst must be a whole number from 1 to 10000")
        windows = (RateWindow.per_second(rps, burst),)
    slots = _whole(raw.get("max_concurrent_syncs", DEFAULT_LIMITS.max_concurrent_syncs), 1, 10_000)
    if slots is None:
        raise ConfigurationError(
            f"provider {name!r}: limits.max_concurrent_syncs must be a whole number from 1 to 10000"
        )
    scope = raw.get("scope", LimitScope.PROVIDER.value)
    if not isinstance(scope, str) or scope not in {s.value for s in LimitScope}:
        raise ConfigurationError(f"provider {name!r}: limits.scope must be 'provider' or 'connection'")
    calls = _positive(raw.get("calls_per_sync", DEFAULT_LIMITS.calls_per_sync), 10_000)
    if calls is None or calls < 1:
        raise ConfigurationError(f"provider {name!r}: limits.calls_per_sync must be a number from 1 to 10000")
    return ProviderLimits(windows=windows, max_concurrent_syncs=slots, scope=LimitScope(scope), calls_per_sync=calls)


def check_weights(name: str, limits: ProviderLimits, weights: Mapping[str, int]) -> None:
    """Every data type's call weight must fit each window's burst, or its calls could exceed the window."""
    for data_type, weight in sorted(weights.items()):
        if weight > limits.smallest_burst:
            raise ConfigurationError(
                f"provider {name!r}: data type {data_type!r} weighs {weight}, more than the smallest "
                f"window burst ({limits.smallest_burst:g}); raise that window's burst"
            )


class ProviderRegistry:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        limits: Mapping[str, ProviderLimits] | None = None,
        webhooks: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._limits = dict(limits or {})
        self._webhooks = dict(webhooks or {})

    def webhook_config(self, name: str) -> Mapping[str, Any] | None:
        """The provider's raw ``webhooks`` entry from the providers file (``None`` when it takes none).

        Validated by the webhook receiver on its first use for this provider (see ``webhooks.py``)."""
        return self._webhooks.get(name)

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


_REGISTRY_KEYS = frozenset({"limits", "webhooks"})
"""Keys of a provider entry read here, not by the provider itself."""


def build_provider(name: str, config: Mapping[str, Any]) -> Provider:
    kind = config.get("type", "rest")
    if kind == "demo":
        from chalicelib.providers.demo import DemoProvider

        return DemoProvider(name, config)
    if kind == "rest":
        from chalicelib.providers.rest import RestProvider

        return RestProvider.from_config(name, config)
    if kind == "binance":
        from chalicelib.providers.binance import BinanceProvider

        return BinanceProvider.from_config(name, config)
    if kind == "snaptrade":
        from chalicelib.providers.snaptrade import SnapTradeProvider

        return SnapTradeProvider.from_config(name, config)
    raise ConfigurationError(
        f"provider {name!r}: unknown type {kind!r} (expected 'demo', 'rest', 'binance' or 'snaptrade')"
    )


def registry_from_config(config: Mapping[str, Any], *, demo: bool = True) -> ProviderRegistry:
    """The registry of a providers config; ``demo=False`` leaves its ``type: demo`` providers out (a PUT naming
    one is refused as an unknown provider): ``load_registry`` passes ``Settings.demo_provider``."""
    providers = config.get("providers", config)
    if not isinstance(providers, Mapping):
        raise ConfigurationError("providers config must be a JSON object of name -> provider")
    built: dict[str, Provider] = {}
    limits: dict[str, ProviderLimits] = {}
    webhooks: dict[str, Mapping[str, Any]] = {}
    for name, cfg in providers.items():
        if not isinstance(cfg, Mapping):
            raise ConfigurationError(f"provider {name!r}: must be a JSON object")
        if cfg.get("type") == "demo" and not demo:
            continue
        own = {key: value for key, value in cfg.items() if key not in _REGISTRY_KEYS}
        built[name] = build_provider(name, own)
        limits[name] = parse_limits(name, cfg.get("limits"))
        check_weights(name, limits[name], {t: spec.weight for t, spec in built[name].data_types().items()})
        if cfg.get("webhooks") is not None:
            if not isinstance(cfg["webhooks"], Mapping):
                raise ConfigurationError(f"provider {name!r}: webhooks must be a JSON object")
            webhooks[name] = cfg["webhooks"]
    return ProviderRegistry(built, limits, webhooks)


def load_registry(settings: Settings) -> ProviderRegistry:
    path = Path(settings.providers_file)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read providers file {path}: {exc}") from exc
    return registry_from_config(config, demo=settings.demo_provider)
