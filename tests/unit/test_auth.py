"""The ``auth`` entry of a ``rest`` provider: parsing, credential checks, signing and clock-skew recovery.

Signatures are checked against Binance's published HMAC example, and for OKX and SnapTrade
against HMACs computed here, independently, from the providers' documented pre-hash strings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import ProviderAuthError, ProviderError
from chalicelib.providers.auth import OutgoingRequest, RequestAuth
from chalicelib.providers.auth_config import parse_auth
from chalicelib.providers.auth_header import HeaderAuth, OAuth2Auth
from chalicelib.providers.auth_hmac import BinanceAuth, OkxAuth, SnapTradeAuth
from chalicelib.providers.hmac_signing import okx_timestamp
from chalicelib.providers.oauth2 import OAuth2TokenClient

NOW = FakeClock().now()  # 2026-01-01T00:00:00Z

# Binance's documented example (SIGNED endpoint security, HMAC): a public, fake key pair.
BINANCE_DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BINANCE_DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BINANCE_DOC_PARAMS = (
    ("symbol", "LTCBTC"),
    ("side", "BUY"),
    ("type", "LIMIT"),
    ("timeInForce", "GTC"),
    ("quantity", "1"),
    ("price", "0.1"),
)
BINANCE_DOC_TIMESTAMP_MS = 1499827319559
BINANCE_DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"

OKX_SECRET = "22582BD0CFF14C41EDBF1AB98506286D"
OKX_CREDENTIALS = {"api_key": "okx-key-1", "api_secret": OKX_SECRET, "passphrase": "okx-pass-phrase"}
SNAP_CONSUMER_KEY = "snap-consumer-key-value"
SNAP_CREDENTIALS = {"user_id": "u-1", "user_secret": "user-secret-value"}


def _hmac(key: str, message: bytes) -> bytes:
    return hmac.new(key.encode(), message, hashlib.sha256).digest()


def _request(path: str = "/api/v3/account", **overrides: Any) -> OutgoingRequest:
    values: dict[str, Any] = {"method": "GET", "origin": "https://api.example.test", "path": path}
    values.update(overrides)
    return OutgoingRequest(**values)


def _parse(raw: Any, origin: str = "https://api.example.test") -> RequestAuth:
    auth = parse_auth("demo", raw, origin)
    assert auth is not None
    return auth


def _config_error(raw: Any, origin: str = "https://api.example.test") -> str:
    with pytest.raises(ConfigurationError) as caught:
        parse_auth("demo", raw, origin)
    return str(caught.value)


def _never_fetch(path: str) -> Any:
    raise AssertionError(f"unexpected fetch of {path}")


# --------------------------------------------------------------------------- parsing


def test_no_auth_entry_means_anonymous_calls() -> None:
    # Given no auth entry / When parsed / Then there is nothing to apply
    assert parse_auth("demo", None, "https://api.example.test") is None


def test_kind_defaults_to_header_with_the_authorization_header() -> None:
    # Given today's header entry without a kind
    auth = _parse({"template": "Bearer {access_token}"})

    # Then it is a header auth on Authorization, needing the template's fields, with no token client
    assert isinstance(auth, HeaderAuth)
    assert auth.header == "Authorization"
    assert auth.fields == ("access_token",)
    assert auth.token_client is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Bearer x", "provider 'demo': auth must be a JSON object"),
        ({"kind": "magic"}, "provider 'demo': auth.kind must be one of header, oauth2, hmac"),
        ({"template": "Bearer {access_token}", "scopes": []}, "provider 'demo': auth.scopes is not a known key"),
        ({"header": "X-Key"}, "provider 'demo': auth.template must be a non-empty string"),
        ({"header": "X Key", "template": "{k}"}, "provider 'demo': auth.header must be an HTTP header name"),
        ({"template": "Bearer {access_token}\r\nX: y"}, "auth.template must be a string without line breaks"),
        ({"template": "Bearer {0}"}, "auth.template fields must be plain names"),
        ({"template": "Bearer {token!r}"}, "auth.template fields must be plain names"),
        ({"template": "Bearer {token"}, "auth.template is not a valid format string"),
        ({"kind": "oauth2", "client_id_env": "A", "client_secret_env": "B"}, "auth.token_url must be a non-empty"),
        (
            {
                "kind": "oauth2",
                "token_url": "http://auth.example.test/t",
                "client_id_env": "A",
                "client_secret_env": "B",
            },
            "auth.token_url must use https",
        ),
        (
            {"kind": "oauth2", "token_url": "https://u:p@a.test/t", "client_id_env": "A", "client_secret_env": "B"},
            "auth.token_url must not embed credentials",
        ),
        (
            {"kind": "oauth2", "token_url": "https://a.test/t?x=1", "client_id_env": "A", "client_secret_env": "B"},
            "auth.token_url must not have a query string",
        ),
        ({"kind": "oauth2", "token_url": "/t", "client_secret_env": "B"}, "auth.client_id_env must be a non-empty"),
        (
            {"kind": "oauth2", "token_url": "/t", "client_id_env": "my-id", "client_secret_env": "B"},
            "auth.client_id_env must be the name of an environment variable",
        ),
        (
            {"kind": "oauth2", "token_url": "/t", "client_id_env": "A", "client_secret_env": "B", "scopes": "offline"},
            "auth.scopes must be a list",
        ),
        (
            {"kind": "oauth2", "token_url": "/t", "client_id_env": "A", "client_secret_env": "B", "scopes": ["a b"]},
            "auth.scopes must be a list",
        ),
        (
            {"kind": "oauth2", "token_url": "/t", "client_id_env": "A", "client_secret_env": "B", "client_auth": "jwt"},
            "auth.client_auth must be 'body' or 'basic'",
        ),
        (
            {
                "kind": "oauth2",
                "token_url": "/t",
                "client_id_env": "A",
                "client_secret_env": "B",
                "refresh_skew_seconds": -1,
            },
            "auth.refresh_skew_seconds must be a number of seconds",
        ),
        (
            {"kind": "oauth2", "token_url": "/t", "client_id_env": "A", "client_secret_env": "B", "client_id": "x"},
            "auth.client_id is not a known key for kind 'oauth2'",
        ),
        ({"kind": "hmac"}, "auth.style must be one of binance, okx, snaptrade"),
        ({"kind": "hmac", "style": "kraken"}, "auth.style must be one of binance, okx, snaptrade"),
        ({"kind": "hmac", "style": "okx", "recv_window_ms": 5000}, "auth.recv_window_ms is not a known key"),
        ({"kind": "hmac", "style": "binance", "recv_window_ms": 60001}, "auth.recv_window_ms must be an integer"),
        ({"kind": "hmac", "style": "binance", "recv_window_ms": True}, "auth.recv_window_ms must be an integer"),
        ({"kind": "hmac", "style": "binance", "key_header": "X:Key"}, "auth.key_header must be an HTTP header name"),
        ({"kind": "hmac", "style": "binance", "server_time_path": "api/v3/time"}, "auth.server_time_path must be"),
        ({"kind": "hmac", "style": "snaptrade", "client_id_env": "SNAP_ID"}, "auth.consumer_key_env must be"),
        (
            {"kind": "hmac", "style": "snaptrade", "consumer_key_env": "K", "api_key": "x"},
            "auth.api_key is not a known",
        ),
    ],
)
def test_bad_entries_are_rejected_naming_the_key(raw: Any, expected: str) -> None:
    # Given a malformed auth entry / When parsed / Then the error names the provider and the auth key
    assert expected in _config_error(raw)


@pytest.mark.parametrize(
    ("token_url", "origin", "expected"),
    [
        ("https://api.prod.whoop.com/oauth/oauth2/token", "https://api.prod.whoop.com", None),
        ("/oauth/oauth2/token", "https://api.prod.whoop.com", "https://api.prod.whoop.com/oauth/oauth2/token"),
        ("http://127.0.0.1:9000/token", "https://api.example.test", None),
        ("http://localhost:9000/token", "https://api.example.test", None),
        ("http://[::1]:9000/token", "https://api.example.test", None),
    ],
)
def test_oauth2_token_url_is_https_or_loopback(token_url: str, origin: str, expected: str | None) -> None:
    # Given an oauth2 entry with a full https, a relative, or a loopback http token URL
    raw = {
        "kind": "oauth2",
        "token_url": token_url,
        "client_id_env": "WHOOP_CLIENT_ID",
        "client_secret_env": "WHOOP_CLIENT_SECRET",
        "scopes": ["offline"],
    }

    # When parsed
    auth = _parse(raw, origin)

    # Then it is accepted, a path being taken from the provider's origin
    assert isinstance(auth, OAuth2Auth)
    assert auth.config.token_url == (expected or token_url)
    assert auth.config.scopes == ("offline",)
    assert auth.config.refresh_skew_seconds == 300
    assert auth.config.client_auth == "body"
    assert isinstance(auth.token_client, OAuth2TokenClient)


def test_parsing_reads_no_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given app-level variable names that are not set in this process
    for name in ("NOPE_ID", "NOPE_SECRET", "NOPE_KEY"):
        monkeypatch.delenv(name, raising=False)

    # When oauth2 and snaptrade entries naming them are parsed
    oauth = _parse(
        {"kind": "oauth2", "token_url": "/t", "client_id_env": "NOPE_ID", "client_secret_env": "NOPE_SECRET"}
    )
    snap = _parse({"kind": "hmac", "style": "snaptrade", "client_id_env": "NOPE_ID", "consumer_key_env": "NOPE_KEY"})

    # Then parsing succeeds: the variables are only needed when a call is made
    assert isinstance(oauth, OAuth2Auth)
    assert isinstance(snap, SnapTradeAuth)


# --------------------------------------------------------------------------- header kind


def test_header_auth_renders_the_template_and_replaces_a_same_named_header() -> None:
    # Given a header auth on X-Api-Key and a request that already has a stale x-api-key
    auth = _parse({"header": "X-Api-Key", "template": "{api_key}:{account}"})
    request = _request(headers={"Accept": "application/json", "x-api-key": "stale"}, query=(("page", "2"),))

    # When applied
    signed = auth.apply(request, {"api_key": "k-1", "account": 42}, NOW)

    # Then exactly one key header is sent, other headers and the query are untouched
    assert dict(signed.headers) == {"Accept": "application/json", "X-Api-Key": "k-1:42"}
    assert signed.query == (("page", "2"),)
    assert request.headers["x-api-key"] == "stale"


def test_header_auth_validation_names_missing_fields_without_values() -> None:
    # Given a template needing two credentials and a connection with one (and an empty one)
    auth = _parse({"template": "{api_key}:{api_secret}"})

    # When validated
    with pytest.raises(ValidationError) as caught:
        auth.validate({"api_key": "visible-key-value", "api_secret": ""})

    # Then the missing field is named, no value is quoted
    assert "api_secret" in str(caught.value)
    assert "visible-key-value" not in str(caught.value)


@pytest.mark.parametrize("value", ["tok\r\nX-Evil: 1", "tök€n"])
def test_header_auth_refuses_values_a_header_cannot_carry(value: str) -> None:
    # Given a credential with a line break or a non-Latin-1 character
    auth = _parse({"template": "Bearer {access_token}"})

    # When validated or applied
    # Then it is refused, naming the field and never the value
    with pytest.raises(ValidationError) as invalid:
        auth.validate({"access_token": value})
    with pytest.raises(ProviderAuthError) as refused:
        auth.apply(_request(), {"access_token": value}, NOW)
    for error in (invalid.value, refused.value):
        assert value not in str(error)
    assert "access_token" in str(invalid.value)


def test_header_auth_apply_with_missing_credentials_is_an_auth_error() -> None:
    # Given a connection without the template's field
    auth = _parse({"template": "Bearer {access_token}"})

    # When applied / Then the connection is reported as lacking it
    with pytest.raises(ProviderAuthError, match="access_token"):
        auth.apply(_request(), {}, NOW)
    assert auth.recover(401, {}, _never_fetch, NOW) is False


# --------------------------------------------------------------------------- oauth2 kind


def _oauth2() -> RequestAuth:
    return _parse({"kind": "oauth2", "token_url": "/t", "client_id_env": "A_ID", "client_secret_env": "A_SECRET"})


def test_oauth2_apply_sends_the_bearer_token() -> None:
    # Given an oauth2 auth and a connection's tokens
    auth = _oauth2()

    # When applied
    signed = auth.apply(_request(), {"access_token": "at-1", "refresh_token": "rt-1"}, NOW)

    # Then the access token goes as a Bearer Authorization header
    assert signed.headers == {"Authorization": "Bearer at-1"}


def test_oauth2_validation_needs_both_tokens_and_a_readable_expiry() -> None:
    # Given an oauth2 auth
    auth = _oauth2()

    # When validated with missing tokens / a bad expiry / good values
    with pytest.raises(ValidationError) as missing:
        auth.validate({"access_token": "at-secret"})
    with pytest.raises(ValidationError) as bad_expiry:
        auth.validate({"access_token": "at-secret", "refresh_token": "rt-secret", "expires_at": "next week"})
    auth.validate({"access_token": "at", "refresh_token": "rt", "expires_at": "2026-01-01T01:00:00Z"})
    auth.validate({"access_token": "at", "refresh_token": "rt", "expires_at": NOW + 3600})

    # Then only field names are reported
    assert "refresh_token" in str(missing.value)
    assert "at-secret" not in str(missing.value)
    assert "expires_at" in str(bad_expiry.value)
    assert "rt-secret" not in str(bad_expiry.value)


def test_oauth2_apply_without_access_token_is_an_auth_error() -> None:
    # Given a connection whose access token is blank / When applied / Then it is refused by name
    with pytest.raises(ProviderAuthError, match="access_token"):
        _oauth2().apply(_request(), {"access_token": " ", "refresh_token": "rt"}, NOW)


# --------------------------------------------------------------------------- binance


def test_binance_reproduces_the_documented_signature() -> None:
    # Given Binance's documented order parameters, secret and timestamp
    auth = _parse({"kind": "hmac", "style": "binance"})
    request = _request("/api/v3/order", method="POST", query=BINANCE_DOC_PARAMS)
    credentials = {"api_key": BINANCE_DOC_KEY, "api_secret": BINANCE_DOC_SECRET}

    # When the request is signed at that moment
    signed = auth.apply(request, credentials, BINANCE_DOC_TIMESTAMP_MS / 1000)

    # Then recvWindow and timestamp follow the parameters, the documented signature is appended last,
    # and the key travels in X-MBX-APIKEY
    assert signed.query == (
        *BINANCE_DOC_PARAMS,
        ("recvWindow", "5000"),
        ("timestamp", str(BINANCE_DOC_TIMESTAMP_MS)),
        ("signature", BINANCE_DOC_SIGNATURE),
    )
    assert signed.headers == {"X-MBX-APIKEY": BINANCE_DOC_KEY}


def test_binance_signs_what_is_sent_with_configured_window_and_header() -> None:
    # Given a binance auth with its own recvWindow and key header, and a query needing encoding
    auth = _parse({"kind": "hmac", "style": "binance", "recv_window_ms": 10000, "key_header": "X-Key"})
    request = _request("/api/v3/myTrades", query=(("symbol", "BTCUSDT"), ("note", "a b&c")))

    # When signed
    signed = auth.apply(request, {"api_key": "k", "api_secret": "s3cret"}, NOW)

    # Then the signature is the hex HMAC of exactly the urlencoded query before it
    *params, (name, signature) = signed.query
    assert name == "signature"
    assert params[-2:] == [("recvWindow", "10000"), ("timestamp", str(int(NOW * 1000)))]
    assert signature == hmac.new(b"s3cret", urlencode(params).encode(), hashlib.sha256).hexdigest()
    assert signed.headers == {"X-Key": "k"}


def test_binance_signs_a_form_body_after_the_query() -> None:
    # Given a POST whose parameters are partly in a form body (Binance's "totalParams")
    auth = _parse({"kind": "hmac", "style": "binance"})
    request = _request("/api/v3/order", method="POST", query=(("symbol", "LTCBTC"),), body=b"quantity=1&price=0.1")

    # When signed
    signed = auth.apply(request, {"api_key": "k", "api_secret": "s"}, NOW)

    # Then the signature covers the query string directly followed by the body
    *params, (_, signature) = signed.query
    expected = hmac.new(b"s", urlencode(params).encode() + b"quantity=1&price=0.1", hashlib.sha256).hexdigest()
    assert signature == expected


def test_binance_resigning_a_signed_request_keeps_one_signature() -> None:
    # Given a request already signed once
    auth = _parse({"kind": "hmac", "style": "binance"})
    credentials = {"api_key": "k", "api_secret": "s"}
    once = auth.apply(_request(query=(("symbol", "X"),)), credentials, NOW)

    # When it is signed again a second later
    twice = auth.apply(once, credentials, NOW + 1)

    # Then the auth parameters appear once, with the new timestamp
    names = [name for name, _ in twice.query]
    assert names == ["symbol", "recvWindow", "timestamp", "signature"]
    assert dict(twice.query)["timestamp"] == str(int((NOW + 1) * 1000))


def test_binance_validation_names_missing_fields_only() -> None:
    # Given a connection with a key but no secret / When validated / Then api_secret is named
    with pytest.raises(ValidationError) as caught:
        _parse({"kind": "hmac", "style": "binance"}).validate({"api_key": "binance-key-value"})
    assert "api_secret" in str(caught.value)
    assert "binance-key-value" not in str(caught.value)


class _BinanceServer:
    """A Binance whose clock runs ``skew_ms`` ahead of ours and that checks timestamp windows."""

    def __init__(self, skew_ms: int) -> None:
        self.skew_ms = skew_ms
        self.time_fetches: list[str] = []

    def server_ms(self, now: float) -> int:
        return round(now * 1000) + self.skew_ms

    def answer(self, request: OutgoingRequest, now: float) -> tuple[int, Any]:
        params = dict(request.query)
        timestamp, window = int(params["timestamp"]), int(params["recvWindow"])
        server = self.server_ms(now)
        if timestamp < server + 1000 and server - timestamp <= window:
            return 200, {"balances": []}
        return 400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}

    def fetch_json(self, now: float) -> Callable[[str], Any]:
        def fetch(path: str) -> Any:
            self.time_fetches.append(path)
            return {"serverTime": self.server_ms(now)}

        return fetch


@pytest.mark.parametrize("skew_ms", [-7000, 9000])
def test_binance_learns_the_server_clock_after_a_1021_and_the_retry_passes(skew_ms: int) -> None:
    # Given a Binance whose clock is several seconds off ours
    server = _BinanceServer(skew_ms)
    auth = _parse({"kind": "hmac", "style": "binance"})
    credentials = {"api_key": "k", "api_secret": "s"}
    request = _request(query=(("omitZeroBalances", "true"),))

    # When the first call is refused with -1021 and the auth is asked to recover
    status, body = server.answer(auth.apply(request, credentials, NOW), NOW)
    assert (status, body["code"]) == (400, -1021)
    retry = auth.recover(status, body, server.fetch_json(NOW), NOW)

    # Then it fetched the server time once, says a retry is worth it, and the retry is accepted
    assert retry is True
    assert server.time_fetches == ["/api/v3/time"]
    assert isinstance(auth, BinanceAuth)
    assert auth.clock_offset_ms == skew_ms
    again = auth.apply(request, credentials, NOW + 0.2)
    assert dict(again.query)["timestamp"] == str(round((NOW + 0.2) * 1000) + skew_ms)
    assert server.answer(again, NOW + 0.2)[0] == 200


def test_binance_uses_the_configured_server_time_path() -> None:
    # Given a binance-style exchange with its own time endpoint
    auth = _parse({"kind": "hmac", "style": "binance", "server_time_path": "/fapi/v1/time"})
    fetched: list[str] = []

    def fetch(path: str) -> Any:
        fetched.append(path)
        return {"serverTime": round(NOW * 1000) + 1500}

    # When it recovers from -1021 / Then that path was asked
    assert auth.recover(400, {"code": -1021, "msg": "ahead"}, fetch, NOW) is True
    assert fetched == ["/fapi/v1/time"]


@pytest.mark.parametrize(
    ("status", "body", "server"),
    [
        (400, {"code": -1100, "msg": "Illegal characters found in parameter"}, None),
        (401, {"code": -1021}, None),
        (400, "not json", None),
        (400, {"code": True}, None),
        (400, {"code": -1021}, {"serverTime": "soon"}),
        (400, {"code": -1021}, {"serverTime": 0}),
        (400, {"code": -1021}, {"serverTime": round(NOW * 1000) + 3 * 24 * 3600 * 1000}),
        (400, {"code": -1021}, ProviderError("time endpoint down")),
    ],
)
def test_binance_recover_declines_what_it_cannot_mend(status: int, body: Any, server: Any) -> None:
    # Given a refusal that is not -1021, or a server time that is missing, absurd or unreachable
    auth = _parse({"kind": "hmac", "style": "binance"})
    assert isinstance(auth, BinanceAuth)

    def fetch(path: str) -> Any:
        if isinstance(server, Exception):
            raise server
        if server is None:
            raise AssertionError("the time endpoint must not be asked")
        return server

    # When asked to recover / Then no retry is proposed and the clock offset is unchanged
    assert auth.recover(status, body, fetch, NOW) is False
    assert auth.clock_offset_ms == 0


def test_clock_offsets_are_per_provider() -> None:
    # Given two binance-style providers, one of which learned an offset
    first = _parse({"kind": "hmac", "style": "binance"})
    second = _parse({"kind": "hmac", "style": "binance"})
    first.recover(400, {"code": -1021}, lambda path: {"serverTime": round(NOW * 1000) + 4000}, NOW)

    # When both sign at the same moment
    credentials = {"api_key": "k", "api_secret": "s"}
    first_ts = dict(first.apply(_request(), credentials, NOW).query)["timestamp"]
    second_ts = dict(second.apply(_request(), credentials, NOW).query)["timestamp"]

    # Then only the first one shifted its timestamp
    assert int(first_ts) - int(second_ts) == 4000


# --------------------------------------------------------------------------- okx


def test_okx_timestamp_format() -> None:
    # Given OKX's documented example moment / When formatted / Then ISO-8601 UTC with milliseconds and Z
    assert okx_timestamp(1607418537715) == "2020-12-08T09:08:57.715Z"
    assert okx_timestamp(1607418537005) == "2020-12-08T09:08:57.005Z"


def test_okx_get_signs_timestamp_method_and_path_with_query() -> None:
    # Given a GET with a query string, at OKX's documented example moment
    auth = _parse({"kind": "hmac", "style": "okx"})
    request = _request("/api/v5/account/balance", query=(("ccy", "BTC"),), headers={"Accept": "application/json"})

    # When signed
    signed = auth.apply(request, OKX_CREDENTIALS, 1607418537.715)

    # Then the four OK-ACCESS headers are set, the signature covering timestamp + GET + path?query
    prehash = b"2020-12-08T09:08:57.715ZGET/api/v5/account/balance?ccy=BTC"
    assert signed.headers == {
        "Accept": "application/json",
        "OK-ACCESS-KEY": "okx-key-1",
        "OK-ACCESS-SIGN": base64.b64encode(_hmac(OKX_SECRET, prehash)).decode(),
        "OK-ACCESS-TIMESTAMP": "2020-12-08T09:08:57.715Z",
        "OK-ACCESS-PASSPHRASE": "okx-pass-phrase",
    }
    assert signed.query == request.query


def test_okx_post_signs_the_body() -> None:
    # Given a POST with a JSON body and no query
    auth = _parse({"kind": "hmac", "style": "okx"})
    body = b'{"instId":"BTC-USDT","lever":"5","mgnMode":"isolated"}'
    request = _request("/api/v5/account/set-leverage", method="post", body=body)

    # When signed
    signed = auth.apply(request, OKX_CREDENTIALS, 1607418537.715)

    # Then the body follows the upper-cased method and the path in the pre-hash
    prehash = b"2020-12-08T09:08:57.715ZPOST/api/v5/account/set-leverage" + body
    assert signed.headers["OK-ACCESS-SIGN"] == base64.b64encode(_hmac(OKX_SECRET, prehash)).decode()


def test_okx_validation_names_the_missing_passphrase() -> None:
    # Given a connection without a passphrase / When validated / Then passphrase is named
    with pytest.raises(ValidationError, match="passphrase"):
        _parse({"kind": "hmac", "style": "okx"}).validate({"api_key": "k", "api_secret": "s"})


def test_okx_learns_the_server_clock_after_50102() -> None:
    # Given an OKX refusal for an expired timestamp and a server clock 2.5 s ahead
    auth = _parse({"kind": "hmac", "style": "okx"})
    fetched: list[str] = []

    def fetch(path: str) -> Any:
        fetched.append(path)
        return {"code": "0", "msg": "", "data": [{"ts": str(round(NOW * 1000) + 2500)}]}

    # When asked to recover
    retry = auth.recover(401, {"msg": "Timestamp request expired", "code": "50102"}, fetch, NOW)

    # Then it asked the public time endpoint and the next timestamp is shifted
    assert retry is True
    assert fetched == ["/api/v5/public/time"]
    assert isinstance(auth, OkxAuth)
    assert auth.clock_offset_ms == 2500
    signed = auth.apply(_request(), OKX_CREDENTIALS, NOW)
    assert signed.headers["OK-ACCESS-TIMESTAMP"] == okx_timestamp(round(NOW * 1000) + 2500)


@pytest.mark.parametrize(
    ("body", "server"),
    [
        ({"msg": "Invalid signature", "code": "50113"}, None),
        ({"code": "50102"}, {"code": "0", "data": []}),
        ({"code": "50102"}, {"code": "0", "data": [{"ts": "later"}]}),
    ],
)
def test_okx_recover_declines_other_errors_and_bad_times(body: Any, server: Any) -> None:
    # Given another refusal, or a time answer without a usable ts
    auth = _parse({"kind": "hmac", "style": "okx"})

    def fetch(path: str) -> Any:
        if server is None:
            raise AssertionError("the time endpoint must not be asked")
        return server

    # When asked to recover / Then no retry is proposed
    assert auth.recover(401, body, fetch, NOW) is False


# --------------------------------------------------------------------------- snaptrade


@pytest.fixture
def snaptrade_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPTRADE_CLIENT_ID", "PASSIVTEST")
    monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", SNAP_CONSUMER_KEY)


def _snaptrade() -> RequestAuth:
    return _parse(
        {
            "kind": "hmac",
            "style": "snaptrade",
            "client_id_env": "SNAPTRADE_CLIENT_ID",
            "consumer_key_env": "SNAPTRADE_CONSUMER_KEY",
        },
        "https://api.snaptrade.com",
    )


@pytest.mark.usefixtures("snaptrade_env")
def test_snaptrade_get_adds_the_query_and_signs_the_canonical_json() -> None:
    # Given a GET of the accounts list at timestamp 1635790389 (SnapTrade's documented example)
    auth = _snaptrade()
    request = _request("/api/v1/accounts", origin="https://api.snaptrade.com")

    # When signed
    signed = auth.apply(request, SNAP_CREDENTIALS, 1635790389.9)

    # Then the query carries the app and the user, and Signature is the base64 HMAC (consumer key) of the
    # canonical JSON written out by hand here: sorted keys, no spaces, null content for no body
    assert signed.query == (
        ("clientId", "PASSIVTEST"),
        ("timestamp", "1635790389"),
        ("userId", "u-1"),
        ("userSecret", "user-secret-value"),
    )
    canonical = (
        '{"content":null,"path":"/api/v1/accounts",'
        '"query":"clientId=PASSIVTEST&timestamp=1635790389&userId=u-1&userSecret=user-secret-value"}'
    )
    assert signed.headers == {"Signature": base64.b64encode(_hmac(SNAP_CONSUMER_KEY, canonical.encode())).decode()}


@pytest.mark.usefixtures("snaptrade_env")
def test_snaptrade_post_signs_the_body_with_sorted_keys() -> None:
    # Given a POST with a JSON body whose keys are not sorted, and a prior query parameter
    auth = _snaptrade()
    body = json.dumps({"b": 1, "a": {"z": True, "y": None}}).encode()
    request = _request("/api/v1/snapTrade/x", method="POST", query=(("page", "2"),), body=body)

    # When signed
    signed = auth.apply(request, SNAP_CREDENTIALS, 1635790389.0)

    # Then content is the body's JSON, keys sorted at every level
    query = "page=2&clientId=PASSIVTEST&timestamp=1635790389&userId=u-1&userSecret=user-secret-value"
    canonical = '{"content":{"a":{"y":null,"z":true},"b":1},"path":"/api/v1/snapTrade/x","query":"' + query + '"}'
    assert signed.headers["Signature"] == base64.b64encode(_hmac(SNAP_CONSUMER_KEY, canonical.encode())).decode()


@pytest.mark.usefixtures("snaptrade_env")
@pytest.mark.parametrize("body", [b"{}", b"", b"  "])
def test_snaptrade_signs_an_empty_body_as_null(body: bytes) -> None:
    # Given a request with an empty body
    auth = _snaptrade()

    # When signed with and without that body
    with_body = auth.apply(_request("/api/v1/x", body=body), SNAP_CREDENTIALS, NOW)
    without = auth.apply(_request("/api/v1/x"), SNAP_CREDENTIALS, NOW)

    # Then both signatures are the same (content null)
    assert with_body.headers["Signature"] == without.headers["Signature"]


@pytest.mark.usefixtures("snaptrade_env")
def test_snaptrade_refuses_to_sign_a_non_json_body() -> None:
    # Given a form body / When signed / Then it is refused for good
    with pytest.raises(ProviderError) as caught:
        _snaptrade().apply(_request("/api/v1/x", method="POST", body=b"a=1"), SNAP_CREDENTIALS, NOW)
    assert caught.value.retryable is False


def test_snaptrade_reads_the_app_key_when_signing_and_names_a_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a snaptrade auth parsed before the consumer key variable exists
    monkeypatch.setenv("SNAPTRADE_CLIENT_ID", "PASSIVTEST")
    monkeypatch.delenv("SNAPTRADE_CONSUMER_KEY", raising=False)
    auth = _snaptrade()

    # When signing without it / Then the error names the variable, not a secret
    with pytest.raises(ProviderError) as caught:
        auth.apply(_request("/api/v1/accounts"), SNAP_CREDENTIALS, NOW)
    assert "SNAPTRADE_CONSUMER_KEY" in str(caught.value)
    assert "user-secret-value" not in str(caught.value)
    assert caught.value.retryable is False

    # When the variable is then set / Then the same auth object signs
    monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", SNAP_CONSUMER_KEY)
    assert "Signature" in auth.apply(_request("/api/v1/accounts"), SNAP_CREDENTIALS, NOW).headers


def test_snaptrade_validation_names_missing_user_fields() -> None:
    # Given a connection without its user secret / When validated / Then user_secret is named
    with pytest.raises(ValidationError) as caught:
        _snaptrade().validate({"user_id": "u-1"})
    assert "user_secret" in str(caught.value)
    assert _snaptrade().recover(401, {"code": "1076"}, _never_fetch, NOW) is False


# --------------------------------------------------------------------------- across kinds


@pytest.mark.parametrize(
    "raw",
    [
        {"template": "Bearer {access_token}"},
        {"kind": "oauth2", "token_url": "/t", "client_id_env": "A_ID", "client_secret_env": "A_SECRET"},
        {"kind": "hmac", "style": "binance"},
        {"kind": "hmac", "style": "okx"},
        {"kind": "hmac", "style": "snaptrade", "client_id_env": "A_ID", "consumer_key_env": "A_KEY"},
    ],
)
def test_credentials_must_be_an_object_and_errors_quote_no_value(raw: Any) -> None:
    # Given any auth kind
    auth = _parse(raw)
    secret_values = {"api_key": "\r\nkey-value", "access_token": "tok\nen-value", "passphrase": "p\rvalue"}

    # When validated with a non-object, then with broken values
    with pytest.raises(ValidationError, match="JSON object"):
        auth.validate(["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as caught:
        auth.validate(secret_values)

    # Then no credential value appears in the message
    for value in secret_values.values():
        assert value not in str(caught.value)
