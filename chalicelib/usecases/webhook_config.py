"""A provider's webhook configuration: its entry in the providers file, validated strictly.

Configuration lives in the provider's entry of the providers file::

    "webhooks": {
      "scheme": "whoop",
      "secret_env": "WHOOP_CLIENT_SECRET",
      "user_id_field": "user_id",
      "event_type_field": "type",
      "events": {"recovery.updated": "recovery", "workout.updated": ["workout", "cycle"]},
      "tolerance_seconds": 300
    }

``events`` maps a provider event type to the data type(s) it changes; any other
event type is acknowledged and ignored. The secret is read from the named
environment variable when a webhook arrives (deployment configuration, never a
connection's credentials).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib.domain.config import ConfigurationError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class WebhookScheme(StrEnum):
    WHOOP = "whoop"


@dataclass(frozen=True)
class WebhookConfig:
    provider: str
    scheme: WebhookScheme
    secret_env: str
    """Name of the environment variable holding the signing secret (never the secret itself)."""
    user_id_field: str
    event_type_field: str
    events: Mapping[str, tuple[str, ...]]
    """Event type -> the data types it changes."""
    tolerance_seconds: int
    """How far the signed timestamp may be from our clock, either way, before it is a replay (or a skew)."""


_CONFIG_KEYS = frozenset({"scheme", "secret_env", "user_id_field", "event_type_field", "events", "tolerance_seconds"})
_DEFAULT_TOLERANCE_SECONDS = 300
_MAX_TOLERANCE_SECONDS = 3600


def config_error(provider: str, key: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"provider {provider!r}: webhooks.{key} {problem}")


def _field_name(provider: str, raw: Mapping[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise config_error(provider, key, "must be a non-empty string")
    return value


def _event_data_types(provider: str, event: str, value: Any, data_types: Collection[str]) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise config_error(provider, f"events[{event!r}]", "must be a data type or a non-empty list of data types")
    unknown = sorted(set(names) - set(data_types))
    if unknown:
        raise config_error(
            provider,
            f"events[{event!r}]",
            f"names unknown data type(s) {', '.join(unknown)} (the provider has: {', '.join(sorted(data_types))})",
        )
    return tuple(dict.fromkeys(names))  # keep the order, drop repeats


def parse_webhook_config(provider: str, raw: Mapping[str, Any], data_types: Collection[str]) -> WebhookConfig:
    """Validate a provider's ``webhooks`` entry strictly; ``ConfigurationError`` names the provider and key."""
    unknown = sorted(set(raw) - _CONFIG_KEYS)
    if unknown:
        raise config_error(provider, unknown[0], f"is not a known key (known: {', '.join(sorted(_CONFIG_KEYS))})")
    try:
        scheme = WebhookScheme(str(raw.get("scheme")))
    except ValueError:
        known = ", ".join(s.value for s in WebhookScheme)
        raise config_error(provider, "scheme", f"must be one of: {known}") from None
    secret_env = raw.get("secret_env")
    if not isinstance(secret_env, str) or not _ENV_NAME.match(secret_env):
        raise config_error(provider, "secret_env", "must name an environment variable (letters, digits, _)")
    events = raw.get("events")
    if not isinstance(events, Mapping) or not events:
        raise config_error(provider, "events", "must be a non-empty object of event type -> data type(s)")
    parsed_events: dict[str, tuple[str, ...]] = {}
    for event, value in events.items():
        if not isinstance(event, str) or not event:
            raise config_error(provider, "events", "has an empty event type")
        parsed_events[event] = _event_data_types(provider, event, value, data_types)
    tolerance = raw.get("tolerance_seconds", _DEFAULT_TOLERANCE_SECONDS)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 1 <= tolerance <= _MAX_TOLERANCE_SECONDS:
        raise config_error(provider, "tolerance_seconds", f"must be a whole number from 1 to {_MAX_TOLERANCE_SECONDS}")
    return WebhookConfig(
        provider=provider,
        scheme=scheme,
        secret_env=secret_env,
        user_id_field=_field_name(provider, raw, "user_id_field", "user_id"),
        event_type_field=_field_name(provider, raw, "event_type_field", "type"),
        events=parsed_events,
        tolerance_seconds=tolerance,
    )


def read_secret(config: WebhookConfig, environ: Mapping[str, str]) -> str:
    """The signing secret from the deployment's environment; a missing one is a misconfiguration (500)."""
    secret = environ.get(config.secret_env, "")
    if not secret:
        raise config_error(config.provider, "secret_env", f"names {config.secret_env}, which is not set")
    return secret
