"""How a ``rest`` provider authenticates its calls: the ``auth`` entry of the providers file.

``rest.py`` builds an ``OutgoingRequest`` for every call, asks ``RequestAuth.apply`` for the
signed copy, and sends exactly that (the query string is ``urlencode(request.query)``, in
order, so a signature over it stays valid). After a refused call it asks ``recover`` whether
one more attempt is worth it (a clock-skew refusal mended by learning the server's time).

Kinds (``auth: {"kind": ...}``):

- ``header`` (the default when ``kind`` is absent): ``{"header": "Authorization",
  "template": "Bearer {access_token}"}``; the template's ``{fields}`` come from the connection's
  credentials and must be header-safe (Latin-1, no line breaks).
- ``oauth2``: ``token_url`` (https; http only on a loopback host; a path is taken from the
  provider's origin), ``client_id_env`` / ``client_secret_env`` (names of environment variables
  holding the app's client id and secret, read at refresh time), ``scopes`` (list, sent
  space-joined), ``refresh_skew_seconds`` (300), ``client_auth`` (``body`` or ``basic``). Calls
  carry ``Authorization: Bearer {access_token}``; connections need ``access_token`` and
  ``refresh_token`` (``expires_at`` optional). ``token_client`` refreshes (see ``oauth2.py``).
- ``hmac`` with ``style``:
  ``binance`` (``recv_window_ms`` 5000, ``key_header`` ``X-MBX-APIKEY``, ``server_time_path``
  ``/api/v3/time``; credentials ``api_key``, ``api_secret``),
  ``okx`` (``server_time_path`` ``/api/v5/public/time``; credentials ``api_key``, ``api_secret``,
  ``passphrase``),
  ``snaptrade`` (``client_id_env``, ``consumer_key_env``; credentials ``user_id``, ``user_secret``).

Signing is a pure function of the request, the credentials, ``now`` and the clock offset the
auth object has learned from the provider (per provider, per process). Nothing here logs, and
no error quotes a credential, a signature, a token or a URL: errors name the provider and the
credential or configuration key.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import requests

from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import ProviderAuthError, ProviderError
from chalicelib.providers.base import TokenClient
from chalicelib.providers.http import header_safe
from chalicelib.providers.oauth2 import (
    DEFAULT_REFRESH_SKEW_SECONDS,
    OAuth2Config,
    OAuth2TokenClient,
    app_setting,
    parse_expires_at,
)
from chalicelib.providers.pagination import ISO8601, format_instant


@dataclass(frozen=True)
class OutgoingRequest:
    method: str
    """``GET``, ``POST``..."""
    origin: str
    """``scheme://host[:port]`` of the provider's ``base_url``."""
    path: str
    """The path from the host on, base_url's own prefix included (``/developer/v2/recovery``)."""
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


class RequestAuth(Protocol):
    token_client: TokenClient | None
    """Set for ``oauth2`` (the engine refreshes through it); ``None`` for every other kind."""

    def validate(self, credentials: Mapping[str, Any]) -> None:
        """``ValidationError`` naming what is missing or unusable (never quoting a value)."""
        ...

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        """The request as it must be sent: auth headers added, query signed."""
        ...

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        """After a refused call: fix what can be fixed locally (e.g. Binance -1021 clock skew) and say
        whether one more attempt is worth it. ``fetch_json(path)`` GETs an unauthenticated path of
        the provider (its server time)."""
        ...


DEFAULT_AUTH_HEADER = "Authorization"
DEFAULT_BINANCE_KEY_HEADER = "X-MBX-APIKEY"
DEFAULT_BINANCE_RECV_WINDOW_MS = 5000
MAX_BINANCE_RECV_WINDOW_MS = 60000
"""Binance refuses a larger recvWindow."""
DEFAULT_BINANCE_SERVER_TIME_PATH = "/api/v3/time"
DEFAULT_OKX_SERVER_TIME_PATH = "/api/v5/public/time"
BINANCE_TIMESTAMP_REFUSED = -1021
"""Binance: "Timestamp for this request is outside of the recvWindow" (or ahead of the server's time)."""
OKX_TIMESTAMP_EXPIRED = "50102"
"""OKX: "Timestamp request expired"."""
MAX_CLOCK_OFFSET_MS = 24 * 3600 * 1000
"""A server time further off than this is not a clock to trust: the offset is not learned."""

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --------------------------------------------------------------------------- small pure helpers


