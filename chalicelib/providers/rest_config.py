"""The ``rest`` provider's configuration: what a providers-file entry may say, checked at start-up.

``rest.py``'s module docstring documents every key; this module turns an entry into a
``RestProviderConfig`` or a ``ConfigurationError`` that names the provider and the key.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.upstream import PolicyDefaults
from chalicelib.providers import auth as auth_module
from chalicelib.providers import pagination as paging
from chalicelib.providers.auth import RequestAuth
from chalicelib.providers.http import DEFAULT_MAX_RESPONSE_BYTES, header_safe
from chalicelib.providers.pagination import Pagination, UrlScope

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_HEADERS: Mapping[str, str] = {"Accept": "application/json"}
DEFAULT_ID_FIELD = "id"
MAX_RESPONSE_BYTES_LIMIT = 256 * 1024 * 1024
MAX_WEIGHT = 10_000
MAX_SETTING_LENGTH = 256
METHODS = ("GET", "POST")

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
