"""The OAuth2 refresh-token grant (RFC 6749 section 6) against one provider's token endpoint.

``OAuth2TokenClient`` implements ``base.TokenClient``: it decides whether a connection's access
token needs renewing and spends the refresh token once. It never stores anything and never reads
the clock: the engine owns single flight (a rotating refresh token must never be spent twice,
see ``sync/token_refresh.py``), persistence and time.

The app's client id and secret are deployment configuration, never part of a connection: the
providers file names the environment variables that hold them, and they are read at refresh
time only, so importing or parsing never needs them.

Nothing here ever puts a token, a secret or a response body into an exception message: errors
name the provider, the HTTP status and, at most, the OAuth error code (RFC 6749 section 5.2),
and only when it looks like one.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote_plus, urlencode

import requests

from chalicelib.domain.retry import parse_retry_after
from chalicelib.domain.upstream import (
    ProviderAuthError,
    ProviderError,
    ProviderGrantError,
    ProviderRateLimitError,
    TokenGrant,
)
from chalicelib.providers.http import HttpAnswer, header_safe, send

DEFAULT_REFRESH_SKEW_SECONDS = 300.0
TOKEN_RESPONSE_MAX_BYTES = 64 * 1024
"""A token answer is a few hundred bytes; anything near this is not one."""

GRANT_REFUSALS = frozenset({"invalid_grant"})
"""OAuth error codes after which retrying the same refresh token cannot help: the user must connect again.

``invalid_client`` and ``unauthorized_client`` are not among them: they refuse the app (a wrong client
secret in the deployment), and condemning every user's connection for that would be the wrong repair."""
CLIENT_REFUSALS = frozenset({"unauthorized_client", "invalid_client"})

_OAUTH_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

ClientAuthentication = Literal["body", "basic"]


@dataclass(frozen=True)
class OAuth2Config:
    """One provider's token endpoint, as the providers file's ``auth`` entry declares it."""

    provider: str
    token_url: str
    client_id_env: str
    """Name of the environment variable holding the app's client id."""
    client_secret_env: str
    """Name of the environment variable holding the app's client secret."""
    scopes: tuple[str, ...] = ()
    refresh_skew_seconds: float = DEFAULT_REFRESH_SKEW_SECONDS
    client_auth: ClientAuthentication = "body"
    """``body``: client_id/client_secret form fields; ``basic``: HTTP Basic (RFC 6749 section 2.3.1)."""


# --------------------------------------------------------------------------- pure helpers


