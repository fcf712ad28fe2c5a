"""RS256/ES256 tokens against a JWKS served on 127.0.0.1 (keys made in the test; no network beyond loopback)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import jwt
import pytest

from chalicelib.api.auth import authenticate
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import AuthenticationError, AuthUnavailableError
from chalicelib.store.token_keys import TokenKeys
from tests.jwks_loopback import AUDIENCE, ISSUER, JwksServer, SigningKey, idp_claims

NOW = FakeClock().now()
HMAC_SECRET = "hmac-secret-for-the-mixed-mode-tests-long-enough"
RSA = SigningKey.rsa()
EC = SigningKey.ec()


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with JwksServer(RSA, EC) as server:
        yield server


def _settings(server: JwksServer, **overrides: Any) -> Settings:
    return replace(Settings(jwks_url=server.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE), **overrides)


def _auth(token: str, settings: Settings, keys: TokenKeys) -> Any:
    return authenticate({"Authorization": f"Bearer {token}"}, settings, NOW, keys)


def _refused(token: str, settings: Settings, keys: TokenKeys) -> str:
    with pytest.raises(AuthenticationError) as caught:
        _auth(token, settings, keys)
    assert token not in caught.value.message
    return caught.value.message


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
def test_rs256_and_es256_tokens_from_the_jwks_are_accepted(idp: JwksServer, key: SigningKey) -> None:
    # Given a service trusting the loopback JWKS / When a token signed by one of its keys arrives
    settings = _settings(idp)
    principal = _auth(key.token(idp_claims("u1", NOW, scope="read operator")), settings, TokenKeys(settings))
    # Then its subject and scope are read
    assert (principal.subject, principal.operator) == ("u1", True)


def test_the_jwks_is_fetched_once_across_many_requests_and_unknown_kids(idp: JwksServer) -> None:
    # Given one service instance's keys
    settings = _settings(idp)
    keys = TokenKeys(settings)

    # When it authenticates 50 requests with both keys, and 10 with key ids the JWKS does not publish
    for n in range(50):
        key = RSA if n % 2 else EC
        assert _auth(key.token(idp_claims(f"u{n}", NOW)), settings, keys).subject == f"u{n}"
    for n in range(10):
        assert "key id" in _refused(RSA.token(idp_claims("u1", NOW), kid=f"made-up-{n}"), settings, keys)

    # Then the JWKS was fetched once (an unknown kid refetches at most once per 30 s cooldown, started by it)
    assert idp.fetches == 1


def test_an_unknown_kid_is_401_not_500(idp: JwksServer) -> None:
    # Given a key the identity provider does not publish, signing with a kid it does not know
    stranger = SigningKey.rsa("stranger")
    settings = _settings(idp)
    # When authenticated / Then it is a 401
    assert "key id" in _refused(stranger.token(idp_claims("u1", NOW)), settings, TokenKeys(settings))


def test_a_token_signed_by_another_key_under_a_known_kid_is_401(idp: JwksServer) -> None:
    forger = SigningKey.rsa(RSA.kid)
    settings = _settings(idp)
    assert "not valid" in _refused(forger.token(idp_claims("u1", NOW)), settings, TokenKeys(settings))


def test_a_token_without_kid_is_401(idp: JwksServer) -> None:
    settings = _settings(idp)
    token = jwt.encode(idp_claims("u1", NOW), RSA.private_key, algorithm="RS256")
    assert "kid" in _refused(token, settings, TokenKeys(settings))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "https://evil.example.test"}, "not valid"),
        ({"aud": "another-client"}, "not meant for this service"),
        ({"exp": int(NOW) - 60}, "expired"),
        ({"exp": int(NOW) + 2 * 86400}, "longer than"),
        ({"scope": {"operator": False}}, "scope"),
    ],
)
def test_issuer_audience_and_times_are_checked(idp: JwksServer, claims: dict[str, Any], reason: str) -> None:
    settings = _settings(idp)
    token = RSA.token({**idp_claims("u1", NOW), **claims})
    assert reason in _refused(token, settings, TokenKeys(settings))


def test_a_token_without_issuer_is_401(idp: JwksServer) -> None:
    settings = _settings(idp)
    claims = idp_claims("u1", NOW)
    del claims["iss"]
    _refused(RSA.token(claims), settings, TokenKeys(settings))


def _hs256_signed_with(claims: dict[str, Any], kid: str, secret: bytes) -> str:
    """By hand: PyJWT itself refuses to use a public key as an HMAC secret, an attacker does not."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("form", ["pem", "jwk"])
