"""The ``demo`` provider: offline and deterministic, for the local run and the tests.

Every value is derived from a hash of (connection, data type, day), so the same
inputs always give the same pages. Settings let a connection show each tier and
the error paths:

- ``latency_seconds`` (0, at most 15): time one page takes (passed through the injected sleeper)
- ``failure_rate`` (0 to 1): share of page fetches that fail, decided by a hash of the
  fetch's inputs and the current minute (1 fails every fetch)
- ``invalid_credentials`` (false): every fetch answers like a provider's 401
- ``records`` (30, at most 1000): days of history per data type; ``page_size`` (10, 1 to 1000);
  at most 20 pages per data type

The bounds keep one connection's sync short (at most 20 pages of at most 15 s): the demo shares its
concurrent slots with every other user's, so a setting must not let one connection hold a slot for long.
A setting out of bounds is refused when the connection is saved (a 400).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import (
    DataTypeSpec,
    FetchRequest,
    Page,
    PolicyDefaults,
    ProviderAuthError,
    ProviderError,
    ProviderTimeoutError,
    UpstreamRecord,
)

_FIELDS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "recovery": (("recovery_score", 1, 100), ("resting_heart_rate", 42, 70), ("hrv_rmssd_milli", 20, 140)),
    "sleep": (("sleep_performance", 40, 100), ("total_sleep_minutes", 300, 560), ("disturbances", 0, 20)),
    "cycle": (("strain", 2, 21), ("kilojoules", 6000, 16000), ("average_heart_rate", 55, 95)),
    "workout": (("strain", 1, 21), ("duration_minutes", 15, 120), ("max_heart_rate", 120, 195)),
}


_SETTINGS = frozenset({"latency_seconds", "failure_rate", "invalid_credentials", "records", "page_size"})
MAX_LATENCY_SECONDS = 15
MAX_RECORDS = 1000
MAX_PAGE_SIZE = 1000
MAX_PAGES = 20


def _unit(*parts: object) -> float:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _number(setting: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = setting.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValidationError(f"demo setting {name} must be a number from {low} to {high}")
    return float(value)


def _whole(setting: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = setting.get(name, default)
    # The range first: NaN and infinity fail it before ``int`` could be asked to convert them.
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high or value != int(value):
        raise ValidationError(f"demo setting {name} must be a whole number from {low} to {high}")
    return int(value)


class DemoProvider:
    def __init__(self, name: str = "demo", config: Mapping[str, Any] | None = None) -> None:
        self.name = name
        policies = (config or {}).get("policies", {})
        self._types = {
            data_type: DataTypeSpec(data_type, PolicyDefaults(**policies.get(data_type, {}))) for data_type in _FIELDS
        }

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return self._types

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            raise ValidationError(
                f"unknown demo setting(s) {', '.join(unknown)} (known: {', '.join(sorted(_SETTINGS))})"
            )
        if not isinstance(settings.get("invalid_credentials", False), bool):
            raise ValidationError("demo setting invalid_credentials must be true or false")
        _number(settings, "latency_seconds", 0, 0, MAX_LATENCY_SECONDS)
        _number(settings, "failure_rate", 0, 0, 1)
        records = _whole(settings, "records", 30, 0, MAX_RECORDS)
        page_size = _whole(settings, "page_size", 10, 1, MAX_PAGE_SIZE)
        if -(-records // page_size) > MAX_PAGES:
            raise ValidationError(
                f"demo settings records and page_size make {-(-records // page_size)} pages; "
                f"at most {MAX_PAGES} (raise page_size or lower records)"
            )

    def fetch_page(self, request: FetchRequest) -> Page:
        settings = request.settings
        latency = float(settings.get("latency_seconds", 0))
        if latency > request.timeout_seconds:
            request.sleep(request.timeout_seconds)
            raise ProviderTimeoutError(f"demo provider timed out after {request.timeout_seconds:.1f}s")
        if latency:
            request.sleep(latency)
        if settings.get("invalid_credentials"):
            raise ProviderAuthError("demo provider rejected the credentials (401)", status_code=401)
        failure_rate = float(settings.get("failure_rate", 0))
        minute = int(request.now_epoch // 60)
        if failure_rate and _unit(request.connection_id, request.data_type, request.page_token, minute) < failure_rate:
            raise ProviderError("demo provider failed (simulated 503 Service Unavailable)", status_code=503)

        all_records = self._records(request)
        if request.since is not None:
            all_records = [r for r in all_records if (r.updated_at or "") > request.since]
        page_size = int(settings.get("page_size", 10))
        offset = int(request.page_token or 0)
        chunk = all_records[offset : offset + page_size]
        more = offset + page_size < len(all_records)
        return Page(records=chunk, next_page_token=str(offset + page_size) if more else None)

    def _records(self, request: FetchRequest) -> list[UpstreamRecord]:
        now = datetime.fromtimestamp(request.now_epoch, tz=UTC)
        today = now.date()
        fields = _FIELDS[request.data_type]
        out: list[UpstreamRecord] = []
        for age in range(int(request.settings.get("records", 30))):
            day = today - timedelta(days=age)
            # Today's record keeps changing through the day, like a live tracker.
            version = now.strftime("%H") if age == 0 else "final"
            data: dict[str, Any] = {"date": day.isoformat()}
            for field_name, low, high in fields:
                data[field_name] = low + int(
                    _unit(request.connection_id, request.data_type, day, version, field_name) * (high - low + 1)
                )
            if age == 0:
                updated = now.replace(minute=0, second=0, microsecond=0)
            else:
                updated = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            out.append(
                UpstreamRecord(
                    record_id=f"{request.data_type}-{day.isoformat()}",
                    data=data,
                    updated_at=updated.isoformat().replace("+00:00", "Z"),
                )
            )
        return out
