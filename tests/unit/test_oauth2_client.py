"""The OAuth2 refresh-token client against a mocked token endpoint (``responses``, no real network).

Fixtures follow WHOOP's token endpoint (``POST https://api.prod.whoop.com/oauth/oauth2/token``,
form-encoded ``grant_type=refresh_token``, ``client_id``, ``client_secret``, ``scope=offline``,
``refresh_token``; a JSON answer with ``access_token``, ``expires_in``, ``refresh_token``,
``scope``, ``token_type``) and RFC 6749 section 5.2 error bodies.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
import responses

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.upstream import (
    ProviderAuthError,
    ProviderError,
    ProviderGrantError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    TokenGrant,
)
from chalicelib.providers.auth_config import parse_auth
from chalicelib.providers.auth_header import OAuth2Auth
from chalicelib.providers.oauth2 import OAuth2Config, OAuth2TokenClient, needs_refresh, parse_expires_at

TOKEN_URL = "https://api.prod.whoop.com/oauth/oauth2/token"
NOW = FakeClock().now()
CLIENT_ID = "whoop-client-id-123"
CLIENT_SECRET = "whoop-client-s3cret-value"
OLD_ACCESS = "old-access-token-AAAA"
OLD_REFRESH = "old-refresh-token-RRRR"
NEW_ACCESS = "new-access-token-BBBB"
NEW_REFRESH = "new-refresh-token-SSSS"
SECRETS = (CLIENT_SECRET, OLD_ACCESS, OLD_REFRESH, NEW_ACCESS, NEW_REFRESH)

CREDENTIALS: dict[str, Any] = {
    "access_token": OLD_ACCESS,
    "refresh_token": OLD_REFRESH,
    "expires_at": NOW - 10,
    "user_id": 10129,
}


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHOOP_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("WHOOP_CLIENT_SECRET", CLIENT_SECRET)


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _client(**overrides: Any) -> OAuth2TokenClient:
    values: dict[str, Any] = {
        "provider": "whoop",
        "token_url": TOKEN_URL,
        "client_id_env": "WHOOP_CLIENT_ID",
        "client_secret_env": "WHOOP_CLIENT_SECRET",
        "scopes": ("offline",),
    }
    values.update(overrides)
    return OAuth2TokenClient(OAuth2Config(**values))


def _token_answer(**overrides: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "access_token": NEW_ACCESS,
        "expires_in": 3600,
        "refresh_token": NEW_REFRESH,
        "scope": "offline read:recovery",
        "token_type": "bearer",
    }
    answer.update(overrides)
    return {key: value for key, value in answer.items() if value is not None}


def _sent_form(http: responses.RequestsMock, index: int = 0) -> dict[str, str]:
    body = http.calls[index].request.body
    text = body.decode() if isinstance(body, bytes) else str(body)
    return dict(parse_qsl(text, keep_blank_values=True))


def _assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc)):
        for secret in SECRETS:
            assert secret not in text
    assert exc.__cause__ is None


def _refused(client: OAuth2TokenClient, credentials: dict[str, Any] | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        client.refresh(credentials or CREDENTIALS, timeout_seconds=5, now=NOW)
    _assert_no_secret(caught.value)
    return caught.value


# --------------------------------------------------------------------------- success


@pytest.mark.usefixtures("app_env")
def test_refresh_posts_the_whoop_form_and_returns_the_rotated_grant(http: responses.RequestsMock) -> None:
    # Given a token endpoint that rotates the refresh token
    http.post(TOKEN_URL, json=_token_answer())

    # When the client spends the refresh token
    grant = _client().refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then the grant carries both new tokens and an absolute expiry
    assert grant == TokenGrant(access_token=NEW_ACCESS, refresh_token=NEW_REFRESH, expires_at=NOW + 3600)
    # And exactly one form-encoded POST carried the app's credentials in the body
    assert len(http.calls) == 1
    sent = http.calls[0].request
    assert sent.method == "POST"
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in sent.headers
    assert _sent_form(http) == {
        "grant_type": "refresh_token",
        "refresh_token": OLD_REFRESH,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "offline",
    }
    # And merging keeps the connection's other fields
    merged = grant.merged_into(CREDENTIALS)
    assert merged["refresh_token"] == NEW_REFRESH
    assert merged["user_id"] == 10129


@pytest.mark.usefixtures("app_env")
def test_an_answer_without_refresh_token_keeps_the_old_one(http: responses.RequestsMock) -> None:
    # Given a provider that does not rotate refresh tokens
    http.post(TOKEN_URL, json=_token_answer(refresh_token=None))

    # When the client refreshes
    grant = _client().refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then the grant says "kept", and the merged credentials still hold the old refresh token
    assert grant.refresh_token is None
    assert grant.merged_into(CREDENTIALS)["refresh_token"] == OLD_REFRESH
    assert grant.access_token == NEW_ACCESS


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [(None, None), ("7200", NOW + 7200), ("soon", None), (True, None), (-5, None)],
)
def test_expires_in_is_read_leniently(http: responses.RequestsMock, expires_in: Any, expected: float | None) -> None:
    # Given an answer whose expires_in is absent, quoted or nonsense
    http.post(TOKEN_URL, json=_token_answer(expires_in=expires_in))

    # When the client refreshes
    grant = _client().refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then a readable value becomes an absolute expiry and anything else "unknown" (the rotated
    # refresh token must never be lost over a cosmetic field)
    assert grant.expires_at == expected
    assert grant.refresh_token == NEW_REFRESH


@pytest.mark.usefixtures("app_env")
def test_several_scopes_are_sent_space_joined(http: responses.RequestsMock) -> None:
    # Given a provider configured with several scopes
    http.post(TOKEN_URL, json=_token_answer())

    # When the client refreshes
    _client(scopes=("offline", "read:recovery", "read:sleep")).refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then the scope field is one space-separated string
    assert _sent_form(http)["scope"] == "offline read:recovery read:sleep"


@pytest.mark.usefixtures("app_env")
def test_no_scopes_means_no_scope_field(http: responses.RequestsMock) -> None:
    # Given a provider configured without scopes
    http.post(TOKEN_URL, json=_token_answer())

    # When the client refreshes
    _client(scopes=()).refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then no scope is sent (the grant keeps the originally granted scope)
    assert "scope" not in _sent_form(http)


@pytest.mark.usefixtures("app_env")
def test_basic_client_auth_sends_credentials_in_the_authorization_header(http: responses.RequestsMock) -> None:
    # Given a provider that wants HTTP Basic client authentication
    http.post(TOKEN_URL, json=_token_answer())

    # When the client refreshes
    _client(client_auth="basic").refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then id and secret travel in the Basic header, not in the form
    header = http.calls[0].request.headers["Authorization"]
    assert header == "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    form = _sent_form(http)
    assert "client_id" not in form
    assert "client_secret" not in form
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == OLD_REFRESH


@pytest.mark.usefixtures("app_env")
def test_basic_client_auth_form_encodes_id_and_secret(
    http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client secret with characters RFC 6749 2.3.1 says to form-encode
    monkeypatch.setenv("WHOOP_CLIENT_SECRET", "a:b c")
    http.post(TOKEN_URL, json=_token_answer())

    # When the client refreshes with Basic authentication
    _client(client_auth="basic").refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then the colon and the space are encoded before base64, so the server splits id and secret right
    header = http.calls[0].request.headers["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == f"{CLIENT_ID}:a%3Ab+c"


# --------------------------------------------------------------------------- refusals


@pytest.mark.usefixtures("app_env")
def test_invalid_grant_is_a_grant_error_naming_the_code_but_no_token(http: responses.RequestsMock) -> None:
    # Given a token endpoint that refuses a revoked refresh token and echoes it in its description
    http.post(
        TOKEN_URL,
        status=400,
        json={"error": "invalid_grant", "error_description": f"refresh token {OLD_REFRESH} was revoked"},
    )

    # When the client refreshes
    error = _refused(_client())

    # Then the engine is told the user must connect again, with the OAuth code and no token
    assert isinstance(error, ProviderGrantError)
    assert error.retryable is False
    assert error.upstream_status == 400
    assert "invalid_grant" in str(error)


@pytest.mark.usefixtures("app_env")
def test_invalid_grant_at_401_is_a_grant_error(http: responses.RequestsMock) -> None:
    # Given a 401 carrying invalid_grant (some providers answer 401 rather than 400)
    http.post(TOKEN_URL, status=401, json={"error": "invalid_grant"})

    # When the client refreshes
    error = _refused(_client())

    # Then it is a grant error naming that code
    assert isinstance(error, ProviderGrantError)
    assert "invalid_grant" in str(error)


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize(("status", "code"), [(400, "unauthorized_client"), (401, "invalid_client")])
def test_client_refusals_blame_the_deployment_not_the_user(
    http: responses.RequestsMock, status: int, code: str
) -> None:
    # Given the token endpoint refuses the app itself (a wrong client secret in the deployment)
    http.post(TOKEN_URL, status=status, json={"error": code})

    # When the client refreshes
    error = _refused(_client())

    # Then it fails for good, names the code, and does not condemn the user's connection
    assert not isinstance(error, ProviderGrantError)
    assert isinstance(error, ProviderError) and error.retryable is False
    assert code in str(error) and "client id and secret" in str(error)


@pytest.mark.usefixtures("app_env")
def test_other_oauth_errors_are_not_retryable_but_not_grant_errors(http: responses.RequestsMock) -> None:
    # Given a 400 invalid_scope (a configuration problem, not the user's grant)
    http.post(TOKEN_URL, status=400, json={"error": "invalid_scope"})

    # When the client refreshes
    error = _refused(_client())

    # Then it fails for good without condemning the connection
    assert not isinstance(error, ProviderAuthError)
    assert error.retryable is False
    assert "invalid_scope" in str(error)


@pytest.mark.usefixtures("app_env")
def test_a_401_without_an_oauth_code_is_an_auth_error(http: responses.RequestsMock) -> None:
    # Given a bare 401 with an HTML body
    http.post(TOKEN_URL, status=401, body="<html>nope</html>")

    # When the client refreshes
    error = _refused(_client())

    # Then the credentials were rejected, but not as a revoked grant
    assert isinstance(error, ProviderAuthError)
    assert not isinstance(error, ProviderGrantError)


@pytest.mark.usefixtures("app_env")
def test_an_error_code_that_is_not_a_code_is_not_quoted(http: responses.RequestsMock) -> None:
    # Given an error field carrying free text (here, a token)
    http.post(TOKEN_URL, status=400, json={"error": f"bad token {OLD_REFRESH}"})

    # When the client refreshes
    error = _refused(_client())

    # Then the message does not repeat it
    assert "OAuth error" not in str(error)


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(http: responses.RequestsMock, status: int) -> None:
    # Given a token endpoint that is down and says when to come back
    http.post(TOKEN_URL, status=status, body="upstream down", headers={"Retry-After": "30"})

    # When the client refreshes
    error = _refused(_client())

    # Then the failure is retryable and carries the provider's wait
    assert type(error) is ProviderError
    assert error.retryable is True
    assert error.upstream_status == status
    assert error.retry_after_seconds == 30
    assert error.response_headers["retry-after"] == "30"


@pytest.mark.usefixtures("app_env")
def test_429_is_a_rate_limit_error(http: responses.RequestsMock) -> None:
    # Given a rate-limited token endpoint
    http.post(TOKEN_URL, status=429, json={"error": "too_many_requests"}, headers={"Retry-After": "12"})

    # When the client refreshes
    error = _refused(_client())

    # Then it is a retryable rate-limit error with the raw and parsed wait
    assert isinstance(error, ProviderRateLimitError)
    assert error.retryable is True
    assert error.retry_after == "12"
    assert error.retry_after_seconds == 12


@pytest.mark.usefixtures("app_env")
def test_a_timeout_is_retryable(http: responses.RequestsMock) -> None:
    # Given a token endpoint that never answers in time
    http.post(TOKEN_URL, body=requests.exceptions.ReadTimeout(f"{TOKEN_URL}?refresh_token={OLD_REFRESH}"))

    # When the client refreshes
    error = _refused(_client())

    # Then it is a retryable timeout, without the requests exception's text
    assert isinstance(error, ProviderTimeoutError)
    assert error.retryable is True


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        json.dumps(["access_token"]),
        json.dumps({"token_type": "bearer", "expires_in": 60}),
        '{"access_token": ""}',
    ],
)
def test_malformed_answers_are_not_retryable(http: responses.RequestsMock, body: str) -> None:
    # Given a 200 that is not JSON, not an object, or has no access token
    http.post(TOKEN_URL, status=200, body=body, content_type="application/json")

    # When the client refreshes
    error = _refused(_client())

    # Then it fails for good (retrying would spend the refresh token again)
    assert type(error) is ProviderError
    assert error.retryable is False


@pytest.mark.usefixtures("app_env")
def test_a_200_carrying_invalid_grant_is_a_grant_error(http: responses.RequestsMock) -> None:
    # Given a provider that reports errors with status 200
    http.post(TOKEN_URL, status=200, json={"error": "invalid_grant"})

    # When the client refreshes
    error = _refused(_client())

    # Then it is still recognised as a refused grant
    assert isinstance(error, ProviderGrantError)


@pytest.mark.usefixtures("app_env")
def test_a_redirect_is_refused_and_not_followed(http: responses.RequestsMock) -> None:
    # Given a token endpoint that redirects elsewhere
    http.post(TOKEN_URL, status=302, headers={"Location": "https://evil.example/steal"})
    http.post("https://evil.example/steal", json=_token_answer())

    # When the client refreshes
    error = _refused(_client())

    # Then the redirect is an error and the form (with the secrets) went nowhere else
    assert error.retryable is False
    assert "redirect" in str(error)
    assert [call.request.url for call in http.calls] == [TOKEN_URL]


@pytest.mark.usefixtures("app_env")
def test_an_oversized_answer_is_abandoned(http: responses.RequestsMock) -> None:
    # Given a token answer far larger than any real one
    http.post(TOKEN_URL, status=200, body=b"x" * (70 * 1024))

    # When the client refreshes
    error = _refused(_client())

    # Then the body is not buffered to the end
    assert error.retryable is False
    assert "larger than" in str(error)


# --------------------------------------------------------------------------- app settings and inputs


def test_a_missing_client_secret_variable_is_named_and_nothing_is_sent(
    http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployment that set the client id but not the secret
    monkeypatch.setenv("WHOOP_CLIENT_ID", CLIENT_ID)
    monkeypatch.delenv("WHOOP_CLIENT_SECRET", raising=False)
    http.post(TOKEN_URL, json=_token_answer())

    # When the client refreshes
    error = _refused(_client())

    # Then the error names the variable and no refresh token was spent
    assert "WHOOP_CLIENT_SECRET" in str(error)
    assert error.retryable is False
    assert not isinstance(error, ProviderAuthError)
    assert len(http.calls) == 0


@pytest.mark.usefixtures("app_env")
def test_a_connection_without_refresh_token_needs_a_new_authorisation(http: responses.RequestsMock) -> None:
    # Given credentials that lost their refresh token
    http.post(TOKEN_URL, json=_token_answer())
    credentials = {"access_token": OLD_ACCESS, "refresh_token": " "}

    # When the client refreshes
    error = _refused(_client(), credentials)

    # Then it is a grant error and nothing was sent
    assert isinstance(error, ProviderGrantError)
    assert len(http.calls) == 0


def test_parsed_oauth2_auth_refreshes_lazily_reading_the_environment(
    http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an oauth2 entry parsed while the app's variables are not yet set, with a path token_url
    monkeypatch.delenv("LOCAL_ID", raising=False)
    monkeypatch.delenv("LOCAL_SECRET", raising=False)
    auth = parse_auth(
        "local",
        {
            "kind": "oauth2",
            "token_url": "/oauth/token",
            "client_id_env": "LOCAL_ID",
            "client_secret_env": "LOCAL_SECRET",
        },
        "http://127.0.0.1:8765",
    )
    assert isinstance(auth, OAuth2Auth)
    assert auth.token_client is auth.client
    monkeypatch.setenv("LOCAL_ID", "id-1")
    monkeypatch.setenv("LOCAL_SECRET", "secret-1")
    http.post("http://127.0.0.1:8765/oauth/token", json=_token_answer())

    # When its token client refreshes
    grant = auth.client.refresh(CREDENTIALS, timeout_seconds=5, now=NOW)

    # Then the variables were read at refresh time and the token URL taken from the origin
    assert grant.access_token == NEW_ACCESS
    assert _sent_form(http)["client_id"] == "id-1"


# --------------------------------------------------------------------------- needs_refresh


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({"refresh_token": OLD_REFRESH}, True),
        ({"access_token": "  ", "expires_at": NOW + 9999}, True),
        ({"access_token": OLD_ACCESS}, False),
        ({"access_token": OLD_ACCESS, "expires_at": NOW + 3600}, False),
        ({"access_token": OLD_ACCESS, "expires_at": NOW + 301}, False),
        ({"access_token": OLD_ACCESS, "expires_at": NOW + 300}, True),
        ({"access_token": OLD_ACCESS, "expires_at": NOW - 1}, True),
        ({"access_token": OLD_ACCESS, "expires_at": "2026-01-01T01:00:00Z"}, False),
        ({"access_token": OLD_ACCESS, "expires_at": "2026-01-01T00:04:00+00:00"}, True),
        ({"access_token": OLD_ACCESS, "expires_at": "tomorrow"}, True),
    ],
)
def test_needs_refresh_with_the_default_skew(credentials: dict[str, Any], expected: bool) -> None:
    # Given credentials in various states at 2026-01-01T00:00:00Z, and the default 300 s skew
    client = _client()

    # When the client is asked whether to refresh
    answer = client.needs_refresh(credentials, NOW)

    # Then only a missing token or one expiring within the skew (or unreadable) needs it
    assert answer is expected


def test_needs_refresh_uses_the_configured_skew() -> None:
    # Given a token expiring in 200 s
    credentials = {"access_token": OLD_ACCESS, "expires_at": NOW + 200}

    # When asked with skews of 60 and 300 seconds
    # Then only the larger skew refreshes it
    assert needs_refresh(credentials, NOW, 60) is False
    assert needs_refresh(credentials, NOW, 300) is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_767_225_600, 1_767_225_600.0),
        ("2026-01-01T00:00:00Z", 1_767_225_600.0),
        ("2026-01-01T00:00:00", 1_767_225_600.0),
        ("2026-01-01T01:00:00+01:00", 1_767_225_600.0),
        ("", None),
        (True, None),
        (float("nan"), None),
        ({"at": 1}, None),
    ],
)
def test_parse_expires_at(value: Any, expected: float | None) -> None:
    # Given an expires_at as stored on a connection
    # When it is read
    # Then numbers and ISO-8601 strings (naive ones as UTC) give epoch seconds; anything else None
    assert parse_expires_at(value) == expected