def test_alg_confusion_an_hs256_token_signed_with_the_public_key_fails(idp: JwksServer, form: str) -> None:
    # Given an attacker who signs HS256 with the RSA public key (its PEM, or its JWK JSON) as the HMAC secret
    public = RSA.public_pem() if form == "pem" else json.dumps(RSA.jwk()).encode()
    forged = _hs256_signed_with(idp_claims("admin", NOW, scope="operator"), RSA.kid, public)
    # When a JWKS-only service and a JWKS + HS256 service check it
    jwks_only = _settings(idp)
    mixed = _settings(idp, jwt_secret=HMAC_SECRET)
    # Then both refuse it: the first takes no HS256 at all, the second checks HS256 with its secret only
    assert "algorithm" in _refused(forged, jwks_only, TokenKeys(jwks_only))
    assert "not valid" in _refused(forged, mixed, TokenKeys(mixed))


def test_mixed_mode_accepts_hs256_from_the_secret_and_rs256_from_the_jwks(idp: JwksServer) -> None:
    settings = _settings(idp, jwt_secret=HMAC_SECRET)
    keys = TokenKeys(settings)
    hs = jwt.encode(idp_claims("u1", NOW), HMAC_SECRET, algorithm="HS256")
    assert _auth(hs, settings, keys).subject == "u1"
    assert _auth(RSA.token(idp_claims("u2", NOW)), settings, keys).subject == "u2"
    # And the HS256 token needed no JWKS fetch
    assert idp.fetches == 1


def test_an_rsa_key_cannot_sign_as_es256_nor_an_algorithm_outside_the_setting(idp: JwksServer) -> None:
    # Given a service accepting RS256 only
    settings = _settings(idp, jwt_algorithms="RS256")
    keys = TokenKeys(settings)
    # When an ES256 token (a published key) and an RS512 token (the RSA key, its kid) arrive
    es = EC.token(idp_claims("u1", NOW))
    rs512 = RSA.token(idp_claims("u1", NOW), algorithm="RS512")
    # Then both are refused, and an RS256 token passes
    assert "algorithm" in _refused(es, settings, keys)
    assert "algorithm is not accepted" in _refused(rs512, settings, keys)
    both = replace(settings, jwt_algorithms="RS256 RS512")
    assert "does not match its key" in _refused(rs512, both, TokenKeys(both))
    assert _auth(RSA.token(idp_claims("u1", NOW)), settings, keys).subject == "u1"


def test_a_cognito_access_token_is_accepted_through_client_id(idp: JwksServer) -> None:
    settings = _settings(idp)
    claims = idp_claims("u1", NOW, token_use="access", client_id=AUDIENCE, scope="smart-sync/read")
    del claims["aud"]
    assert _auth(RSA.token(claims), settings, TokenKeys(settings)).subject == "u1"


@pytest.mark.parametrize("failure", [500, 404, "not json", '{"keys": []}', '{"keys": "x"}', "[1, 2]"])
def test_a_jwks_that_cannot_be_read_is_a_503_to_retry(idp: JwksServer, failure: int | str) -> None:
    # Given an identity provider whose JWKS answers an error or something that is not a key set
    idp.fail_with = failure
    settings = _settings(idp)
    # When a token arrives / Then the caller is told to retry (503), not that its token is bad
    with pytest.raises(AuthUnavailableError):
        _auth(RSA.token(idp_claims("u1", NOW)), settings, TokenKeys(settings))


def test_an_unreachable_jwks_is_a_503() -> None:
    # Given a JWKS URL nothing listens on (a server started then stopped)
    with JwksServer(RSA) as gone:
        settings = _settings(gone)
    with pytest.raises(AuthUnavailableError):
        _auth(RSA.token(idp_claims("u1", NOW)), settings, TokenKeys(settings))