def parse_expires_at(value: Any) -> float | None:
    """``expires_at`` as epoch seconds: a number, or an ISO-8601 string (no zone means UTC).

    ``None`` when absent or unusable (a boolean, an empty or unparsable string, NaN).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _usable_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def app_setting(provider: str, variable: str) -> str:
    """One of the app's own credentials (an OAuth2 client, a signing app), read from the deployment's
    environment now: never at import or parse time, never from a connection."""
    value = os.environ.get(variable, "")
    if not value.strip():
        raise ProviderError(
            f"provider {provider!r}: environment variable {variable} (app credential) is not set", retryable=False
        )
    return value


def needs_refresh(credentials: Mapping[str, Any], now: float, skew_seconds: float) -> bool:
    """No usable access token, or one that expires within ``skew_seconds`` of ``now``.

    A token without a known expiry is trusted until the provider refuses it. An ``expires_at``
    that cannot be read counts as expired: refreshing early is cheap, calling with a dead token is not.
    """
    if _usable_text(credentials.get("access_token")) is None:
        return True
    raw_expiry = credentials.get("expires_at")
    if raw_expiry is None:
        return False
    expires_at = parse_expires_at(raw_expiry)
    return expires_at is None or expires_at - skew_seconds <= now


def _oauth_error_code(body: Any) -> str | None:
    """The RFC 6749 5.2 ``error`` of an answer, only when it looks like a code (never free text)."""
    if not isinstance(body, Mapping):
        return None
    code = body.get("error")
    if isinstance(code, str) and _OAUTH_ERROR_CODE.fullmatch(code):
        return code
    return None


def _expires_in(value: Any) -> float | None:
    """``expires_in`` seconds: a number or a digit string (some providers quote it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def grant_from_answer(body: Any, now: float, where: str) -> TokenGrant:
    """The grant in a successful token answer.

    Only a missing access token fails: by the time this runs the provider may already have
    rotated the refresh token, so anything else that is odd (a non-string refresh token, an
    unreadable ``expires_in``) is dropped rather than turned into an error that would lose it.
    """
    if not isinstance(body, Mapping):
        raise ProviderError(f"{where}: the token answer is not a JSON object", retryable=False)
    access_token = _usable_text(body.get("access_token"))
    if access_token is None:
        code = _oauth_error_code(body)
        if code in GRANT_REFUSALS:
            raise ProviderGrantError(f"{where}: the refresh token was refused (OAuth error {code!r})")
        raise ProviderError(f"{where}: the token answer has no access_token", retryable=False)
    if not header_safe(access_token):
        raise ProviderError(f"{where}: the new access token cannot be sent in an HTTP header", retryable=False)
    refresh_token = _usable_text(body.get("refresh_token"))
    expires_in = _expires_in(body.get("expires_in"))
    return TokenGrant(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=None if expires_in is None else now + expires_in,
    )


def refusal_error(status: int, body: Any, where: str) -> ProviderError:
    """The error for a 4xx token answer (429 excepted): a refused grant, refused credentials, or a bad request."""
    code = _oauth_error_code(body)
    said = f" (OAuth error {code!r})" if code else ""
    if code in GRANT_REFUSALS:
        return ProviderGrantError(
            f"{where}: HTTP {status}, the refresh token was refused{said}; the user must connect again",
            status_code=status,
        )
    if code in CLIENT_REFUSALS:
        return ProviderError(
            f"{where}: HTTP {status}, the app's client credentials were refused{said}; "
            "check the deployment's client id and secret",
            retryable=False,
            status_code=status,
        )
    if status in (401, 403):
        return ProviderAuthError(f"{where}: HTTP {status}, token request rejected{said}", status_code=status)
    return ProviderError(f"{where}: HTTP {status}, token request refused{said}", retryable=False, status_code=status)


# --------------------------------------------------------------------------- the client


class OAuth2TokenClient:
    """``base.TokenClient`` for one provider: the refresh-token grant over a guarded HTTP call."""

    def __init__(self, config: OAuth2Config, *, session: requests.Session | None = None) -> None:
        self.config = config
        self._session = session

    @property
    def session(self) -> requests.Session:
        """Created on first use, so that building a provider opens nothing."""
        if self._session is None:
            self._session = requests.Session()
        return self._session

    @property
    def where(self) -> str:
        return f"provider {self.config.provider!r} token endpoint"

    def needs_refresh(self, credentials: Mapping[str, Any], now: float) -> bool:
        return needs_refresh(credentials, now, self.config.refresh_skew_seconds)

    def refresh(self, credentials: Mapping[str, Any], *, timeout_seconds: float, now: float) -> TokenGrant:
        where = self.where
        refresh_token = _usable_text(credentials.get("refresh_token"))
        if refresh_token is None:
            # Nothing to spend: only a new authorisation by the user can mend this connection.
            raise ProviderGrantError(f"{where}: the connection has no refresh_token; the user must connect again")
        client_id = app_setting(self.config.provider, self.config.client_id_env)
        client_secret = app_setting(self.config.provider, self.config.client_secret_env)

        form: list[tuple[str, str]] = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if self.config.client_auth == "basic":
            # RFC 6749 2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
            pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form += [("client_id", client_id), ("client_secret", client_secret)]
        if self.config.scopes:
            form.append(("scope", " ".join(self.config.scopes)))

        answer = send(
            self.session,
            "POST",
            self.config.token_url,
            where=where,
            timeout=timeout_seconds,
            headers=headers,
            data=urlencode(form),
            max_bytes=TOKEN_RESPONSE_MAX_BYTES,
        )
        error = self._failure(answer, now)
        if error is not None:
            error.response_headers = answer.headers
            raise error
        body = answer.json_or_none()
        if body is None:
            raise ProviderError(
                f"{where}: HTTP {answer.status} answer is not valid JSON", retryable=False, status_code=answer.status
            )
        return grant_from_answer(body, now, where)

    def _failure(self, answer: HttpAnswer, now: float) -> ProviderError | None:
        where = self.where
        status = answer.status
        if 200 <= status < 300:
            return None
        retry_after = answer.header("Retry-After")
        if status == 429:
            return ProviderRateLimitError(
                f"{where}: HTTP 429, rate limited",
                retry_after=retry_after,
                retry_after_seconds=parse_retry_after(retry_after, now),
            )
        if status >= 500:
            return ProviderError(
                f"{where}: HTTP {status}, upstream failure",
                retryable=True,
                status_code=status,
                retry_after_seconds=parse_retry_after(retry_after, now),
            )
        if 400 <= status < 500:
            return refusal_error(status, answer.json_or_none(), where)
        return ProviderError(f"{where}: unexpected HTTP {status}", retryable=False, status_code=status)
