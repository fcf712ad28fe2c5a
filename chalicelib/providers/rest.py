"""The ``rest`` provider: any paginated JSON-over-HTTP API, described declaratively.

A provider entry in the providers file says where the API lives, how to authenticate,
how it paginates and filters incrementally, and, per data type, which endpoint to call
and where the records, their ids and stamps live in the JSON answer. This docstring is
the reference for every key.

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
- ``auth`` (unset = anonymous): how calls authenticate, parsed by ``providers/auth.py``
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

Pagination kinds (``pagination.kind``)
--------------------------------------
- ``body_cursor`` (the default when ``kind`` is absent): ``response_field`` (dotted path to
  the next cursor in the body; missing, null or empty = last page) and ``request_param``.
- ``header_cursor``: ``response_header`` (the header holding the next cursor) and ``request_param``.
- ``next_url``: ``response_field`` holds the next page's URL (absolute, or relative to the
  page's URL); it is called exactly as given, the data type's parameters are not added again.
- ``link_header``: the RFC 8288 ``Link`` header's ``rel="next"`` target, called as given.
- ``offset``: ``offset_param`` (0 on the first call, then advanced by the records received);
  the pass ends on an empty page or one shorter than ``page_size``.
- ``page_number``: ``page_param`` and ``first_page`` (1); ends like ``offset``.
- ``time_window``: ``start_param``, ``end_param``, ``window_seconds`` (at most one window
  per call, e.g. Binance's 24 h), ``initial_lookback_seconds`` (how far back a full pass
  starts), ``time_format`` (``epoch_ms`` default, ``epoch_seconds``, ``iso8601``) and
  optional ``record_time_field``: when a window returns a full page (``page_size`` records),
  the next window starts just after the newest record's time instead of at the window's
  end (without it, a full window's remainder is skipped). An incremental run's first
  window starts at the watermark. The pass ends when the next window would start at ``now``.

A next-page URL that leaves the origin (scheme, host, port, userinfo) or ``base_url``'s
path prefix fails the page, naming the pagination kind, never the URL. A page token that
comes back unchanged is a loop and fails the page too.

Data type keys
--------------
- ``path`` (required): from ``base_url`` on, starting with ``/``, no query or fragment.
  ``{name}`` placeholders are filled from the connection's ``settings`` (URL-quoted).
- ``method`` (``GET``): ``GET`` or ``POST`` (parameters always travel in the query string).
- ``query`` (``{}``): static query parameters, e.g. ``{"omitZeroBalances": "true"}``.
- ``settings_query`` (``{}``): query parameter -> settings field, e.g. ``{"symbol": "symbol"}``.
- ``records_path`` (``""`` = the body is the list): dotted path to the list of records.
- ``id_field`` (``"id"``), ``updated_at_field`` (null), ``deleted_field`` (null): dotted paths
  inside a record; a truthy ``deleted_field`` marks a tombstone.
- ``weight`` (1): what one call costs against the provider's rate windows (Binance weight).
- ``policy`` (``{}``): ``cooldown_seconds``, ``max_staleness_seconds``, ``schedule_every_seconds``.

Settings named by ``path`` placeholders and ``settings_query`` are required when a
connection is created (non-empty text or number, not ``.`` or ``..``).

Behaviour
---------
Unknown keys are rejected so that a typo fails at start-up, not as a silent misbehaviour.
Calls go through ``providers.http.send``: redirects are never followed (a 3xx is an upstream
error), bodies are bounded and every call has a timeout. The query string is sent exactly
as built (and signed, when the auth kind signs). A record that is not a JSON object or has
no usable id is skipped (``Page.skipped``), never failing the rest of the page. The answer's
headers (lower-cased) travel on ``Page.response_headers`` and on every error raised for an
answer, so the engine sees rate-limit feedback. Credentials never appear in an exception
message: errors name the provider, the data type, the HTTP status and a config field,
nothing else (no headers, no URL, no response body).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from chalicelib.config import ConfigurationError
from chalicelib.errors import ValidationError
from chalicelib.providers import auth as auth_module
from chalicelib.providers import pagination as paging
from chalicelib.providers.auth import OutgoingRequest, RequestAuth
from chalicelib.providers.base import (
    DataTypeSpec,
    FetchRequest,
    Page,
    PolicyDefaults,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    SkippedRecord,
    UpstreamRecord,
)
from chalicelib.providers.http import DEFAULT_MAX_RESPONSE_BYTES, HttpAnswer, header_safe, send
from chalicelib.providers.pagination import MISSING, Pagination, PaginationError, UrlScope, dig, scalar_text
from chalicelib.retry import parse_reset_header, parse_retry_after

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_HEADERS: Mapping[str, str] = {"Accept": "application/json"}
DEFAULT_ID_FIELD = "id"
MAX_RESPONSE_BYTES_LIMIT = 256 * 1024 * 1024
MAX_WEIGHT = 10_000
MAX_SETTING_LENGTH = 256
METHODS = ("GET", "POST")
# Binance answers 418 to an IP banned for ignoring 429s, with Retry-After: the same "wait" signal.
_RATE_LIMIT_STATUSES = frozenset({418, 429})

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
_PAGINATION_KEYS: Mapping[str, frozenset[str]] = {
    paging.BODY_CURSOR: frozenset({"kind", "response_field", "request_param"}),
    paging.HEADER_CURSOR: frozenset({"kind", "response_header", "request_param"}),
    paging.NEXT_URL: frozenset({"kind", "response_field"}),
    paging.LINK_HEADER: frozenset({"kind"}),
    paging.OFFSET: frozenset({"kind", "offset_param"}),
    paging.PAGE_NUMBER: frozenset({"kind", "page_param", "first_page"}),
    paging.TIME_WINDOW: frozenset(
        {
            "kind",
            "start_param",
            "end_param",
            "window_seconds",
            "initial_lookback_seconds",
            "time_format",
            "record_time_field",
        }
    ),
}
_INCREMENTAL_KEYS = frozenset({"request_param", "event_time_lookback_seconds", "time_format"})
_DATA_TYPE_KEYS = frozenset(
    {
        "path",
        "method",
        "query",
        "settings_query",
        "records_path",
        "id_field",
        "updated_at_field",
        "deleted_field",
        "weight",
        "policy",
    }
)
_POLICY_KEYS = frozenset({"cooldown_seconds", "max_staleness_seconds", "schedule_every_seconds"})
_MAX_WINDOW_SECONDS = 366 * 86_400
_MAX_LOOKBACK_SECONDS = 20 * 366 * 86_400

Query = tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class IncrementalConfig:
    request_param: str
    event_time_lookback_seconds: int | None = None
    """Set for event-time filters: send ``now - lookback`` instead of the watermark."""
    time_format: str = paging.ISO8601


@dataclass(frozen=True)
class DataTypeConfig:
    name: str
    path: str
    records_path: str = ""
    id_field: str = DEFAULT_ID_FIELD
    updated_at_field: str | None = None
    deleted_field: str | None = None
    policy: PolicyDefaults = field(default_factory=PolicyDefaults)
    weight: int = 1
    method: str = "GET"
    query: Query = ()
    """Static query parameters, in declaration order."""
    settings_query: Query = ()
    """(query parameter, settings field) pairs."""
    path_settings: tuple[str, ...] = ()
    """Settings fields the path's ``{placeholders}`` name, in order of first use."""

    def required_settings(self) -> tuple[str, ...]:
        names = list(self.path_settings)
        for _param, setting in self.settings_query:
            if setting not in names:
                names.append(setting)
        return tuple(names)


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


