"""The ``rest`` provider: any paginated JSON-over-HTTP API, described declaratively.

A provider entry in the providers file says where the API lives, how to
authenticate, how it paginates and filters incrementally, and, per data type,
which endpoint to call and where the records, their ids and stamps live in the
JSON answer. ``docs/rest-provider.md`` documents every key; in short:

- ``base_url`` (required): ``http(s)://host[/prefix]``, no credentials, query or fragment
- ``timeout_seconds`` (10): upper bound for one HTTP call, further cut to the
  fetch's own ``timeout_seconds``
- ``page_size`` / ``page_size_param`` (unset): send ``page_size_param=page_size``
  on every call; give both or neither
- ``auth`` (unset = anonymous): ``{"header": "Authorization", "template": "Bearer {access_token}"}``;
  the template's ``{fields}`` are filled from the connection's credentials
- ``pagination`` (unset = one page per fetch): ``{"response_field": ..., "request_param": ...}``
- ``incremental`` (unset = ``since`` is ignored, every run is a full pull): ``{"request_param": ...}``
- ``default_headers`` (``{"Accept": "application/json"}``): merged over that default
- ``rate_limit_reset_header`` (unset): the provider's own "when may I call again" header
  (e.g. ``X-RateLimit-Reset``: epoch seconds or seconds from now), honoured like ``Retry-After``
- ``limits`` (read by the registry, not here): ``requests_per_second``, ``burst``, ``max_concurrent_syncs``
- ``data_types`` (required, non-empty): name -> ``{"path", "records_path" (""),
  "id_field" ("id"), "updated_at_field" (null), "deleted_field" (null), "policy" ({})}``

Unknown keys are rejected so that a typo fails at start-up, not as a silent
misbehaviour. Credentials never appear in an exception message: errors name the
provider, the data type, the HTTP status and a config field, nothing else (no
headers, no URL, no response body), and the underlying ``requests`` exception is
not chained because its text carries the full URL.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from chalicelib.config import ConfigurationError
from chalicelib.errors import ValidationError
from chalicelib.providers.base import (
    DataTypeSpec,
    FetchRequest,
    Page,
    PolicyDefaults,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    UpstreamRecord,
)
from chalicelib.retry import parse_reset_header, parse_retry_after

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_HEADERS: Mapping[str, str] = {"Accept": "application/json"}
DEFAULT_AUTH_HEADER = "Authorization"
DEFAULT_ID_FIELD = "id"

_TOP_LEVEL_KEYS = frozenset(
    {
        "type",
        "base_url",
        "timeout_seconds",
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
_AUTH_KEYS = frozenset({"header", "template"})
_PAGINATION_KEYS = frozenset({"response_field", "request_param"})
_INCREMENTAL_KEYS = frozenset({"request_param"})
_DATA_TYPE_KEYS = frozenset({"path", "records_path", "id_field", "updated_at_field", "deleted_field", "policy"})
_POLICY_KEYS = frozenset({"cooldown_seconds", "max_staleness_seconds", "schedule_every_seconds"})


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AuthConfig:
    header: str
    template: str
    fields: tuple[str, ...]
    """Credential names the template needs, in order of first use."""

    def render(self, credentials: Mapping[str, Any]) -> str:
        return self.template.format_map({name: credentials[name] for name in self.fields})


@dataclass(frozen=True)
class PaginationConfig:
    response_field: str
    request_param: str


@dataclass(frozen=True)
class IncrementalConfig:
    request_param: str


@dataclass(frozen=True)
class DataTypeConfig:
    name: str
    path: str
    records_path: str = ""
    id_field: str = DEFAULT_ID_FIELD
    updated_at_field: str | None = None
    deleted_field: str | None = None
    policy: PolicyDefaults = field(default_factory=PolicyDefaults)


@dataclass(frozen=True)
class RestProviderConfig:
    base_url: str
    data_types: Mapping[str, DataTypeConfig]
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    page_size: int | None = None
    page_size_param: str | None = None
    auth: AuthConfig | None = None
    pagination: PaginationConfig | None = None
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
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise self.fail(where, "must be a string without line breaks")
        return value

    def integer(self, value: Any, where: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"must be an integer >= {minimum}")
        return value

    def base_url(self, value: Any) -> str:
        url = self.text(value, "base_url")
        parts = urlsplit(url)
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

    def auth(self, value: Any) -> AuthConfig | None:
        if value is None:
            return None
        raw = self.mapping(value, "auth", _AUTH_KEYS)
        header = self.text(raw.get("header", DEFAULT_AUTH_HEADER), "auth.header")
        template = self.header_value(self.text(raw.get("template"), "auth.template"), "auth.template")
        fields: list[str] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise self.fail("auth.template", f"is not a valid format string ({exc})") from None
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise self.fail("auth.template", "fields must be plain names like {access_token}")
            if name not in fields:
                fields.append(name)
        return AuthConfig(header=header, template=template, fields=tuple(fields))

    def pagination(self, value: Any) -> PaginationConfig | None:
        if value is None:
            return None
        raw = self.mapping(value, "pagination", _PAGINATION_KEYS)
        return PaginationConfig(
            response_field=self.dotted_path(raw.get("response_field"), "pagination.response_field"),
            request_param=self.text(raw.get("request_param"), "pagination.request_param"),
        )

    def incremental(self, value: Any) -> IncrementalConfig | None:
        if value is None:
            return None
        raw = self.mapping(value, "incremental", _INCREMENTAL_KEYS)
        return IncrementalConfig(request_param=self.text(raw.get("request_param"), "incremental.request_param"))

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

    def data_type(self, name: Any, value: Any) -> DataTypeConfig:
        where = f"data_types.{name}"
        self.text(name, "data_types key")
        raw = self.mapping(value, where, _DATA_TYPE_KEYS)
        path = self.text(raw.get("path"), f"{where}.path")
        if not path.startswith("/") or "?" in path or "#" in path:
            raise self.fail(f"{where}.path", "must start with '/' and have no query string or fragment")
        return DataTypeConfig(
            name=name,
            path=path,
            records_path=self.dotted_path(raw.get("records_path"), f"{where}.records_path", allow_empty=True),
            id_field=self.dotted_path(raw.get("id_field", DEFAULT_ID_FIELD), f"{where}.id_field"),
            updated_at_field=self.optional_dotted_path(raw.get("updated_at_field"), f"{where}.updated_at_field"),
            deleted_field=self.optional_dotted_path(raw.get("deleted_field"), f"{where}.deleted_field"),
            policy=self.policy(raw.get("policy"), f"{where}.policy"),
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
        parsed = RestProviderConfig(
            base_url=self.base_url(raw.get("base_url")),
            data_types={name: self.data_type(name, spec) for name, spec in types_raw.items()},
            timeout_seconds=self.timeout(raw.get("timeout_seconds")),
            page_size=page_size,
            page_size_param=page_size_param,
            auth=self.auth(raw.get("auth")),
            pagination=self.pagination(raw.get("pagination")),
            incremental=self.incremental(raw.get("incremental")),
            default_headers=self.headers(raw.get("default_headers")),
            rate_limit_reset_header=self.optional_text(raw.get("rate_limit_reset_header"), "rate_limit_reset_header"),
        )
        self.check_clashes(parsed)
        return parsed

    def check_clashes(self, parsed: RestProviderConfig) -> None:
        params = [
            ("page_size_param", parsed.page_size_param),
            ("pagination.request_param", parsed.pagination.request_param if parsed.pagination else None),
            ("incremental.request_param", parsed.incremental.request_param if parsed.incremental else None),
        ]
        seen: dict[str, str] = {}
        for key, param in params:
            if param is None:
                continue
            if param in seen:
                raise self.fail(key, f"uses the query parameter {param!r} already used by {seen[param]}")
            seen[param] = key
        if parsed.auth is not None:
            auth_header = parsed.auth.header.lower()
            if any(name.lower() == auth_header for name in parsed.default_headers):
                raise self.fail("default_headers", f"must not set the auth header {parsed.auth.header!r}")


# --------------------------------------------------------------------------- JSON helpers

_MISSING = object()


def _dig(document: Any, path: str) -> Any:
    """Follow a dotted path (``data.items``, ``results.0.id``); ``_MISSING`` when any step is absent."""
    if not path:
        return document
    current = document
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _scalar_text(value: Any) -> str | None:
    """A JSON scalar as text; ``None`` for null, empty strings and non-scalars."""
    if value is None or value is _MISSING or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    return text or None


# --------------------------------------------------------------------------- provider


def _header_safe(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(c in value for c in "\r\n\x00")


class RestProvider:
    """A ``Provider`` backed by a declarative JSON-over-HTTP description."""

    def __init__(self, name: str, config: RestProviderConfig, *, session: requests.Session | None = None) -> None:
        self.name = name
        self.config = config
        self._session = session
        self._types = {type_name: DataTypeSpec(type_name, spec.policy) for type_name, spec in config.data_types.items()}

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
        """Every credential the auth template needs must be present and usable as header text."""
        if not isinstance(credentials, Mapping):
            raise ValidationError("credentials must be a JSON object")
        if not isinstance(settings, Mapping):
            raise ValidationError("settings must be a JSON object")
        auth = self.config.auth
        if auth is None:
            return
        missing = [name for name in auth.fields if _scalar_text(credentials.get(name)) is None]
        if missing:
            raise ValidationError(
                f"provider {self.name!r} needs credential(s) {', '.join(missing)} (non-empty string or number)"
            )
        broken = [name for name in auth.fields if not _header_safe(str(credentials[name]))]
        if broken:
            raise ValidationError(
                f"provider {self.name!r}: credential(s) {', '.join(broken)} must be printable Latin-1 text "
                "without line breaks (HTTP headers cannot carry anything else)"
            )

    def fetch_page(self, request: FetchRequest) -> Page:
        spec = self.config.data_types.get(request.data_type)
        if spec is None:
            raise ProviderError(f"provider {self.name!r} has no data type {request.data_type!r}", retryable=False)
        where = f"provider {self.name!r} data type {request.data_type!r}"
        timeout = min(self.config.timeout_seconds, request.timeout_seconds)
        if timeout <= 0:
            raise ProviderTimeoutError(f"{where}: no time left for the request")

        headers = self._headers(request, where)
        params = self._params(request)
        body = self._get(self.config.base_url + spec.path, headers, params, timeout, where, request.now_epoch)
        return self._page(body, spec, request, where)

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

    # -- internals

    def _headers(self, request: FetchRequest, where: str) -> dict[str, str]:
        headers = dict(self.config.default_headers)
        auth = self.config.auth
        if auth is None:
            return headers
        missing = [name for name in auth.fields if _scalar_text(request.credentials.get(name)) is None]
        if missing:
            raise ProviderAuthError(f"{where}: connection lacks credential(s) {', '.join(missing)}")
        value = auth.render(request.credentials)
        if "\r" in value or "\n" in value:
            raise ProviderAuthError(f"{where}: a credential contains a line break")
        headers[auth.header] = value
        return headers

    def _params(self, request: FetchRequest) -> dict[str, str]:
        config = self.config
        params: dict[str, str] = {}
        if config.page_size_param is not None and config.page_size is not None:
            params[config.page_size_param] = str(config.page_size)
        if config.pagination is not None and request.page_token is not None:
            params[config.pagination.request_param] = request.page_token
        if config.incremental is not None and request.since is not None:
            params[config.incremental.request_param] = request.since
        return params

    def _provider_wait(self, response: requests.Response, now: float) -> float | None:
        """The longest wait the provider asked for, through ``Retry-After`` or its reset header."""
        waits = [parse_retry_after(response.headers.get("Retry-After"), now)]
        if self.config.rate_limit_reset_header:
            waits.append(parse_reset_header(response.headers.get(self.config.rate_limit_reset_header), now))
        known = [wait for wait in waits if wait is not None]
        return max(known) if known else None

    def _get(
        self, url: str, headers: dict[str, str], params: dict[str, str], timeout: float, where: str, now: float
    ) -> Any:
        # Exceptions are raised ``from None``: requests' own messages include the full
        # URL (page tokens, watermarks) and must not reach logs through the chain.
        try:
            response = self.session.get(url, headers=headers, params=params, timeout=timeout)
        except requests.Timeout:
            raise ProviderTimeoutError(f"{where}: no answer within {timeout:g}s") from None
        except requests.ConnectionError:
            raise ProviderError(f"{where}: could not connect", retryable=True) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise ProviderError(f"{where}: broken response ({type(exc).__name__})", retryable=True) from None
        except requests.RequestException as exc:
            raise ProviderError(f"{where}: request failed ({type(exc).__name__})", retryable=False) from None

        status = response.status_code
        if status in (401, 403):
            raise ProviderAuthError(f"{where}: HTTP {status}, credentials rejected", status_code=status)
        if status == 429:
            raise ProviderRateLimitError(
                f"{where}: HTTP 429, rate limited",
                retry_after=response.headers.get("Retry-After"),
                retry_after_seconds=self._provider_wait(response, now),
            )
        if status >= 500:
            raise ProviderError(
                f"{where}: HTTP {status}, upstream failure",
                retryable=True,
                status_code=status,
                retry_after_seconds=self._provider_wait(response, now),
            )
        if not 200 <= status < 300:
            raise ProviderError(f"{where}: HTTP {status}, request refused", retryable=False, status_code=status)
        try:
            return response.json()
        except ValueError:
            raise ProviderError(
                f"{where}: HTTP {status} answer is not valid JSON", retryable=False, status_code=status
            ) from None

    def _page(self, body: Any, spec: DataTypeConfig, request: FetchRequest, where: str) -> Page:
        items = _dig(body, spec.records_path)
        if not isinstance(items, list):
            found = "missing" if items is _MISSING else f"a JSON {type(items).__name__}"
            target = repr(spec.records_path) if spec.records_path else "the response body"
            raise ProviderError(f"{where}: records_path {target} is {found}, expected a list", retryable=False)

        records: list[UpstreamRecord] = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ProviderError(f"{where}: record #{index} is not a JSON object", retryable=False)
            record_id = _scalar_text(_dig(item, spec.id_field))
            if record_id is None:
                raise ProviderError(
                    f"{where}: record #{index} has no usable id at id_field {spec.id_field!r}", retryable=False
                )
            updated_at = _scalar_text(_dig(item, spec.updated_at_field)) if spec.updated_at_field else None
            deleted = False
            if spec.deleted_field:
                flag = _dig(item, spec.deleted_field)
                deleted = flag is not _MISSING and bool(flag)
            records.append(UpstreamRecord(record_id=record_id, data=item, updated_at=updated_at, deleted=deleted))

        next_token: str | None = None
        if self.config.pagination is not None:
            raw_token = _dig(body, self.config.pagination.response_field)
            if raw_token is not _MISSING and raw_token is not None and not isinstance(raw_token, str | int | float):
                raise ProviderError(
                    f"{where}: pagination.response_field {self.config.pagination.response_field!r} is not a scalar",
                    retryable=False,
                )
            next_token = _scalar_text(raw_token)
            if next_token is not None and next_token == request.page_token:
                raise ProviderError(f"{where}: the provider returned the same page token again", retryable=False)
        return Page(records=records, next_page_token=next_token)
