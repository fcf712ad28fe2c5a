"""The ``auth`` entry of a ``rest`` provider in the providers file, read into an auth kind.

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

Nothing is read from the environment here (app secrets are read when first needed), and every
error names the provider and the ``auth.<key>``, never a value.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from chalicelib.domain.config import ConfigurationError
from chalicelib.providers.auth import RequestAuth
from chalicelib.providers.auth_header import DEFAULT_AUTH_HEADER, HeaderAuth, OAuth2Auth
from chalicelib.providers.auth_hmac import (
    DEFAULT_BINANCE_SERVER_TIME_PATH,
    DEFAULT_OKX_SERVER_TIME_PATH,
    BinanceAuth,
    OkxAuth,
    SnapTradeAuth,
)
from chalicelib.providers.hmac_signing import (
    DEFAULT_BINANCE_KEY_HEADER,
    DEFAULT_BINANCE_RECV_WINDOW_MS,
    MAX_BINANCE_RECV_WINDOW_MS,
)
from chalicelib.providers.http import HEADER_NAME, header_safe
from chalicelib.providers.oauth2 import DEFAULT_REFRESH_SKEW_SECONDS, OAuth2Config

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
        if not HEADER_NAME.fullmatch(name):
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
