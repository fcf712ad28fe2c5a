"""Typed request parsing: a request's JSON body becomes the use case's value, or a 400.

Only the shape of the body is checked here (types, allowed values, sizes); what depends on
stored state (does the provider or the data type exist, is the connection active) stays with
the use case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chalice.app import Request

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.model import ConnectionStatus, validate_id
from chalicelib.usecases.connections import KEEP, ConnectionChange, Keep, SettableStatus
from chalicelib.usecases.manual_sync import SyncRequest

MAX_BODY_BYTES = 65_536
MAX_CONNECTION_FIELD_BYTES = 16_384
"""The most JSON a connection's credentials, or its settings, may take."""
_SETTABLE_STATUSES: dict[Any, SettableStatus] = {
    ConnectionStatus.ACTIVE.value: ConnectionStatus.ACTIVE,
    ConnectionStatus.PAUSED.value: ConnectionStatus.PAUSED,
}
"""NEEDS_REVIEW is set by the sync when the provider refuses the credentials, never by a client."""
CONNECTION_FIELDS = ("provider", "status", "reset_data", "credentials", "settings", "provider_user_id")
SYNC_FIELDS = ("wait", "data_type")
"""The top-level fields each body may carry; any other is a 400 (a typo must not be silently ignored)."""


def json_body(request: Request) -> Any:
    """The parsed body, or ``None`` when empty; malformed JSON is a 400, not a 500.

    Parsed from the raw bytes whatever the Content-Type says, so a client that
    forgets the header is not silently treated as having sent nothing.
    """
    raw = request.raw_body
    if not raw:
        return None
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(f"request body must be at most {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("request body is not valid JSON") from None


def _object(body: Any, name: str) -> Mapping[str, Any]:
    """A JSON object; ``null`` (or no body at all) reads as an empty one."""
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise ValidationError(f"{name} must be a JSON object")
    return body


def _only(payload: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(name) for name in payload if name not in allowed)
    if unknown:
        listed = ", ".join(repr(name[:64]) for name in unknown[:5])
        accepted = f"it accepts {', '.join(allowed)}" if allowed else "this route takes no body"
        raise ValidationError(f"unknown field(s) {listed}; {accepted}")


def no_fields(body: Any) -> None:
    """A route that takes no body: nothing, ``null`` or ``{}`` only."""
    _only(_object(body, "request body"), ())


def _bool(payload: Mapping[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false")
    return value


def _provider_user_id(value: Any) -> str | None:
    """The account's id at the provider (webhooks name it): safe characters, or a whole number; null clears it."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValidationError("provider_user_id must be a string or a whole number")
    return validate_id("provider_user_id", value)


def _object_or_keep(payload: Mapping[str, Any], name: str) -> Mapping[str, Any] | Keep:
    return _object(payload[name], name) if name in payload else KEEP


def connection_change(body: Any) -> ConnectionChange:
    """``PUT .../connections/{connection_id}``: provider (required), status, reset_data, credentials, settings,
    provider_user_id. A field left out keeps what is stored."""
    payload = _object(body, "request body")
    _only(payload, CONNECTION_FIELDS)
    provider = payload.get("provider")
    if not isinstance(provider, str) or not provider:
        raise ValidationError("provider is required")
    status = _SETTABLE_STATUSES.get(payload.get("status", ConnectionStatus.ACTIVE.value))
    if status is None:
        raise ValidationError("status may be ACTIVE or PAUSED")
    reset_data = _bool(payload, "reset_data")
    credentials = _object_or_keep(payload, "credentials")
    settings = _object_or_keep(payload, "settings")
    provider_user_id = _provider_user_id(payload["provider_user_id"]) if "provider_user_id" in payload else KEEP
    for name, value in (("credentials", credentials), ("settings", settings)):
        if value is not KEEP and len(json.dumps(value, default=str)) > MAX_CONNECTION_FIELD_BYTES:
            raise ValidationError(f"{name} must be at most {MAX_CONNECTION_FIELD_BYTES} bytes of JSON")
    return ConnectionChange(
        provider=provider,
        status=status,
        reset_data=reset_data,
        credentials=credentials,
        settings=settings,
        provider_user_id=provider_user_id,
    )


def sync_request(body: Any) -> SyncRequest:
    """``POST .../sync``: ``wait`` (true or false) and ``data_type`` (one, or all when left out)."""
    payload = _object(body, "request body")
    _only(payload, SYNC_FIELDS)
    wait = _bool(payload, "wait")
    data_type = payload.get("data_type")
    if data_type is not None and not isinstance(data_type, str):
        raise ValidationError("data_type must be a string")
    return SyncRequest(wait=wait, data_type=data_type)
