"""Bearer tokens without I/O: scope shapes, time bounds against the injected clock, size, algorithms, settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest

from chalicelib.api.auth import authenticate, issue_token
from chalicelib.api.claims import LEEWAY_SECONDS
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import ConfigurationError, Settings, settings_from_env
from chalicelib.domain.errors import AuthenticationError
from chalicelib.store.jwt_secret import REPOSITORY_DEV_SECRETS
from chalicelib.store.token_keys import TokenKeys
from local.environment import LOCAL_JWT_SECRET

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
NOW = FakeClock().now()
SETTINGS = Settings(jwt_secret=SECRET)
PROJECT = Path(__file__).resolve().parents[2]


def _token(claims: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u1", "iat": int(NOW), "exp": int(NOW) + 600, **extra}


def _auth(token: str, settings: Settings = SETTINGS, now: float = NOW) -> Any:
    return authenticate({"Authorization": f"Bearer {token}"}, settings, now, TokenKeys(settings))


def _refused(token: str, settings: Settings = SETTINGS, now: float = NOW) -> str:
    with pytest.raises(AuthenticationError) as caught:
        _auth(token, settings, now)
    assert token not in caught.value.message
    return caught.value.message


# --------------------------------------------------------------------------- scope


@pytest.mark.parametrize(
    ("scope", "operator"),
    [
        ("operator", True),
        ("read operator write", True),
        (["read", "operator"], True),
        ([], False),
        ("", False),
        ("operators", False),
        (["operator extra"], False),
    ],
)
def test_scope_is_a_space_separated_string_or_a_list_of_strings(scope: Any, operator: bool) -> None:
    # Given a token whose scope is a string or a list of strings / When authenticated
    principal = _auth(_token(_claims(scope=scope)))
    # Then operator access follows the exact scope word
    assert principal.operator is operator


def test_a_token_without_scope_is_a_user_token() -> None:
    assert _auth(_token(_claims())).operator is False


@pytest.mark.parametrize(
    "scope",
    [{"operator": False}, {"operator": True}, 5, 0, True, False, None, ["operator", 5], [["operator"]], 1.5],
)
def test_any_other_scope_shape_is_401_never_operator_never_500(scope: Any) -> None:
    # Given a correctly signed token whose scope is a dict, a number, a bool, null or a list with non-strings
    token = _token(_claims(scope=scope))
    # When authenticated / Then it is refused as a bad token
    assert "scope" in _refused(token)


# --------------------------------------------------------------------------- time


def test_expiry_has_a_30_second_leeway_on_the_injected_clock() -> None:
    # Given a token that expired at NOW
    token = _token(_claims(exp=int(NOW)))
    # When checked within the leeway, then just past it
    assert _auth(token, now=NOW + LEEWAY_SECONDS).subject == "u1"
    # Then it is refused one second later
    assert "expired" in _refused(token, now=NOW + LEEWAY_SECONDS + 1)
    assert LEEWAY_SECONDS == 30


def test_iat_in_the_future_beyond_the_leeway_is_401() -> None:
    # Given tokens issued 30 s and 31 s ahead of this service's clock
    within = _token(_claims(iat=int(NOW) + 30, exp=int(NOW) + 600))
    beyond = _token(_claims(iat=int(NOW) + 31, exp=int(NOW) + 600))
    # When authenticated / Then clock skew within the leeway passes and beyond it is refused
    assert _auth(within).subject == "u1"
    assert "future" in _refused(beyond)


def test_nbf_in_the_future_is_401() -> None:
    assert "not valid yet" in _refused(_token(_claims(nbf=int(NOW) + 120)))
    assert _auth(_token(_claims(nbf=int(NOW) + 10))).subject == "u1"


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"iat": int(NOW), "exp": int(NOW) + 86400}, True),
        ({"iat": int(NOW), "exp": int(NOW) + 86401}, False),
        ({"iat": int(NOW) - 86400, "exp": int(NOW) + 1}, False),  # a two-day token in its second day
        ({"exp": int(NOW) + 86400}, True),
        ({"exp": int(NOW) + 10 * 365 * 86400}, False),  # no iat: bounded from now
    ],
)
def test_lifetime_beyond_the_max_after_iat_or_now_is_401(claims: dict[str, Any], accepted: bool) -> None:
    # Given tokens living up to and beyond 24 h / When authenticated
    token = _token({"sub": "u1", **claims})
    # Then only those within the bound pass
    if accepted:
        assert _auth(token).subject == "u1"
    else:
        assert "longer than the 86400 s" in _refused(token)


def test_the_max_lifetime_is_a_setting() -> None:
    # Given a 7-day limit (the local run's) / When a 7-day token is checked / Then it passes, 8 days do not
    settings = replace(SETTINGS, jwt_max_lifetime_seconds=7 * 86400)
    assert _auth(_token(_claims(exp=int(NOW) + 7 * 86400)), settings).subject == "u1"
    assert "longer" in _refused(_token(_claims(exp=int(NOW) + 8 * 86400)), settings)


@pytest.mark.parametrize("value", [True, "9999999999", None, [1], {"t": 1}, math.nan, math.inf])
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_time_claims_must_be_finite_numbers(claim: str, value: Any) -> None:
    # Given a signed token whose time claim is a bool, a string, null, a list, an object, NaN or infinity
    claims = _claims(**{claim: value})
    token = jwt.encode(claims, SECRET, algorithm="HS256", json_encoder=_NanEncoder)
    # When authenticated / Then it is a 401 (NaN would otherwise never compare as expired)
    _refused(token)


class _NanEncoder(json.JSONEncoder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_nan"] = True
        super().__init__(*args, **kwargs)


def test_a_token_without_exp_or_sub_is_401() -> None:
    _refused(_token({"sub": "u1"}))
    _refused(_token({"exp": int(NOW) + 60}))
    _refused(_token(_claims(sub="")))
    _refused(_token(_claims(sub=5)))


# --------------------------------------------------------------------------- size and shape


def test_a_token_over_the_size_limit_is_401_before_it_is_decoded() -> None:
    # Given a correctly signed token of more than 8 KiB (a big claim)
    big = _token(_claims(pad="x" * 9000))
    assert len(big) > 8192
    # When authenticated / Then it is refused for its size
    assert "longer than 8192 bytes" in _refused(big)
    # And a raised limit accepts it
    assert _auth(big, replace(SETTINGS, jwt_max_token_bytes=16384)).subject == "u1"


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.e30.",
        "e30.e30.e30",
        "W10.e30.e30",
        "eyJhbGciOjV9.e30.e30",
        "\u00e9.\u00e9.\u00e9",
    ],
)
def test_malformed_tokens_are_401(token: str) -> None:
    _refused(token)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_alg_none_and_other_hmac_algorithms_are_refused() -> None:
    # Given an unsigned token and an HS512 token signed with the right secret
    unsigned = jwt.encode(_claims(), "", algorithm="none")
    hs512 = jwt.encode(_claims(), SECRET, algorithm="HS512")
    # When authenticated / Then neither is accepted
    assert "algorithm" in _refused(unsigned)
    assert "algorithm" in _refused(hs512)


def test_an_hs256_token_is_refused_when_only_a_jwks_is_configured() -> None:
    # Given a JWKS-only service (no secret) and an HS256 token: no key fetch is needed to refuse it
    settings = Settings(jwks_url="https://idp.example.test/jwks.json", jwt_issuer="i", jwt_audience="a")
    # When authenticated / Then the algorithm is refused
    assert "algorithm" in _refused(_token(_claims(iss="i", aud="a")), settings)


def test_audience_and_issuer_are_checked_when_set() -> None:
    settings = replace(SETTINGS, jwt_issuer="https://issuer.test", jwt_audience="smart-sync")
    good = _claims(iss="https://issuer.test", aud="smart-sync")
    assert _auth(_token(good), settings).subject == "u1"
    assert _auth(_token({**good, "aud": ["other", "smart-sync"]}), settings).subject == "u1"
    _refused(_token({**good, "aud": "other"}), settings)
    _refused(_token({**good, "aud": ["other", 5]}), settings)
    _refused(_token({**good, "iss": "https://evil.test"}), settings)
    _refused(_token(_claims(aud="smart-sync")), settings)


def test_a_cognito_access_token_names_its_audience_in_client_id() -> None:
    # Given Cognito's access-token shape: no aud, client_id and token_use=access
    settings = replace(SETTINGS, jwt_audience="app-client-1")
    access = _claims(client_id="app-client-1", token_use="access")
    # When authenticated / Then client_id stands for aud, but only on an access token with no aud
    assert _auth(_token(access), settings).subject == "u1"
    _refused(_token({**access, "client_id": "app-client-2"}), settings)
    _refused(_token({**access, "token_use": "id"}), settings)


def test_issue_token_round_trips_with_iat() -> None:
    token = issue_token(SETTINGS, "u1", NOW, operator=True)
    assert jwt.decode(token, options={"verify_signature": False})["iat"] == int(NOW)
    assert _auth(token).operator is True


# --------------------------------------------------------------------------- the repository's dev secrets


def test_the_repository_dev_secrets_are_the_ones_listed() -> None:
    # Given the chalice dev stage's secret and the local run's default
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    dev_secret = config["stages"]["dev"]["environment_variables"].get("SMART_SYNC_JWT_SECRET")
    # Then both are on the refused list (a new one added to either place must be added there too)
    assert LOCAL_JWT_SECRET in REPOSITORY_DEV_SECRETS
    if dev_secret is not None:
        assert dev_secret in REPOSITORY_DEV_SECRETS


@pytest.mark.parametrize("secret", sorted(REPOSITORY_DEV_SECRETS))
def test_a_dev_secret_is_refused_unless_the_runtime_is_local(secret: str) -> None:
    # Given a service configured with a published dev secret, on AWS (the default runtime)
    settings = Settings(jwt_secret=secret)
    token = jwt.encode(_claims(), secret, algorithm="HS256")
    # When a token signed with it arrives / Then the service refuses to run, without naming the secret
    with pytest.raises(ConfigurationError) as caught:
        _auth(token, settings)
    assert secret not in caught.value.message
    assert "SMART_SYNC_RUNTIME=local" in caught.value.message
    # And the local run accepts it
    assert _auth(token, replace(settings, runtime="local")).subject == "u1"


def test_runtime_local_is_refused_inside_lambda() -> None:
    with pytest.raises(ConfigurationError, match="refused inside AWS Lambda"):
        settings_from_env({"SMART_SYNC_RUNTIME": "local", "AWS_LAMBDA_FUNCTION_NAME": "smart-sync-prod"})
    assert settings_from_env({"SMART_SYNC_RUNTIME": "local"}).runtime == "local"


# --------------------------------------------------------------------------- settings


def test_new_settings_are_read_from_the_environment() -> None:
    settings = settings_from_env(
        {
            "SMART_SYNC_JWT_SECRET_PARAMETER": "/smart-sync/prod/jwt-secret",
            "SMART_SYNC_JWT_SECRET_MAX_AGE_SECONDS": "60",
            "SMART_SYNC_JWKS_URL": "https://idp.example.test/.well-known/jwks.json",
            "SMART_SYNC_JWT_ALGORITHMS": "RS256,ES256",
            "SMART_SYNC_JWT_MAX_TOKEN_BYTES": "4096",
            "SMART_SYNC_JWT_MAX_LIFETIME_SECONDS": "3600",
        }
    )
    assert settings.jwt_secret_parameter == "/smart-sync/prod/jwt-secret"
    assert settings.jwt_secret_max_age_seconds == 60
    assert settings.jwks_url == "https://idp.example.test/.well-known/jwks.json"
    assert settings.jwt_algorithms == "RS256,ES256"
    assert (settings.jwt_max_token_bytes, settings.jwt_max_lifetime_seconds) == (4096, 3600)
    assert settings.runtime == "aws"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "no token key configured"),
        ({"jwt_secret": "short"}, "at least 32 characters"),
        ({"jwt_secret": SECRET, "jwt_secret_parameter": "/p"}, "not both"),
        ({"jwt_secret": SECRET, "runtime": "prod"}, "SMART_SYNC_RUNTIME must be one of"),
        ({"jwks_url": "https://idp.test/jwks.json", "jwt_issuer": "i"}, "needs SMART_SYNC_JWT_ISSUER and"),
        ({"jwks_url": "http://idp.test/jwks.json", "jwt_issuer": "i", "jwt_audience": "a"}, "must use https"),
        ({"jwks_url": "https://u:p@idp.test/j", "jwt_issuer": "i", "jwt_audience": "a"}, "embed credentials"),
        ({"jwks_url": "file:///etc/passwd", "jwt_issuer": "i", "jwt_audience": "a"}, "absolute https"),
        ({"jwks_url": "https://idp.test:x/j", "jwt_issuer": "i", "jwt_audience": "a"}, "not a valid URL"),
        (
            {"jwks_url": "https://idp.test/j", "jwt_issuer": "i", "jwt_audience": "a", "jwt_algorithms": "HS256"},
            "HS256 not accepted",
        ),
        (
            {"jwks_url": "https://idp.test/j", "jwt_issuer": "i", "jwt_audience": "a", "jwt_algorithms": "none"},
            "none not accepted",
        ),
        ({"jwt_secret": SECRET, "jwt_max_token_bytes": 0}, "at least 1"),
    ],
)
def test_bad_token_settings_are_configuration_errors(overrides: dict[str, Any], expected: str) -> None:
    # Given a misconfigured service / When any request is authenticated / Then the setting is named
    with pytest.raises(ConfigurationError) as caught:
        _auth("x", Settings(**overrides))
    assert expected in caught.value.message


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/j", "http://localhost:9/j", "http://[::1]:9/j"])
def test_a_loopback_http_jwks_url_is_accepted(url: str) -> None:
    # Given a loopback JWKS (tests, a local identity provider) / When the settings are checked / Then they pass
    TokenKeys(Settings(jwks_url=url, jwt_issuer="i", jwt_audience="a")).check_settings()


# --------------------------------------------------------------------------- fuzz


def test_two_thousand_random_signed_tokens_are_401_or_accepted_never_another_error() -> None:
    # Given correctly signed tokens with random header and claim values (some then mangled)
    settings = replace(SETTINGS, jwt_issuer="i", jwt_audience="a")
    keys = TokenKeys(settings)
    rnd = random.Random(9)
    values: list[Any] = [None, True, 0, -1, 1.5, 1e308, "", "x", [], {}, ["a"], [1], {"a": 1}, "none", "RS256"]
    values += ["HS256", int(NOW) + 60, "i", "a", "operator", 2**70, "u1"]
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(2000):
        header = {"alg": rnd.choice(["HS256", "HS256", *values]), "typ": "JWT"}
        header.update({name: rnd.choice(values) for name in rnd.sample(["kid", "crit", "b64", "jku"], 1)})
        names = ["sub", "exp", "iat", "nbf", "iss", "aud", "scope", "client_id", "token_use"]
        claims = {name: rnd.choice(values) for name in rnd.sample(names, rnd.randint(0, len(names)))}
        token = _hand_signed(header, claims)
        if rnd.random() < 0.2:
            chars = list(token)
            chars[rnd.randrange(len(chars))] = chr(rnd.randrange(32, 0x3000))
            token = "".join(chars)
        # When authenticated
        try:
            authenticate({"Authorization": f"Bearer {token}"}, settings, NOW, keys)
            outcomes["accepted"] += 1
        except AuthenticationError:
            outcomes["refused"] += 1
    # Then every token was accepted or refused as a 401 (any other exception fails the test)
    assert sum(outcomes.values()) == 2000


def _hand_signed(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"