class _ConfigReader:
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
        return auth_module.parse_auth(self.provider, value, origin)

    def pagination(self, value: Any) -> Pagination | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail("pagination", "must be a JSON object")
        kind = value.get("kind", paging.BODY_CURSOR)
        if kind not in _PAGINATION_KEYS:
            raise self.fail("pagination.kind", f"must be one of {', '.join(paging.KINDS)}")
        raw = self.mapping(value, "pagination", _PAGINATION_KEYS[kind])
        if kind == paging.BODY_CURSOR:
            return paging.BodyCursor(
                response_field=self.dotted_path(raw.get("response_field"), "pagination.response_field"),
                request_param=self.text(raw.get("request_param"), "pagination.request_param"),
            )
        if kind == paging.HEADER_CURSOR:
            header = self.text(raw.get("response_header"), "pagination.response_header")
            if not paging.HEADER_NAME.fullmatch(header):
                raise self.fail("pagination.response_header", "must be an HTTP header name")
            return paging.HeaderCursor(
                response_header=header.lower(),
                request_param=self.text(raw.get("request_param"), "pagination.request_param"),
            )
        if kind == paging.NEXT_URL:
            return paging.NextUrl(
                response_field=self.dotted_path(raw.get("response_field"), "pagination.response_field")
            )
        if kind == paging.LINK_HEADER:
            return paging.LinkHeader()
        if kind == paging.OFFSET:
            return paging.Offset(offset_param=self.text(raw.get("offset_param"), "pagination.offset_param"))
        if kind == paging.PAGE_NUMBER:
            first = raw.get("first_page", 1)
            return paging.PageNumber(
                page_param=self.text(raw.get("page_param"), "pagination.page_param"),
                first_page=self.integer(first, "pagination.first_page", minimum=0),
            )
        return self.time_window(raw)

    def time_window(self, raw: Mapping[str, Any]) -> paging.TimeWindow:
        time_format = raw.get("time_format", paging.EPOCH_MS)
        if time_format not in paging.TIME_FORMATS:
            raise self.fail("pagination.time_format", f"must be one of {', '.join(paging.TIME_FORMATS)}")
        window = paging.TimeWindow(
            start_param=self.text(raw.get("start_param"), "pagination.start_param"),
            end_param=self.text(raw.get("end_param"), "pagination.end_param"),
            window_seconds=self.integer(
                raw.get("window_seconds"), "pagination.window_seconds", minimum=1, maximum=_MAX_WINDOW_SECONDS
            ),
            initial_lookback_seconds=self.integer(
                raw.get("initial_lookback_seconds"),
                "pagination.initial_lookback_seconds",
                minimum=1,
                maximum=_MAX_LOOKBACK_SECONDS,
            ),
            time_format=time_format,
            record_time_field=self.optional_dotted_path(raw.get("record_time_field"), "pagination.record_time_field"),
        )
        if window.start_param == window.end_param:
            raise self.fail("pagination.end_param", "must differ from pagination.start_param")
        return window

    def incremental(self, value: Any) -> IncrementalConfig | None:
        if value is None:
            return None
        raw = self.mapping(value, "incremental", _INCREMENTAL_KEYS)
        lookback = raw.get("event_time_lookback_seconds")
        if lookback is not None:
            lookback = self.integer(lookback, "incremental.event_time_lookback_seconds", minimum=60)
        time_format = raw.get("time_format", paging.ISO8601)
        if time_format not in (paging.ISO8601, paging.EPOCH_MS, paging.EPOCH_SECONDS):
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

    def policy(self, value: Any, where: str) -> PolicyDefaults:
        if value is None:
            return PolicyDefaults()
        raw = self.mapping(value, where, _POLICY_KEYS)

        def number(key: str, minimum: int) -> int | None:
            item = raw.get(key)
            return None if item is None else self.integer(item, f"{where}.{key}", minimum=minimum)

        policy = PolicyDefaults(
            cooldown_seconds=number("cooldown_seconds", 0),
            max_staleness_seconds=number("max_staleness_seconds", 0),
            schedule_every_seconds=number("schedule_every_seconds", 1),
        )
        if (
            policy.cooldown_seconds is not None
            and policy.max_staleness_seconds is not None
            and policy.cooldown_seconds > policy.max_staleness_seconds
        ):
            raise self.fail(where, "needs cooldown_seconds <= max_staleness_seconds")
        return policy

    def path(self, value: Any, where: str) -> tuple[str, tuple[str, ...]]:
        """The data type's path and the settings its ``{placeholders}`` name."""
        path = self.text(value, where)
        try:
            parsed = list(string.Formatter().parse(path))
        except ValueError:
            raise self.fail(where, "has an unbalanced '{' or '}' (placeholders look like {account_id})") from None
        names: list[str] = []
        literal = ""
        for text, name, spec, conversion in parsed:
            literal += text
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise self.fail(where, "placeholders must be plain settings names like {account_id}")
            literal += "x"
            if name not in names:
                names.append(name)
        if not literal.startswith("/") or "?" in literal or "#" in literal:
            raise self.fail(where, "must start with '/' and have no query string or fragment")
        return path, tuple(names)

    def query(self, value: Any, where: str) -> Query:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise self.fail(where, "must be a JSON object of query parameter -> value")
        pairs: list[tuple[str, str]] = []
        for name, item in value.items():
            self.text(name, f"{where} key")
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.fail(f"{where}.{name}", 'must be a string or a number (write booleans as "true")')
            pairs.append((name, str(item)))
        return tuple(pairs)

    def settings_query(self, value: Any, where: str) -> Query:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise self.fail(where, "must be a JSON object of query parameter -> settings field")
        pairs: list[tuple[str, str]] = []
        for name, setting in value.items():
            self.text(name, f"{where} key")
            if not isinstance(setting, str) or not setting.isidentifier():
                raise self.fail(f"{where}.{name}", "must be a settings field name like 'symbol'")
            pairs.append((name, setting))
        return tuple(pairs)

    def method(self, value: Any, where: str) -> str:
        if value is None:
            return "GET"
        if not isinstance(value, str) or value.upper() not in METHODS:
            raise self.fail(where, f"must be one of {', '.join(METHODS)}")
        return value.upper()

    def data_type(self, name: Any, value: Any) -> DataTypeConfig:
        where = f"data_types.{name}"
        self.text(name, "data_types key")
        raw = self.mapping(value, where, _DATA_TYPE_KEYS)
        path, path_settings = self.path(raw.get("path"), f"{where}.path")
        return DataTypeConfig(
            name=name,
            path=path,
            records_path=self.dotted_path(raw.get("records_path"), f"{where}.records_path", allow_empty=True),
            id_field=self.dotted_path(raw.get("id_field", DEFAULT_ID_FIELD), f"{where}.id_field"),
            updated_at_field=self.optional_dotted_path(raw.get("updated_at_field"), f"{where}.updated_at_field"),
            deleted_field=self.optional_dotted_path(raw.get("deleted_field"), f"{where}.deleted_field"),
            policy=self.policy(raw.get("policy"), f"{where}.policy"),
            weight=self.integer(raw.get("weight", 1), f"{where}.weight", minimum=1, maximum=MAX_WEIGHT),
            method=self.method(raw.get("method"), f"{where}.method"),
            query=self.query(raw.get("query"), f"{where}.query"),
            settings_query=self.settings_query(raw.get("settings_query"), f"{where}.settings_query"),
            path_settings=path_settings,
        )

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
        if isinstance(pagination, paging.TimeWindow):
            if parsed.incremental is not None:
                raise self.fail("incremental", "cannot be used with a time_window (its first window starts at since)")
            if pagination.record_time_field is not None and parsed.page_size is None:
                raise self.fail("pagination.record_time_field", "needs page_size (a full page is what it narrows)")
        params: list[tuple[str, str | None]] = [("page_size_param", parsed.page_size_param)]
        params.extend(("pagination", param) for param in paging.request_params(pagination))
        params.append(("incremental.request_param", parsed.incremental.request_param if parsed.incremental else None))
        seen: dict[str, str] = {}
        for key, param in params:
            if param is None:
                continue
            if param in seen:
                raise self.fail(key, f"uses the query parameter {param!r} already used by {seen[param]}")
            seen[param] = key
        for spec in parsed.data_types.values():
            own = dict(seen)
            declared = [(f"data_types.{spec.name}.query", name) for name, _ in spec.query]
            declared += [(f"data_types.{spec.name}.settings_query", name) for name, _ in spec.settings_query]
            for key, param in declared:
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
        used = [("page_size_param", parsed.page_size_param)]
        used.extend(("pagination", param) for param in paging.request_params(parsed.pagination))
        used.append(("incremental.request_param", parsed.incremental.request_param if parsed.incremental else None))
        for spec in parsed.data_types.values():
            used.extend((f"data_types.{spec.name}.query", name) for name, _ in spec.query)
            used.extend((f"data_types.{spec.name}.settings_query", name) for name, _ in spec.settings_query)
        for key, param in used:
            if param is not None and param in reserved:
                raise self.fail(key, f"uses the query parameter {param!r} that auth signs or sets")


