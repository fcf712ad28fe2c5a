"""The ``rest`` provider: any paginated JSON-over-HTTP API, described declaratively.

A provider entry in the providers file says where the API lives, how to authenticate,
how it paginates and filters incrementally, and, per data type, which endpoint to call
and where the records, their ids and stamps live in the JSON answer. The keys are read
(and documented) by ``rest_config.py``, ``pagination_config.py``, ``data_type_config.py``
and ``auth_config.py``; ``docs/providers.md`` is the reference for operators.

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

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import requests

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.retry import parse_reset_header, parse_retry_after
from chalicelib.domain.upstream import (
    DataTypeSpec,
    FetchRequest,
    Page,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from chalicelib.providers.auth import OutgoingRequest
from chalicelib.providers.data_type_config import MAX_SETTING_LENGTH, DataTypeConfig, Query
from chalicelib.providers.http import HttpAnswer, send
from chalicelib.providers.instants import format_instant
from chalicelib.providers.json_path import MISSING, dig, scalar_text
from chalicelib.providers.page_links import UrlScope, split_target
from chalicelib.providers.pagination import next_page_token, plan_page
from chalicelib.providers.pagination_kinds import PagePlan, PaginationError, TimeWindow
from chalicelib.providers.rest_config import RestConfigReader, RestProviderConfig
from chalicelib.providers.rest_records import page_records

# Binance answers 418 to an IP banned for ignoring 429s, with Retry-After: the same "wait" signal.
_RATE_LIMIT_STATUSES = frozenset({418, 429})

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
                incremental=config.incremental is not None or isinstance(config.pagination, TimeWindow),
                complete_listing=not isinstance(config.pagination, TimeWindow),
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
        return cls(name, RestConfigReader(name).read(config), session=session)

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
            plan = plan_page(
                pagination, request.page_token, since=request.since, now=request.now_epoch, scope=self._scope
            )
        except PaginationError as exc:
            raise ProviderError(f"{where}: {exc}", retryable=False) from None
        if plan.exhausted:
            return Page(records=[], next_page_token=None, covered_until=self._covered_until(plan))

        if plan.target is not None:
            path, query = split_target(plan.target)
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
        records, skipped = page_records(items, spec)
        target = path + (f"?{urlencode(query)}" if query else "")
        try:
            next_token = next_page_token(
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

    def _covered_until(self, plan: PagePlan) -> str | None:
        """A time-window pass that ended has listed everything up to its last window's end."""
        pagination = self.config.pagination
        if not isinstance(pagination, TimeWindow) or plan.window is None:
            return None
        return format_instant(plan.window.end_ms, pagination.time_format)

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

    def _query(self, spec: DataTypeConfig, request: FetchRequest, plan: PagePlan) -> Query:
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
                query.append((incremental.request_param, format_instant(start_ms, incremental.time_format)))
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
