"""The ``rest`` provider's configuration: what a providers-file entry may say, checked at start-up.

``RestConfigReader`` turns an entry into a ``RestProviderConfig`` or a ``ConfigurationError`` that
names the provider and the key. It reads the top level here, ``pagination`` through
``pagination_config.py`` and each data type through ``data_type_config.py``, then checks that
no two parts use the same query parameter and that nothing shadows what ``auth`` sets.

Top-level keys
--------------
- ``type``: ``"rest"`` (the default).
- ``base_url`` (required): ``http(s)://host[:port][/prefix]``; no credentials, query or
  fragment. Every call, next-page URLs included, stays on this origin and under this prefix.
- ``timeout_seconds`` (10): upper bound for one HTTP call (more than 0, at most 900), further
  cut to the fetch's own ``timeout_seconds``.
- ``max_response_bytes`` (10 MiB): an answer body larger than this fails the page (not retried).
- ``page_size`` / ``page_size_param`` (unset): send ``page_size_param=page_size`` on every
  call; give both or neither. ``offset``, ``page_number`` and ``time_window`` use ``page_size``
  to recognise a short (last) or a full page.
- ``auth`` (unset = anonymous): how calls authenticate, read by ``auth_config.py``
  (``kind``: ``header`` by default, e.g. ``{"header": "Authorization", "template":
  "Bearer {access_token}"}`` whose ``{fields}`` come from the connection's credentials).
- ``pagination`` (unset = one page per fetch): ``{"kind": ..., ...}``, see below.
- ``incremental`` (unset = ``since`` is ignored, every run is a full pull):
  ``{"request_param": ...}`` sends the last run's watermark (the newest ``updated_at_field``
  seen) on every call. Not with ``time_window``, which starts its first window at the watermark.
  For an API that filters by *event* time only (WHOOP's ``start``), add
  ``"event_time_lookback_seconds": N`` (and ``"time_format"``: ``iso8601`` by default, or
  ``epoch_ms`` / ``epoch_seconds``): an incremental run then asks for everything that happened
  in the last N seconds, catching records edited (re-scored) within that span; the periodic
  full pass catches older edits and deletions.
- ``default_headers`` (``{"Accept": "application/json"}``): merged over that default; must
  not set ``Authorization`` (nor ``auth.header``) when ``auth`` is given.
- ``rate_limit_reset_header`` (unset): the provider's own "when may I call again" header
  (e.g. ``X-RateLimit-Reset``: epoch seconds or seconds from now), honoured like ``Retry-After``.
- ``limits`` and ``webhooks`` are read by the registry, not here.
- ``data_types`` (required, non-empty): name -> data type, see below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from chalicelib.providers.auth import RequestAuth
from chalicelib.providers.auth_config import parse_auth
from chalicelib.providers.data_type_config import DataTypeConfig, DataTypeReader
from chalicelib.providers.http import DEFAULT_MAX_RESPONSE_BYTES
from chalicelib.providers.instants import EPOCH_MS, EPOCH_SECONDS, ISO8601
from chalicelib.providers.page_links import UrlScope
from chalicelib.providers.pagination_config import PaginationReader
from chalicelib.providers.pagination_kinds import Pagination, TimeWindow, request_params

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_HEADERS: Mapping[str, str] = {"Accept": "application/json"}
MAX_RESPONSE_BYTES_LIMIT = 256 * 1024 * 1024

_TOP_LEVEL_KEYS = frozenset(
    {
        "type",
        "base_url",
        "timeout_seconds",
        "max_response_bytes",
        "page_size",
        "page_size_param",
        "auth",
        "pagination",
        "incremental",
        "default_headers",
        "rate_limit_reset_header",
        "data_types",
    }
)
_INCREMENTAL_KEYS = frozenset({"request_param", "event_time_lookback_seconds", "time_format"})


@dataclass(frozen=True)
class IncrementalConfig:
    request_param: str
    event_time_lookback_seconds: int | None = None
    """Set for event-time filters: send ``now - lookback`` instead of the watermark."""
    time_format: str = ISO8601


@dataclass(frozen=True)
class RestProviderConfig:
    base_url: str
    data_types: Mapping[str, DataTypeConfig]
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    page_size: int | None = None
    page_size_param: str | None = None
    auth: RequestAuth | None = None
    pagination: Pagination | None = None
    incremental: IncrementalConfig | None = None
    default_headers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HEADERS))
    rate_limit_reset_header: str | None = None


class RestConfigReader(PaginationReader, DataTypeReader):
    """Validates one provider entry; every error names the provider and the key."""

    def base_url(self, value: Any) -> str:
        url = self.text(value, "base_url")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 -- raises ValueError for a malformed port
        except ValueError:
            raise self.fail("base_url", "has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail("base_url", "must be an absolute http(s) URL")
        if parts.username is not None or parts.password is not None:
            raise self.fail("base_url", "must not embed credentials (use 'auth')")
        if parts.query or parts.fragment:
            raise self.fail("base_url", "must not have a query string or fragment")
        return url.rstrip("/")

    def timeout(self, value: Any) -> float:
        if value is None:
            return DEFAULT_TIMEOUT_SECONDS
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 900:
            raise self.fail("timeout_seconds", "must be a number of seconds, more than 0 and at most 900")
        return float(value)

    def max_response_bytes(self, value: Any) -> int:
        if value is None:
            return DEFAULT_MAX_RESPONSE_BYTES
        return self.integer(value, "max_response_bytes", minimum=1, maximum=MAX_RESPONSE_BYTES_LIMIT)

    def auth(self, value: Any, origin: str) -> RequestAuth | None:
        if value is None:
            return None
        return parse_auth(self.provider, value, origin)

    def incremental(self, value: Any) -> IncrementalConfig | None:
        if value is None:
            return None
        raw = self.mapping(value, "incremental", _INCREMENTAL_KEYS)
        lookback = raw.get("event_time_lookback_seconds")
        if lookback is not None:
            lookback = self.integer(lookback, "incremental.event_time_lookback_seconds", minimum=60)
        time_format = raw.get("time_format", ISO8601)
        if time_format not in (ISO8601, EPOCH_MS, EPOCH_SECONDS):
            raise self.fail("incremental.time_format", "must be iso8601, epoch_ms or epoch_seconds")
        if "time_format" in raw and lookback is None:
            raise self.fail("incremental.time_format", "only goes with event_time_lookback_seconds")
        return IncrementalConfig(
            request_param=self.text(raw.get("request_param"), "incremental.request_param"),
            event_time_lookback_seconds=lookback,
            time_format=time_format,
        )

    def headers(self, value: Any) -> dict[str, str]:
        headers = dict(DEFAULT_HEADERS)
        if value is None:
            return headers
        if not isinstance(value, Mapping):
            raise self.fail("default_headers", "must be a JSON object of header name -> value")
        for name, header_value in value.items():
            self.text(name, "default_headers key")
            headers[name] = self.header_value(header_value, f"default_headers.{name}")
        return headers

    def read(self, config: Any) -> RestProviderConfig:
        raw = self.mapping(config, "config", _TOP_LEVEL_KEYS)
        kind = raw.get("type", "rest")
        if kind != "rest":
            raise self.fail("type", f"must be 'rest', got {kind!r}")
        page_size_param = self.optional_text(raw.get("page_size_param"), "page_size_param")
        page_size = raw.get("page_size")
        if page_size is not None:
            page_size = self.integer(page_size, "page_size", minimum=1)
        if (page_size is None) != (page_size_param is None):
            raise self.fail("page_size", "and page_size_param must be given together")
        types_raw = raw.get("data_types")
        if not isinstance(types_raw, Mapping) or not types_raw:
            raise self.fail("data_types", "must be a non-empty JSON object of data type name -> settings")
        base_url = self.base_url(raw.get("base_url"))
        auth = self.auth(raw.get("auth"), UrlScope.of(base_url).origin)
        parsed = RestProviderConfig(
            base_url=base_url,
            data_types={name: self.data_type(name, spec) for name, spec in types_raw.items()},
            timeout_seconds=self.timeout(raw.get("timeout_seconds")),
            max_response_bytes=self.max_response_bytes(raw.get("max_response_bytes")),
            page_size=page_size,
            page_size_param=page_size_param,
            auth=auth,
            pagination=self.pagination(raw.get("pagination")),
            incremental=self.incremental(raw.get("incremental")),
            default_headers=self.headers(raw.get("default_headers")),
            rate_limit_reset_header=self.optional_text(raw.get("rate_limit_reset_header"), "rate_limit_reset_header"),
        )
        self.check_clashes(parsed, auth)
        return parsed

    def check_clashes(self, parsed: RestProviderConfig, auth: RequestAuth | None) -> None:
        pagination = parsed.pagination
        if isinstance(pagination, TimeWindow):
            if parsed.incremental is not None:
                raise self.fail("incremental", "cannot be used with a time_window (its first window starts at since)")
            if pagination.record_time_field is not None and parsed.page_size is None:
                raise self.fail("pagination.record_time_field", "needs page_size (a full page is what it narrows)")
        seen: dict[str, str] = {}
        for key, param in _shared_params(parsed):
            if param is None:
                continue
            if param in seen:
                raise self.fail(key, f"uses the query parameter {param!r} already used by {seen[param]}")
            seen[param] = key
        for spec in parsed.data_types.values():
            own = dict(seen)
            for key, param in _data_type_params(spec):
                if param in own:
                    raise self.fail(key, f"uses the query parameter {param!r} already used by {own[param]}")
                own[param] = key
        if auth is not None:
            self.check_auth_clashes(parsed, auth)

    def check_auth_clashes(self, parsed: RestProviderConfig, auth: RequestAuth) -> None:
        """Credentials travel only through ``auth``: no default header or query parameter may shadow it."""
        # Optional attributes of the auth kinds (not part of the RequestAuth protocol).
        managed = {name.lower() for name in getattr(auth, "managed_headers", ("Authorization",))}
        clash = sorted(name for name in parsed.default_headers if name.lower() in managed)
        if clash:
            raise self.fail("default_headers", f"must not set the auth header {clash[0]!r}")
        reserved = set(getattr(auth, "reserved_query_params", ()))
        used = _shared_params(parsed)
        for spec in parsed.data_types.values():
            used.extend(_data_type_params(spec))
        for key, param in used:
            if param is not None and param in reserved:
                raise self.fail(key, f"uses the query parameter {param!r} that auth signs or sets")


def _shared_params(parsed: RestProviderConfig) -> list[tuple[str, str | None]]:
    """(config key, query parameter) for the parameters every data type's calls may carry."""
    params: list[tuple[str, str | None]] = [("page_size_param", parsed.page_size_param)]
    params.extend(("pagination", param) for param in request_params(parsed.pagination))
    params.append(("incremental.request_param", parsed.incremental.request_param if parsed.incremental else None))
    return params


def _data_type_params(spec: DataTypeConfig) -> list[tuple[str, str]]:
    """(config key, query parameter) for the parameters one data type declares, in declaration order."""
    declared = [(f"data_types.{spec.name}.query", name) for name, _ in spec.query]
    declared += [(f"data_types.{spec.name}.settings_query", name) for name, _ in spec.settings_query]
    return declared