# --------------------------------------------------------------------------- provider


def _setting_text(value: Any) -> str | None:
    """A settings value usable in a path or query; ``None`` when absent or unusable."""
    text = scalar_text(value)
    if text is None or not text.strip() or text in (".", "..") or len(text) > MAX_SETTING_LENGTH:
        return None
    return text


class RestProvider:
    """A ``Provider`` backed by a declarative JSON-over-HTTP description."""

    def __init__(self, name: str, config: RestProviderConfig, *, session: requests.Session | None = None) -> None:
        self.name = name
        self.config = config
        self._session = session
        self._scope = UrlScope.of(config.base_url)
        self._types = {
            type_name: DataTypeSpec(
                type_name,
                spec.policy,
                weight=spec.weight,
                incremental=config.incremental is not None or isinstance(config.pagination, paging.TimeWindow),
                complete_listing=not isinstance(config.pagination, paging.TimeWindow),
            )
            for type_name, spec in config.data_types.items()
        }
        self.token_client = config.auth.token_client if config.auth is not None else None
        """The OAuth2 client when the auth kind refreshes tokens (found by ``base.token_client_of``)."""

    @classmethod
    def from_config(
        cls, name: str, config: Mapping[str, Any], *, session: requests.Session | None = None
    ) -> RestProvider:
        """Validate one providers-file entry; raises ``ConfigurationError`` naming the bad key."""
        return cls(name, _ConfigReader(name).read(config), session=session)

    # -- Provider protocol

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return self._types

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        """The auth kind checks the credentials; every setting a path or query names must be usable."""
        if not isinstance(credentials, Mapping):
            raise ValidationError("credentials must be a JSON object")
        if not isinstance(settings, Mapping):
            raise ValidationError("settings must be a JSON object")
        if self.config.auth is not None:
            self.config.auth.validate(credentials)
        needed = list(
            dict.fromkeys(name for spec in self.config.data_types.values() for name in spec.required_settings())
        )
        missing = [name for name in needed if _setting_text(settings.get(name)) is None]
        if missing:
            raise ValidationError(
                f"provider {self.name!r} needs setting(s) {', '.join(missing)} "
                f"(non-empty string or number of at most {MAX_SETTING_LENGTH} characters, not '.' or '..')"
            )

    def fetch_page(self, request: FetchRequest) -> Page:
        spec = self.config.data_types.get(request.data_type)
        if spec is None:
            raise ProviderError(f"provider {self.name!r} has no data type {request.data_type!r}", retryable=False)
        where = f"provider {self.name!r} data type {request.data_type!r}"
        timeout = min(self.config.timeout_seconds, request.timeout_seconds)
        if timeout <= 0:
            raise ProviderTimeoutError(f"{where}: no time left for the request")
        pagination = self.config.pagination
        try:
            plan = paging.plan_page(
                pagination, request.page_token, since=request.since, now=request.now_epoch, scope=self._scope
            )
        except PaginationError as exc:
            raise ProviderError(f"{where}: {exc}", retryable=False) from None
        if plan.exhausted:
            return Page(records=[], next_page_token=None, covered_until=self._covered_until(plan))

        if plan.target is not None:
            path, query = paging.split_target(plan.target)
        else:
            path = self._scope.base_path + self._fill_path(spec, request.settings, where)
            query = self._query(spec, request, plan)
        answer = self._call(spec.method, path, query, request, timeout, where)
        try:
            body = answer.json()
        except ValueError:
            raise self._with_headers(
                ProviderError(
                    f"{where}: HTTP {answer.status} answer is not valid JSON",
                    retryable=False,
                    status_code=answer.status,
                ),
                answer,
            ) from None
        items = self._items(body, spec, where, answer)
        records, skipped = self._records(items, spec)
        target = path + (f"?{urlencode(query)}" if query else "")
        try:
            next_token = paging.next_page_token(
                pagination,
                plan,
                token=request.page_token,
                body=body,
                headers=answer.headers,
                items=items,
                page_size=self.config.page_size,
                scope=self._scope,
                request_target=target,
                now=request.now_epoch,
            )
        except PaginationError as exc:
            raise self._with_headers(ProviderError(f"{where}: {exc}", retryable=False), answer) from None
        return Page(
            records=records,
            next_page_token=next_token,
            skipped=skipped,
            response_headers=answer.headers,
            covered_until=self._covered_until(plan) if next_token is None else None,
        )

    def _covered_until(self, plan: paging.PagePlan) -> str | None:
        """A time-window pass that ended has listed everything up to its last window's end."""
        pagination = self.config.pagination
        if not isinstance(pagination, paging.TimeWindow) or plan.window is None:
            return None
        return paging.format_instant(plan.window.end_ms, pagination.time_format)

    # -- extension points

    @property
    def session(self) -> requests.Session:
        """The provider's HTTP session, created on first use and reused for connection pooling."""
        if self._session is None:
            self._session = self._create_session()
        return self._session

    def _create_session(self) -> requests.Session:
        """Override (or pass ``session=``) to customise transport, retries or proxies."""
        return requests.Session()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- request building

    def _settings_value(self, settings: Mapping[str, Any], name: str, where: str) -> str:
        value = _setting_text(settings.get(name)) if isinstance(settings, Mapping) else None
        if value is None:
            raise ProviderError(f"{where}: connection lacks a usable setting {name!r}", retryable=False)
        return value

    def _fill_path(self, spec: DataTypeConfig, settings: Mapping[str, Any], where: str) -> str:
        if not spec.path_settings:
            return spec.path
        # Quoted with no safe characters: a setting fills one path segment, never adds one.
        values = {name: quote(self._settings_value(settings, name, where), safe="") for name in spec.path_settings}
        return spec.path.format_map(values)

    def _query(self, spec: DataTypeConfig, request: FetchRequest, plan: paging.PagePlan) -> Query:
        config = self.config
        query: list[tuple[str, str]] = list(spec.query)
        where = f"provider {self.name!r} data type {request.data_type!r}"
        query.extend(
            (param, self._settings_value(request.settings, setting, where)) for param, setting in spec.settings_query
        )
        if config.page_size_param is not None and config.page_size is not None:
            query.append((config.page_size_param, str(config.page_size)))
        query.extend(plan.params)
        incremental = config.incremental
        if incremental is not None and request.since is not None:
            if incremental.event_time_lookback_seconds is None:
                query.append((incremental.request_param, request.since))
            else:
                start_ms = int((request.now_epoch - incremental.event_time_lookback_seconds) * 1000)
                query.append((incremental.request_param, paging.format_instant(start_ms, incremental.time_format)))
        return tuple(query)

    # -- HTTP

    def _call(
        self, method: str, path: str, query: Query, request: FetchRequest, timeout: float, where: str
    ) -> HttpAnswer:
        """One call, and one more when the auth kind fixed what a 4xx complained about."""
        answer = self._send(method, path, query, request, timeout, where)
        auth = self.config.auth
        if auth is not None and 400 <= answer.status < 500:
            fetch_json = self._unauthenticated_fetch(timeout, where)
            if auth.recover(answer.status, answer.json_or_none(), fetch_json, request.now_epoch):
                answer = self._send(method, path, query, request, timeout, where)
        error = self._error_for(answer, where, request.now_epoch)
        if error is not None:
            raise error
        return answer

    def _send(
        self, method: str, path: str, query: Query, request: FetchRequest, timeout: float, where: str
    ) -> HttpAnswer:
        outgoing = OutgoingRequest(
            method=method,
            origin=self._scope.origin,
            path=path,
            query=query,
            headers=dict(self.config.default_headers),
            body=None,
        )
        auth = self.config.auth
        signed = auth.apply(outgoing, request.credentials, request.now_epoch) if auth is not None else outgoing
        if signed.origin != self._scope.origin:
            raise ProviderError(f"{where}: the auth kind moved the call off the provider's origin", retryable=False)
        # Sent exactly as built (no ``params=``), so a signature over the query string stays valid.
        url = signed.origin + signed.path + (f"?{urlencode(signed.query)}" if signed.query else "")
        return send(
            self.session,
            signed.method,
            url,
            where=where,
            timeout=timeout,
            headers=signed.headers,
            data=signed.body,
            max_bytes=self.config.max_response_bytes,
        )

    def _unauthenticated_fetch(self, timeout: float, where: str) -> Callable[[str], Any]:
        """``fetch_json(path)`` for ``RequestAuth.recover``: a GET of a public path on the same origin."""

        def fetch_json(path: str) -> Any:
            if not path.startswith("/") or path.startswith("//") or "\\" in path:
                raise ProviderError(f"{where}: auth recovery asked for a path off the origin", retryable=False)
            answer = send(
                self.session,
                "GET",
                self._scope.origin + path,
                where=f"{where} (auth recovery)",
                timeout=timeout,
                headers=dict(self.config.default_headers),
                max_bytes=self.config.max_response_bytes,
            )
            if not 200 <= answer.status < 300:
                raise self._with_headers(
                    ProviderError(
                        f"{where} (auth recovery): HTTP {answer.status}",
                        retryable=answer.status >= 500,
                        status_code=answer.status,
                    ),
                    answer,
                )
            try:
                return answer.json()
            except ValueError:
                raise ProviderError(f"{where} (auth recovery): answer is not valid JSON", retryable=False) from None

        return fetch_json

    def _provider_wait(self, answer: HttpAnswer, now: float) -> float | None:
        """The longest wait the provider asked for, through ``Retry-After`` or its reset header."""
        waits = [parse_retry_after(answer.header("Retry-After"), now)]
        if self.config.rate_limit_reset_header:
            waits.append(parse_reset_header(answer.header(self.config.rate_limit_reset_header), now))
        known = [wait for wait in waits if wait is not None]
        return max(known) if known else None

    @staticmethod
    def _with_headers(error: ProviderError, answer: HttpAnswer) -> ProviderError:
        error.response_headers = answer.headers
        return error

    def _error_for(self, answer: HttpAnswer, where: str, now: float) -> ProviderError | None:
        status = answer.status
        error: ProviderError
        if 200 <= status < 300:
            return None
        if status in (401, 403):
            error = ProviderAuthError(f"{where}: HTTP {status}, credentials rejected", status_code=status)
        elif status in _RATE_LIMIT_STATUSES:
            error = ProviderRateLimitError(
                f"{where}: HTTP {status}, rate limited",
                retry_after=answer.header("Retry-After"),
                retry_after_seconds=self._provider_wait(answer, now),
                status_code=status,
            )
        elif status >= 500:
            error = ProviderError(
                f"{where}: HTTP {status}, upstream failure",
                retryable=True,
                status_code=status,
                retry_after_seconds=self._provider_wait(answer, now),
            )
        else:
            error = ProviderError(f"{where}: HTTP {status}, request refused", retryable=False, status_code=status)
        return self._with_headers(error, answer)

    # -- answer mapping

    def _items(self, body: Any, spec: DataTypeConfig, where: str, answer: HttpAnswer) -> Sequence[Any]:
        items = dig(body, spec.records_path)
        if not isinstance(items, list):
            found = "missing" if items is MISSING else f"a JSON {type(items).__name__}"
            target = repr(spec.records_path) if spec.records_path else "the response body"
            raise self._with_headers(
                ProviderError(f"{where}: records_path {target} is {found}, expected a list", retryable=False), answer
            )
        return items

    @staticmethod
    def _records(items: Sequence[Any], spec: DataTypeConfig) -> tuple[list[UpstreamRecord], list[SkippedRecord]]:
        """The page's usable records; the others are set aside, so one bad record never blocks the rest."""
        records: list[UpstreamRecord] = []
        skipped: list[SkippedRecord] = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                skipped.append(
                    SkippedRecord("not_an_object", detail=f"record #{index} is a JSON {type(item).__name__}")
                )
                continue
            record_id = scalar_text(dig(item, spec.id_field))
            if record_id is None:
                skipped.append(
                    SkippedRecord(
                        "missing_id", detail=f"record #{index} has no usable id at id_field {spec.id_field!r}"
                    )
                )
                continue
            updated_at = scalar_text(dig(item, spec.updated_at_field)) if spec.updated_at_field else None
            deleted = False
            if spec.deleted_field:
                flag = dig(item, spec.deleted_field)
                deleted = flag is not MISSING and bool(flag)
            records.append(UpstreamRecord(record_id=record_id, data=item, updated_at=updated_at, deleted=deleted))
        return records, skipped