def _credential_text(value: Any) -> str | None:
    """A credential as text: a non-blank string or a number; ``None`` otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    return None


def _hmac_sha256(key: str, message: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()


def _with_auth(
    request: OutgoingRequest,
    headers: Mapping[str, str],
    query: Iterable[tuple[str, str]] | None = None,
) -> OutgoingRequest:
    """``request`` with ``headers`` set (replacing any same-named header, whatever its case)."""
    replaced = {name.lower() for name in headers}
    merged = {name: value for name, value in request.headers.items() if name.lower() not in replaced}
    merged.update(headers)
    return dataclasses.replace(request, headers=merged, query=request.query if query is None else tuple(query))


def _without_params(query: Iterable[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    """The query without the parameters auth owns, so signing an already signed request is idempotent."""
    owned = set(names)
    return [(name, value) for name, value in query if name not in owned]


def _timestamp_ms(now: float, offset_ms: int) -> int:
    return round(now * 1000) + offset_ms


def okx_timestamp(epoch_ms: int) -> str:
    """OKX's ``OK-ACCESS-TIMESTAMP``: ISO-8601 UTC with milliseconds and ``Z`` (``2020-12-08T09:08:57.715Z``)."""
    return format_instant(epoch_ms, ISO8601)


def binance_signed(
    request: OutgoingRequest,
    *,
    api_key: str,
    api_secret: str,
    timestamp_ms: int,
    recv_window_ms: int = DEFAULT_BINANCE_RECV_WINDOW_MS,
    key_header: str = DEFAULT_BINANCE_KEY_HEADER,
) -> OutgoingRequest:
    """Binance SIGNED: ``recvWindow`` and ``timestamp`` added, then ``signature`` =
    hex HMAC-SHA256 of the query string (followed by a form body, if any) appended last."""
    query = _without_params(request.query, ("recvWindow", "timestamp", "signature"))
    query += [("recvWindow", str(recv_window_ms)), ("timestamp", str(timestamp_ms))]
    # Binance signs the query string followed directly by the request body ("totalParams").
    payload = urlencode(query).encode("ascii") + (request.body or b"")
    query.append(("signature", hmac.new(api_secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()))
    return _with_auth(request, {key_header: api_key}, query)


def okx_signed(
    request: OutgoingRequest, *, api_key: str, api_secret: str, passphrase: str, timestamp_ms: int
) -> OutgoingRequest:
    """OKX v5: ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256 of timestamp + METHOD + path(?query) + body."""
    timestamp = okx_timestamp(timestamp_ms)
    request_path = request.path + (f"?{urlencode(request.query)}" if request.query else "")
    prehash = (timestamp + request.method.upper() + request_path).encode("utf-8") + (request.body or b"")
    signature = base64.b64encode(_hmac_sha256(api_secret, prehash)).decode("ascii")
    return _with_auth(
        request,
        {
            "OK-ACCESS-KEY": api_key,
            "OK-ACCESS-SIGN": signature,
            "OK-ACCESS-TIMESTAMP": timestamp,
            "OK-ACCESS-PASSPHRASE": passphrase,
        },
    )


def snaptrade_signed(
    request: OutgoingRequest,
    *,
    client_id: str,
    consumer_key: str,
    user_id: str,
    user_secret: str,
    timestamp_s: int,
) -> OutgoingRequest:
    """SnapTrade: ``clientId``, ``timestamp``, ``userId``, ``userSecret`` added to the query; header
    ``Signature`` = base64 HMAC-SHA256 (consumer key) of the canonical JSON
    ``{"content": body or null, "path": path, "query": query string}`` (sorted keys, no spaces),
    as SnapTrade's request-signature docs and its Python SDK compute it."""
    query = _without_params(request.query, ("clientId", "timestamp", "userId", "userSecret"))
    query += [
        ("clientId", client_id),
        ("timestamp", str(timestamp_s)),
        ("userId", user_id),
        ("userSecret", user_secret),
    ]
    content: Any = None
    if request.body is not None and request.body.strip():
        try:
            content = json.loads(request.body)
        except ValueError:
            raise ProviderError("SnapTrade signs JSON request bodies only", retryable=False) from None
        if content == {}:
            content = None  # the SDK signs an empty object as null
    signed_content = json.dumps(
        {"content": content, "path": request.path, "query": urlencode(query)}, sort_keys=True, separators=(",", ":")
    )
    signature = base64.b64encode(_hmac_sha256(consumer_key, signed_content.encode("utf-8"))).decode("ascii")
    return _with_auth(request, {"Signature": signature}, query)


# --------------------------------------------------------------------------- credential checks


class _Credentials:
    """Checks one auth kind's credential fields; messages name fields, never values."""

    def __init__(self, provider: str, required: tuple[str, ...], in_headers: tuple[str, ...]) -> None:
        self.provider = provider
        self.required = required
        self.in_headers = in_headers
        """Fields sent as header values, which must be printable Latin-1 without line breaks."""

    def validate(self, credentials: Mapping[str, Any]) -> None:
        if not isinstance(credentials, Mapping):
            raise ValidationError("credentials must be a JSON object")
        missing = [name for name in self.required if _credential_text(credentials.get(name)) is None]
        if missing:
            raise ValidationError(
                f"provider {self.provider!r} needs credential(s) {', '.join(missing)} (non-empty string or number)"
            )
        broken = [name for name in self.in_headers if not header_safe(str(_credential_text(credentials.get(name))))]
        if broken:
            raise ValidationError(
                f"provider {self.provider!r}: credential(s) {', '.join(broken)} must be printable Latin-1 text "
                "without line breaks (HTTP headers cannot carry anything else)"
            )

    def values(self, credentials: Mapping[str, Any]) -> dict[str, str]:
        """The fields as text, or ``ProviderAuthError`` naming the unusable ones (the connection is broken)."""
        values = {name: _credential_text(credentials.get(name)) for name in self.required}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise ProviderAuthError(f"provider {self.provider!r}: connection lacks credential(s) {', '.join(missing)}")
        texts = {name: value for name, value in values.items() if value is not None}
        broken = [name for name in self.in_headers if not header_safe(texts[name])]
        if broken:
            raise ProviderAuthError(
                f"provider {self.provider!r}: credential(s) {', '.join(broken)} cannot be sent in an HTTP header"
            )
        return texts


# --------------------------------------------------------------------------- auth kinds


class HeaderAuth:
    """A header filled from the connection's credentials (``Bearer {access_token}``, ``{api_key}``...)."""

    token_client: TokenClient | None = None

    def __init__(self, provider: str, header: str, template: str, fields: tuple[str, ...]) -> None:
        self.provider = provider
        self.header = header
        self.template = template
        self.fields = fields
        self.managed_headers: tuple[str, ...] = (header,)
        self.reserved_query_params: tuple[str, ...] = ()
        self._credentials = _Credentials(provider, fields, fields)

    def validate(self, credentials: Mapping[str, Any]) -> None:
        self._credentials.validate(credentials)

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return _with_auth(request, {self.header: self.template.format_map(values)})

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        return False


class OAuth2Auth:
    """``Authorization: Bearer {access_token}``; the engine refreshes the token through ``token_client``."""

    def __init__(self, provider: str, config: OAuth2Config, *, session: requests.Session | None = None) -> None:
        self.provider = provider
        self.config = config
        self.client = OAuth2TokenClient(config, session=session)
        self.token_client: TokenClient | None = self.client
        self.managed_headers: tuple[str, ...] = (DEFAULT_AUTH_HEADER,)
        self.reserved_query_params: tuple[str, ...] = ()
        self._credentials = _Credentials(provider, ("access_token", "refresh_token"), ("access_token",))

    def validate(self, credentials: Mapping[str, Any]) -> None:
        self._credentials.validate(credentials)
        expires_at = credentials.get("expires_at")
        if expires_at is not None and parse_expires_at(expires_at) is None:
            raise ValidationError(
                f"provider {self.provider!r}: credential expires_at must be epoch seconds or an ISO-8601 time"
            )

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        access_token = _credential_text(credentials.get("access_token"))
        if access_token is None:
            raise ProviderAuthError(f"provider {self.provider!r}: connection has no access_token (refresh first)")
        if not header_safe(access_token):
            raise ProviderAuthError(f"provider {self.provider!r}: the access_token cannot be sent in an HTTP header")
        return _with_auth(request, {DEFAULT_AUTH_HEADER: f"Bearer {access_token}"})

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        # A refused token is renewed by the engine (single flight across instances), never here.
        return False


class _ClockOffset:
    """The provider's clock minus ours, in milliseconds, as last learned from its server time."""

    def __init__(self) -> None:
        # One int per provider per process; a plain attribute store is atomic under the GIL, and
        # two threads learning at once both write a fresh measurement, so no lock is needed.
        self.clock_offset_ms = 0

    def _learn(self, server_ms: Any, now: float) -> bool:
        if isinstance(server_ms, str) and server_ms.strip().isdigit():
            server_ms = int(server_ms.strip())
        if isinstance(server_ms, bool) or not isinstance(server_ms, int) or server_ms <= 0:
            return False
        offset = server_ms - round(now * 1000)
        if abs(offset) > MAX_CLOCK_OFFSET_MS:
            return False
        self.clock_offset_ms = offset
        return True

    @staticmethod
    def _fetch(fetch_json: Callable[[str], Any], path: str) -> Any:
        try:
            return fetch_json(path)
        except ProviderError:
            # The original refusal is the error worth reporting; a retry with the old clock would fail too.
            return None


class BinanceAuth(_ClockOffset):
    """Binance SIGNED endpoints (HMAC-SHA256 over the query, key in ``X-MBX-APIKEY``)."""

    token_client: TokenClient | None = None

    def __init__(
        self,
        provider: str,
        *,
        recv_window_ms: int = DEFAULT_BINANCE_RECV_WINDOW_MS,
        key_header: str = DEFAULT_BINANCE_KEY_HEADER,
        server_time_path: str = DEFAULT_BINANCE_SERVER_TIME_PATH,
    ) -> None:
        super().__init__()
        self.provider = provider
        self.recv_window_ms = recv_window_ms
        self.key_header = key_header
        self.server_time_path = server_time_path
        self.managed_headers: tuple[str, ...] = (key_header,)
        self.reserved_query_params: tuple[str, ...] = ("recvWindow", "timestamp", "signature")
        self._credentials = _Credentials(provider, ("api_key", "api_secret"), ("api_key",))

    def validate(self, credentials: Mapping[str, Any]) -> None:
        self._credentials.validate(credentials)

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return binance_signed(
            request,
            api_key=values["api_key"],
            api_secret=values["api_secret"],
            timestamp_ms=_timestamp_ms(now, self.clock_offset_ms),
            recv_window_ms=self.recv_window_ms,
            key_header=self.key_header,
        )

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        if status != 400 or not isinstance(body, Mapping):
            return False
        code = body.get("code")
        if isinstance(code, bool) or code != BINANCE_TIMESTAMP_REFUSED:
            return False
        server = self._fetch(fetch_json, self.server_time_path)
        return isinstance(server, Mapping) and self._learn(server.get("serverTime"), now)


class OkxAuth(_ClockOffset):
    """OKX v5 private REST endpoints (four ``OK-ACCESS-*`` headers)."""

    token_client: TokenClient | None = None

    def __init__(self, provider: str, *, server_time_path: str = DEFAULT_OKX_SERVER_TIME_PATH) -> None:
        super().__init__()
        self.provider = provider
        self.server_time_path = server_time_path
        self.managed_headers: tuple[str, ...] = (
            "OK-ACCESS-KEY",
            "OK-ACCESS-SIGN",
            "OK-ACCESS-TIMESTAMP",
            "OK-ACCESS-PASSPHRASE",
        )
        self.reserved_query_params: tuple[str, ...] = ()
        self._credentials = _Credentials(provider, ("api_key", "api_secret", "passphrase"), ("api_key", "passphrase"))

    def validate(self, credentials: Mapping[str, Any]) -> None:
        self._credentials.validate(credentials)

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return okx_signed(
            request,
            api_key=values["api_key"],
            api_secret=values["api_secret"],
            passphrase=values["passphrase"],
            timestamp_ms=_timestamp_ms(now, self.clock_offset_ms),
        )

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        if not 400 <= status < 500 or not isinstance(body, Mapping) or str(body.get("code")) != OKX_TIMESTAMP_EXPIRED:
            return False
        server = self._fetch(fetch_json, self.server_time_path)
        if not isinstance(server, Mapping):
            return False
        data = server.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
            return False
        return self._learn(data[0].get("ts"), now)


class SnapTradeAuth:
    """SnapTrade: the app's client id and consumer key (deployment settings) sign each user's calls.

    No clock offset: SnapTrade documents no clock-skew error to learn one from."""

    token_client: TokenClient | None = None

    def __init__(self, provider: str, *, client_id_env: str, consumer_key_env: str) -> None:
        self.provider = provider
        self.client_id_env = client_id_env
        self.consumer_key_env = consumer_key_env
        self.managed_headers: tuple[str, ...] = ("Signature",)
        self.reserved_query_params: tuple[str, ...] = ("clientId", "timestamp", "userId", "userSecret")
        self._credentials = _Credentials(provider, ("user_id", "user_secret"), ())

    def validate(self, credentials: Mapping[str, Any]) -> None:
        self._credentials.validate(credentials)

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return snaptrade_signed(
            request,
            client_id=app_setting(self.provider, self.client_id_env),
            consumer_key=app_setting(self.provider, self.consumer_key_env),
            user_id=values["user_id"],
            user_secret=values["user_secret"],
            timestamp_s=_timestamp_ms(now, 0) // 1000,
        )

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        return False


# --------------------------------------------------------------------------- parsing

_HEADER_KEYS = frozenset({"kind", "header", "template"})
_OAUTH2_KEYS = frozenset(
    {"kind", "token_url", "client_id_env", "client_secret_env", "scopes", "refresh_skew_seconds", "client_auth"}
)
_HMAC_KEYS: Mapping[str, frozenset[str]] = {
    "binance": frozenset({"kind", "style", "recv_window_ms", "key_header", "server_time_path"}),
    "okx": frozenset({"kind", "style", "server_time_path"}),
    "snaptrade": frozenset({"kind", "style", "client_id_env", "consumer_key_env"}),
}
_KINDS = ("header", "oauth2", "hmac")
_MAX_REFRESH_SKEW_SECONDS = 86400


class _AuthReader:
    """Validates one ``auth`` entry; every error names the provider and the ``auth.<key>``."""

    def __init__(self, provider: str, raw: Mapping[str, Any]) -> None:
        self.provider = provider
        self.raw = raw

    def fail(self, key: str, problem: str) -> ConfigurationError:
        where = f"auth.{key}" if key else "auth"
        return ConfigurationError(f"provider {self.provider!r}: {where} {problem}")

    def only(self, allowed: frozenset[str], what: str) -> None:
        unknown = sorted(str(key) for key in self.raw if key not in allowed)
        if unknown:
            raise self.fail(unknown[0], f"is not a known key for {what} (allowed: {', '.join(sorted(allowed))})")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value

    def header_name(self, key: str, default: str) -> str:
        name = self.text(key, default)
        if not _HEADER_NAME.fullmatch(name):
            raise self.fail(key, "must be an HTTP header name (letters, digits and -, no spaces or colons)")
        return name

    def env_name(self, key: str) -> str:
        name = self.text(key)
        if not _ENV_NAME.fullmatch(name):
            raise self.fail(key, "must be the name of an environment variable (letters, digits, _)")
        return name

    def path(self, key: str, default: str) -> str:
        path = self.text(key, default)
        if not path.startswith("/") or "?" in path or "#" in path:
            raise self.fail(key, "must be a path from the provider's host on ('/api/...'), without a query")
        return path

    def template(self) -> tuple[str, tuple[str, ...]]:
        template = self.text("template")
        if not header_safe(template):
            # With its literal text safe here and every credential it fills checked per call, what it
            # renders is safe too: no check of the rendered header is needed on every request.
            raise self.fail(
                "template", "must be a string without line breaks, in Latin-1 (what an HTTP header carries)"
            )
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise self.fail("template", f"is not a valid format string ({exc})") from None
        fields: list[str] = []
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise self.fail("template", "fields must be plain names like {access_token}")
            if name not in fields:
                fields.append(name)
        return template, tuple(fields)

    def token_url(self, origin: str) -> str:
        url = self.text("token_url")
        if url.startswith("/"):
            url = origin.rstrip("/") + url
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise self.fail("token_url", "must not embed credentials (use client_id_env / client_secret_env)")
        if parts.query or parts.fragment:
            raise self.fail("token_url", "must not have a query string or fragment")
        if not parts.hostname:
            raise self.fail("token_url", "must be an absolute https URL or a path on the provider's origin")
        if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
            return url
        raise self.fail("token_url", "must use https (http only on a loopback host, for local runs)")

    def scopes(self) -> tuple[str, ...]:
        value = self.raw.get("scopes", [])
        if not isinstance(value, list) or not all(
            isinstance(scope, str) and scope and not any(c.isspace() for c in scope) for scope in value
        ):
            raise self.fail("scopes", "must be a list of scope names (non-empty strings without spaces)")
        return tuple(value)

    def skew(self) -> float:
        value = self.raw.get("refresh_skew_seconds", DEFAULT_REFRESH_SKEW_SECONDS)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= _MAX_REFRESH_SKEW_SECONDS
        ):
            raise self.fail(
                "refresh_skew_seconds", f"must be a number of seconds from 0 to {_MAX_REFRESH_SKEW_SECONDS}"
            )
        return float(value)

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(key, f"must be an integer from {minimum} to {maximum}")
        return value


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(provider: str, raw: Any, origin: str) -> RequestAuth | None:
    """Validate a providers-file ``auth`` entry; ``ConfigurationError`` naming the bad key.

    ``None`` (no entry) means anonymous calls. ``origin`` is the provider's ``scheme://host[:port]``:
    an ``oauth2`` ``token_url`` given as a path is taken from it. Nothing is read from the
    environment here: app secrets are read when they are first needed.
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"provider {provider!r}: auth must be a JSON object")
    reader = _AuthReader(provider, raw)
    kind = raw.get("kind", "header")
    if kind == "header":
        reader.only(_HEADER_KEYS, "kind 'header'")
        header = reader.header_name("header", DEFAULT_AUTH_HEADER)
        template, fields = reader.template()
        return HeaderAuth(provider, header, template, fields)
    if kind == "oauth2":
        reader.only(_OAUTH2_KEYS, "kind 'oauth2'")
        client_auth = raw.get("client_auth", "body")
        if client_auth not in ("body", "basic"):
            raise reader.fail("client_auth", "must be 'body' or 'basic'")
        config = OAuth2Config(
            provider=provider,
            token_url=reader.token_url(origin),
            client_id_env=reader.env_name("client_id_env"),
            client_secret_env=reader.env_name("client_secret_env"),
            scopes=reader.scopes(),
            refresh_skew_seconds=reader.skew(),
            client_auth="basic" if client_auth == "basic" else "body",
        )
        return OAuth2Auth(provider, config)
    if kind == "hmac":
        style = raw.get("style")
        if not isinstance(style, str) or style not in _HMAC_KEYS:
            raise reader.fail("style", f"must be one of {', '.join(sorted(_HMAC_KEYS))}")
        reader.only(_HMAC_KEYS[style], f"hmac style {style!r}")
        if style == "binance":
            return BinanceAuth(
                provider,
                recv_window_ms=reader.integer(
                    "recv_window_ms", DEFAULT_BINANCE_RECV_WINDOW_MS, 1, MAX_BINANCE_RECV_WINDOW_MS
                ),
                key_header=reader.header_name("key_header", DEFAULT_BINANCE_KEY_HEADER),
                server_time_path=reader.path("server_time_path", DEFAULT_BINANCE_SERVER_TIME_PATH),
            )
        if style == "okx":
            return OkxAuth(provider, server_time_path=reader.path("server_time_path", DEFAULT_OKX_SERVER_TIME_PATH))
        return SnapTradeAuth(
            provider,
            client_id_env=reader.env_name("client_id_env"),
            consumer_key_env=reader.env_name("consumer_key_env"),
        )
    raise reader.fail("kind", f"must be one of {', '.join(_KINDS)}")
