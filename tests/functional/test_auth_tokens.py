"""Bearer tokens through the routes: scope shapes, size and lifetime, the dev secret, SSM and a loopback JWKS."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import jwt
import pytest

from chalicelib.api.auth import forget_shared_token_keys
from chalicelib.store.jwt_secret import REPOSITORY_DEV_SECRETS
from tests.functional.conftest import TEST_SECRET, Harness
from tests.jwks_loopback import AUDIENCE, ISSUER, JwksServer, SigningKey, idp_claims

OPERATOR_STATUS = "/sync/status"
CONNECTIONS = "/users/u1/connections"


@pytest.fixture(autouse=True)
def _fresh_token_keys() -> Iterator[None]:
    # The routes may use the per-process keys (chalicelib/api/auth.py); each test starts without cached ones.
    forget_shared_token_keys()
    yield
    forget_shared_token_keys()


def _get(harness: Harness, path: str, token: str) -> Any:
    return harness.client.http.get(path, headers={"Authorization": f"Bearer {token}"})


def _body(response: Any) -> Any:
    return json.loads(response.body)


def _signed(harness: Harness, secret: str = TEST_SECRET, **claims: Any) -> str:
    now = int(harness.clock.now())
    return jwt.encode({"sub": "u1", "iat": now, "exp": now + 600, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize("scope", [{"operator": False}, {"operator": True}, 5, True, ["operator", 7], None])
def test_a_scope_of_the_wrong_shape_is_401_never_operator_access(harness: Harness, scope: Any) -> None:
    # Given a correctly signed token whose scope is not a string nor a list of strings
    token = _signed(harness, sub="ops", scope=scope)
    # When it calls an operator route and a user route
    operator = _get(harness, OPERATOR_STATUS, token)
    user = _get(harness, "/users/ops/connections", token)
    # Then both are 401 unauthorized (before: the dict read as operator access, 5 a 500)
    for response in (operator, user):
        assert response.status_code == 401
        assert _body(response)["error"]["code"] == "unauthorized"


def test_operator_scope_as_a_string_or_a_list_reaches_operator_routes(harness: Harness) -> None:
    for scope in ("read operator", ["operator"]):
        assert _get(harness, OPERATOR_STATUS, _signed(harness, sub="ops", scope=scope)).status_code == 200


def test_a_token_over_8_kib_is_401(harness: Harness) -> None:
    token = _signed(harness, pad="x" * 9000)
    response = _get(harness, CONNECTIONS, token)
    assert response.status_code == 401
    assert "8192 bytes" in _body(response)["error"]["message"]


def test_a_token_valid_for_more_than_24_hours_is_401(harness: Harness) -> None:
    now = int(harness.clock.now())
    assert _get(harness, CONNECTIONS, _signed(harness, exp=now + 86400)).status_code == 200
    response = _get(harness, CONNECTIONS, _signed(harness, exp=now + 86400 + 1))
    assert response.status_code == 401
    assert "longer than" in _body(response)["error"]["message"]


def test_a_token_issued_in_the_future_is_401(harness: Harness) -> None:
    now = int(harness.clock.now())
    response = _get(harness, CONNECTIONS, _signed(harness, iat=now + 120))
    assert response.status_code == 401


@pytest.mark.parametrize("secret", sorted(REPOSITORY_DEV_SECRETS))
def test_the_repository_dev_secret_is_refused_outside_the_local_run(
    make_harness: Callable[..., Harness], secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a deployed service (runtime aws, the default) configured with a published dev secret
    harness = make_harness(jwt_secret=secret)
    token = _signed(harness, secret)
    # When a token signed with it arrives
    with caplog.at_level(logging.DEBUG):
        response = _get(harness, CONNECTIONS, token)
    # Then the service answers as misconfigured, and neither the answer nor the log quotes the secret or token
    assert response.status_code == 500
    assert _body(response)["error"]["code"] == "configuration_error"
    for text in (response.body.decode(), caplog.text):
        assert secret not in text and token not in text
    assert "SMART_SYNC_RUNTIME=local" in caplog.text


def test_the_local_run_accepts_the_dev_secret(make_harness: Callable[..., Harness]) -> None:
    secret = sorted(REPOSITORY_DEV_SECRETS)[0]
    harness = make_harness(jwt_secret=secret, runtime="local")
    assert _get(harness, CONNECTIONS, _signed(harness, secret)).status_code == 200


def test_the_secret_is_read_from_ssm_on_the_first_request(make_harness: Callable[..., Harness]) -> None:
    # Given the prod wiring: no literal secret, a SecureString parameter named by the setting
    name = f"/smart-sync/test-{uuid.uuid4().hex}/jwt-secret"
    secret = "the-prod-secret-kept-in-the-parameter-store"
    harness = make_harness(jwt_secret="", jwt_secret_parameter=name)
    boto3.client("ssm", region_name="us-east-1").put_parameter(Name=name, Value=secret, Type="SecureString")
    # When requests carry tokens signed with that secret, and with another one
    good = _get(harness, CONNECTIONS, _signed(harness, secret))
    forged = _get(harness, CONNECTIONS, _signed(harness, TEST_SECRET))
    # Then the first passes and the second is 401
    assert good.status_code == 200
    assert forged.status_code == 401


def test_jwks_tokens_reach_the_routes_with_the_key_set_fetched_once(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a service trusting only a loopback JWKS with an RSA and an EC key
    rsa_key, ec_key = SigningKey.rsa(), SigningKey.ec()
    with JwksServer(rsa_key, ec_key) as idp:
        harness = make_harness(jwt_secret="", jwks_url=idp.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
        now = harness.clock.now()
        # When 20 user requests, an operator request, an unknown kid and an HS256 token arrive
        with caplog.at_level(logging.DEBUG):
            users = [
                _get(harness, CONNECTIONS, (rsa_key if n % 2 else ec_key).token(idp_claims("u1", now)))
                for n in range(20)
            ]
            operator = _get(harness, OPERATOR_STATUS, rsa_key.token(idp_claims("ops", now, scope="operator")))
            unknown_token = rsa_key.token(idp_claims("u1", now), kid="rotated-away")
            unknown = _get(harness, CONNECTIONS, unknown_token)
            hs256 = _get(harness, CONNECTIONS, _signed(harness, iss=ISSUER, aud=AUDIENCE))
        # Then the tokens from the JWKS pass, the others are 401, and the JWKS was fetched once
        assert [response.status_code for response in users] == [200] * 20
        assert operator.status_code == 200
        assert (unknown.status_code, hs256.status_code) == (401, 401)
        assert idp.fetches == 1
        assert unknown_token not in caplog.text and unknown_token not in unknown.body.decode()


def test_an_unreadable_jwks_is_503_auth_unavailable(make_harness: Callable[..., Harness]) -> None:
    key = SigningKey.ec()
    with JwksServer(key) as idp:
        idp.fail_with = 503
        harness = make_harness(jwt_secret="", jwks_url=idp.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
        response = _get(harness, CONNECTIONS, key.token(idp_claims("u1", harness.clock.now())))
    assert response.status_code == 503
    assert _body(response)["error"]["code"] == "auth_unavailable"
