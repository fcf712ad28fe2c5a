"""Credentials at rest (KMS envelope encryption) and the single-flight OAuth2 refresh, end to end on moto.

The provider here is a tiny fake with a ``token_client`` shaped on WHOOP's token endpoint
(``POST /oauth/oauth2/token``, form ``grant_type=refresh_token``, ``scope=offline``; the answer
carries a new refresh token and ``expires_in``; a spent refresh token gets 400 ``invalid_grant``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
import requests
import responses

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.model import Connection, ConnectionStatus
from chalicelib.domain.upstream import (
    DataTypeSpec,
    FetchRequest,
    Page,
    PolicyDefaults,
    ProviderError,
    ProviderGrantError,
    TokenGrant,
    UpstreamRecord,
)
from chalicelib.providers import ProviderRegistry
from chalicelib.store.vault import CredentialsUnavailableError, CredentialsUnreadableError, CredentialVault
from chalicelib.sync.token_refresh import REFUSED_REASON, CredentialKeeper
from tests.functional.conftest import TEST_KMS_ALIAS, Harness

TOKEN_URL = "https://api.prod.whoop.com/oauth/oauth2/token"
PROVIDER = "fakeoauth"
CONNECTION_URL = "/users/u1/connections/c1"
WAIT = 10.0
"""Longest a test thread waits for the other (a hang fails the test instead of blocking the run)."""


# --- the fake provider and its token endpoint ---------------------------------------------------------


class FakeTokenClient:
    """The ``TokenClient`` port in a few lines (the real one is ``providers/oauth2.py``)."""

    def needs_refresh(self, credentials: Mapping[str, Any], now: float) -> bool:
        expires_at = credentials.get("expires_at")
        return not credentials.get("access_token") or not isinstance(expires_at, int | float) or expires_at - 60 <= now

    def refresh(self, credentials: Mapping[str, Any], *, timeout_seconds: float, now: float) -> TokenGrant:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": str(credentials.get("refresh_token", "")),
            "client_id": "app-client-id",
            "client_secret": "app-client-secret",
            "scope": "offline",
        }
        answer = requests.post(TOKEN_URL, data=form, timeout=timeout_seconds, allow_redirects=False)
        body = answer.json()
        if answer.status_code == 400 and body.get("error") == "invalid_grant":
            raise ProviderGrantError("the token endpoint refused the refresh token (invalid_grant)", status_code=400)
        if answer.status_code != 200:
            raise ProviderError(
                f"the token endpoint answered HTTP {answer.status_code}", status_code=answer.status_code
            )
        return TokenGrant(
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token"),
            expires_at=now + float(body["expires_in"]),
        )


@dataclass
class FakeOAuthProvider:
    name: str = PROVIDER
    token_client: FakeTokenClient = field(default_factory=FakeTokenClient)
    access_tokens_seen: list[str] = field(default_factory=list)

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return {"recovery": DataTypeSpec("recovery", PolicyDefaults(cooldown_seconds=60, max_staleness_seconds=600))}

    def fetch_page(self, request: FetchRequest) -> Page:
        self.access_tokens_seen.append(str(request.credentials.get("access_token")))
        return Page(records=[UpstreamRecord("r1", {"score": 71})])

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        if credentials and not credentials.get("refresh_token"):
            raise ValidationError("credentials need a refresh_token")


@dataclass
class RotatingTokenEndpoint:
    """WHOOP-like: each refresh token works once, and every answer carries the next one."""

    valid: set[str]
    during_call: Callable[[], None] | None = None
    status_override: int | None = None
    calls: int = 0
    issued: int = 1

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls += 1
        if self.during_call is not None:
            self.during_call()
        if self.status_override is not None:
            return self.status_override, {}, json.dumps({"error": "temporarily_unavailable"})
        spent = parse_qs(request.body)["refresh_token"][0]
        if spent not in self.valid:
            refusal = {"error": "invalid_grant", "error_description": "The refresh token is invalid or was revoked"}
            return 400, {}, json.dumps(refusal)
        self.valid.discard(spent)
        self.issued += 1
        rotated = f"refresh-{self.issued}"
        self.valid.add(rotated)
        grant = {
            "access_token": f"access-{self.issued}",
            "expires_in": 3600,
            "refresh_token": rotated,
            "scope": "offline read:recovery",
            "token_type": "bearer",
        }
        return 200, {}, json.dumps(grant)


class GatedClock:
    """A second Lambda's view of the shared fake time: its first pause waits until the test opens the gate."""

    def __init__(self, inner: FakeClock) -> None:
        self.inner = inner
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def now(self) -> float:
        return self.inner.now()

    def sleep(self, seconds: float) -> None:
        self.waiting.set()
        assert self.gate.wait(WAIT), "the gate was never opened"
        self.inner.sleep(seconds)


class CountingKms:
    """Counts the KMS calls of one vault (one Lambda)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def generate_data_key(self, **kwargs: Any) -> Any:
        self.calls.append("GenerateDataKey")
        return self.inner.generate_data_key(**kwargs)

    def decrypt(self, **kwargs: Any) -> Any:
        self.calls.append("Decrypt")
        return self.inner.decrypt(**kwargs)


# --- helpers ---------------------------------------------------------------------------------------------


def _oauth_harness(make_harness: Callable[..., Harness]) -> tuple[Harness, FakeOAuthProvider]:
    provider = FakeOAuthProvider()
    return make_harness(registry=ProviderRegistry({PROVIDER: provider})), provider


def _tokens(
    harness: Harness, *, access: str = "access-1", refresh: str = "refresh-1", expires_in: float = -10
) -> dict[str, Any]:
    return {"access_token": access, "refresh_token": refresh, "expires_at": harness.clock.now() + expires_in}


def _put(harness: Harness, **body: Any) -> Any:
    return harness.client.http.put(
        CONNECTION_URL, headers=harness.headers(), body=json.dumps({"provider": PROVIDER, **body})
    )


def _stored(harness: Harness) -> Connection:
    connection = harness.container.store.get_connection("u1", "c1", consistent=True)
    assert connection is not None
    return connection


def _keeper(harness: Harness, clock: Any = None, kms: Any = None) -> CredentialKeeper:
    """What one Lambda builds: its own vault (and data key cache) over the shared table and key."""
    vault = CredentialVault(lambda: kms or harness.kms, TEST_KMS_ALIAS)
    return CredentialKeeper(harness.container.store, vault, clock or harness.clock, harness.settings)


def _raw_item(user_id: str = "u1", connection_id: str = "c1") -> dict[str, Any]:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    key = {"user_id": {"S": user_id}, "connection_id": {"S": connection_id}}
    item: dict[str, Any] = dynamodb.get_item(TableName="smart-sync-connections", Key=key, ConsistentRead=True)["Item"]
    return item


# --- single-flight refresh -----------------------------------------------------------------------------


def test_two_lambdas_with_an_expired_token_make_one_token_call_and_both_get_the_new_access_token(
    make_harness: Callable[..., Harness],
) -> None:
    # Given a connection whose access token has expired, and a token endpoint that rotates refresh tokens
    # and refuses a reused one
    harness, provider = _oauth_harness(make_harness)
    assert _put(harness, credentials=_tokens(harness)).status_code == 201
    connection = _stored(harness)
    first_in_token_call = threading.Event()
    second = GatedClock(harness.clock)

    def hold_the_first_answer_until_the_second_lambda_waits() -> None:
        first_in_token_call.set()
        assert second.waiting.wait(WAIT), "the second Lambda never started waiting"

    endpoint = RotatingTokenEndpoint(
        valid={"refresh-1"}, during_call=hold_the_first_answer_until_the_second_lambda_waits
    )
    results: dict[str, Any] = {}

    def run(name: str, keeper: CredentialKeeper) -> None:
        try:
            results[name] = keeper.credentials_for(connection, provider, deadline=harness.clock.now() + 10)
        except Exception as exc:  # reported by the assertions below
            results[name] = exc

    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
        # When Lambda A starts the refresh, and Lambda B asks while A is inside the token call
        lambda_a = threading.Thread(target=run, args=("a", _keeper(harness)))
        lambda_a.start()
        assert first_in_token_call.wait(WAIT)
        lambda_b = threading.Thread(target=run, args=("b", _keeper(harness, clock=second)))
        lambda_b.start()
        lambda_a.join(WAIT)
        second.gate.set()  # B polls again only after A stored its answer
        lambda_b.join(WAIT)

    # Then the refresh token was spent once, and both Lambdas got the new access token
    assert endpoint.calls == 1
    assert isinstance(results["a"], Mapping) and isinstance(results["b"], Mapping), results
    assert results["a"]["access_token"] == results["b"]["access_token"] == "access-2"
    # And the rotated refresh token was stored (as the next version, lease released) before either used it
    stored = _stored(harness)
    assert stored.credentials_version == connection.credentials_version + 1
    assert harness.container.credentials.open(stored)["refresh_token"] == "refresh-2"
    assert "refresh_owner" not in _raw_item()


def test_a_sync_refreshes_an_expired_token_before_it_calls_the_provider(make_harness: Callable[..., Harness]) -> None:
    # Given a connection whose access token has expired
    harness, provider = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness))
    endpoint = RotatingTokenEndpoint(valid={"refresh-1"})
    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
        # When its data is read (a sync runs)
        read = harness.read("/users/u1/connections/c1/data/recovery")
    # Then the provider was called with the refreshed token only
    assert read.status_code == 200, read.body
    assert endpoint.calls == 1
    assert provider.access_tokens_seen == ["access-2"]


def test_a_refused_refresh_token_makes_the_connection_need_review_at_once(
    make_harness: Callable[..., Harness],
) -> None:
    # Given a connection whose refresh token the provider no longer accepts
    harness, provider = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness))
    connection = _stored(harness)
    endpoint = RotatingTokenEndpoint(valid={"some-other-token"})
    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
        # When a Lambda needs its credentials
        with pytest.raises(ProviderGrantError):
            _keeper(harness).credentials_for(connection, provider, deadline=harness.clock.now() + 10)
        # Then the connection needs review after one refusal, saying what to do, with its lease released
        stored = _stored(harness)
        assert (stored.status, stored.status_reason) == (ConnectionStatus.NEEDS_REVIEW, REFUSED_REASON)
        assert stored.credentials_version == connection.credentials_version
        assert "refresh_owner" not in _raw_item()
        # And another Lambda does not spend the refused token again
        with pytest.raises(ProviderGrantError):
            _keeper(harness).credentials_for(connection, provider, deadline=harness.clock.now() + 10)
    assert endpoint.calls == 1


def test_a_token_endpoint_outage_releases_the_lease_and_leaves_the_connection_active(
    make_harness: Callable[..., Harness],
) -> None:
    # Given a token endpoint that answers 503
    harness, provider = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness))
    connection = _stored(harness)
    endpoint = RotatingTokenEndpoint(valid={"refresh-1"}, status_override=503)
    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
        # When a Lambda needs the credentials
        with pytest.raises(ProviderError) as raised:
            _keeper(harness).credentials_for(connection, provider, deadline=harness.clock.now() + 10)
        # Then the error reaches the engine, the connection stays ACTIVE and nobody is left waiting for a lease
        assert not isinstance(raised.value, ProviderGrantError)
        assert _stored(harness).status is ConnectionStatus.ACTIVE
        assert "refresh_owner" not in _raw_item()
        # And the next Lambda may try at once, and succeeds once the endpoint is back
        endpoint.status_override = None
        refreshed = _keeper(harness).credentials_for(connection, provider, deadline=harness.clock.now() + 10)
    assert refreshed["access_token"] == "access-2"
    assert endpoint.calls == 2


def test_a_refresh_overtaken_by_a_put_gives_way_to_the_users_new_credentials(
    make_harness: Callable[..., Harness],
) -> None:
    # Given a refresh in flight when the user connects the account again with new credentials
    harness, provider = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness))
    connection = _stored(harness)
    fresh = _tokens(harness, access="access-from-user", refresh="refresh-from-user", expires_in=3600)

    def the_user_puts_new_credentials() -> None:
        assert _put(harness, credentials=fresh).status_code == 200

    endpoint = RotatingTokenEndpoint(valid={"refresh-1"}, during_call=the_user_puts_new_credentials)
    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
        # When the refresh's answer arrives after the PUT
        got = _keeper(harness).credentials_for(connection, provider, deadline=harness.clock.now() + 10)
    # Then the user's credentials are used and stay stored; the refresh did not overwrite them
    assert got["access_token"] == "access-from-user"
    stored = harness.container.credentials.open(_stored(harness))
    assert stored["refresh_token"] == "refresh-from-user"


def test_credentials_the_provider_rejected_are_refreshed_once_though_they_look_valid(
    make_harness: Callable[..., Harness],
) -> None:
    # Given valid-looking credentials the provider just answered 401 to
    harness, provider = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness, expires_in=3600))
    connection = _stored(harness)
    endpoint = RotatingTokenEndpoint(valid={"refresh-1"})
    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
        # When two Lambdas report the rejection of the same version, one after the other
        first = _keeper(harness).credentials_for(connection, provider, deadline=None, rejected=True)
        second = _keeper(harness).credentials_for(connection, provider, deadline=None, rejected=True)
    # Then one refresh happened, and the second Lambda got its result
    assert endpoint.calls == 1
    assert first["access_token"] == second["access_token"] == "access-2"


def test_credentials_that_are_still_valid_cost_no_read_and_no_token_call(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a connection with a valid access token, opened once by this Lambda
    harness, provider = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness, expires_in=3600))
    connection = _stored(harness)
    kms = CountingKms(harness.kms)
    keeper = _keeper(harness, kms=kms)
    keeper.credentials_for(connection, provider, deadline=None)

    def no_read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("valid credentials need no DynamoDB read")

    monkeypatch.setattr(harness.container.store, "stored_credentials", no_read)
    # When it asks again for the next sync (no token endpoint is registered: any call would fail)
    with responses.RequestsMock():
        again = keeper.credentials_for(connection, provider, deadline=None)
    # Then the stored credentials come back, with one KMS Decrypt in all (the warm data key cache)
    assert again["access_token"] == "access-1"
    assert kms.calls == ["Decrypt"]


# --- encryption at rest ---------------------------------------------------------------------------------


def test_the_sealed_credentials_in_dynamodb_hold_no_plaintext(make_harness: Callable[..., Harness]) -> None:
    # Given credentials sent with a PUT
    harness, _ = _oauth_harness(make_harness)
    secrets = {"access_token": "tok-PLAIN-123", "refresh_token": "ref-PLAIN-456", "expires_at": 2_000_000_000}
    assert _put(harness, credentials=secrets).status_code == 201
    # When the item is read straight from DynamoDB
    item = _raw_item()
    # Then no secret is in it, only a versioned envelope with a KMS-encrypted data key
    raw = json.dumps(item)
    assert "tok-PLAIN-123" not in raw and "ref-PLAIN-456" not in raw
    envelope = json.loads(item["credentials_sealed"]["S"])
    assert envelope["v"] == 1 and {"key", "dk", "iv", "ct"} <= set(envelope)
    # And the service opens them back
    assert harness.container.credentials.open(_stored(harness)) == secrets


def test_sealed_credentials_copied_onto_another_connection_cannot_be_opened(
    make_harness: Callable[..., Harness],
) -> None:
    # Given two connections, and the first one's sealed credentials copied onto the second
    harness, _ = _oauth_harness(make_harness)
    secrets = _tokens(harness, access="tok-MOVED-1")
    _put(harness, credentials=secrets)
    harness.client.http.put(
        "/users/u1/connections/c2",
        headers=harness.headers(),
        body=json.dumps({"provider": PROVIDER, "credentials": _tokens(harness, access="other")}),
    )
    first = _stored(harness)
    second = harness.container.store.get_connection("u1", "c2", consistent=True)
    assert second is not None
    moved = replace(second, sealed_credentials=first.sealed_credentials)
    # When a cold Lambda (KMS decides) and a warm one (the data key is cached) try to open them
    for keeper in (_keeper(harness), harness.container.credentials):
        with pytest.raises(CredentialsUnreadableError) as refused:
            keeper.open(moved)
        # Then neither can, and the error quotes nothing of them
        assert "tok-MOVED-1" not in str(refused.value)
    assert harness.container.credentials.open(first)["access_token"] == "tok-MOVED-1"


def test_credentials_cannot_be_sealed_without_the_kms_key(make_harness: Callable[..., Harness]) -> None:
    # Given a service whose KMS key alias does not exist
    provider = FakeOAuthProvider()
    harness = make_harness(registry=ProviderRegistry({PROVIDER: provider}), kms_key_id="alias/missing")
    # When credentials are PUT
    response = _put(harness, credentials=_tokens(harness, access="tok-NOKEY"))
    # Then nothing is stored, the answer is a 503, and it quotes no secret
    assert response.status_code == 503, response.body
    assert b"tok-NOKEY" not in response.body
    assert harness.container.store.get_connection("u1", "c1") is None
    with pytest.raises(CredentialsUnavailableError):
        harness.container.vault.seal({"k": "v"}, "u1", "c1")


# --- PUT and GET ------------------------------------------------------------------------------------------


def test_get_connections_never_shows_credentials_sealed_or_not(make_harness: Callable[..., Harness]) -> None:
    # Given a connection with credentials and the provider's id of the account
    harness, _ = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness, access="tok-LISTED"), provider_user_id=10129)
    # When the user lists their connections
    listed = harness.read("/users/u1/connections")
    # Then it says there are credentials and whose account it is, and shows neither them nor their envelope
    assert listed.status_code == 200
    text = listed.body.decode()
    assert "tok-LISTED" not in text and "refresh-1" not in text
    assert "sealed" not in text and '"dk"' not in text and "credentials_version" not in text
    (shown,) = json.loads(text)["connections"]
    assert shown["has_credentials"] is True and shown["provider_user_id"] == "10129"


def test_a_put_writes_new_credentials_as_a_new_version_and_keeps_them_otherwise(
    make_harness: Callable[..., Harness],
) -> None:
    # Given a connection created with credentials
    harness, _ = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness))
    created = _stored(harness)
    # When it is paused without credentials, then PUT with the same ones again
    assert _put(harness, status="PAUSED").status_code == 200
    paused = _stored(harness)
    assert _put(harness, credentials=harness.container.credentials.open(created)).status_code == 200
    same_again = _stored(harness)
    # Then the stored envelope is untouched each time
    assert paused.sealed_credentials == same_again.sealed_credentials == created.sealed_credentials
    assert paused.credentials_version == same_again.credentials_version == created.credentials_version
    # When new credentials are PUT
    _put(harness, credentials=_tokens(harness, access="access-new"))
    # Then they are the next version
    renewed = _stored(harness)
    assert renewed.credentials_version == created.credentials_version + 1
    assert harness.container.credentials.open(renewed)["access_token"] == "access-new"


def test_webhooks_find_a_connection_by_its_provider_user_id(make_harness: Callable[..., Harness]) -> None:
    # Given a connection PUT with the provider's numeric user id
    harness, _ = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness), provider_user_id=10129)
    # When a webhook for that provider user is routed
    found = harness.container.store.find_connections_by_provider_user(PROVIDER, "10129")
    # Then it reaches this connection; a later PUT that omits the id keeps it
    assert [(c.user_id, c.connection_id) for c in found] == [("u1", "c1")]
    _put(harness, status="PAUSED")
    assert _stored(harness).provider_user_id == "10129"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, True, 1.5, {"id": 1}])
def test_a_provider_user_id_outside_the_safe_alphabet_is_refused(
    make_harness: Callable[..., Harness], bad: Any
) -> None:
    # Given a PUT naming a provider user id that cannot be a key
    harness, _ = _oauth_harness(make_harness)
    # When it is sent
    response = _put(harness, credentials=_tokens(harness), provider_user_id=bad)
    # Then it is a 400 and nothing is stored
    assert response.status_code == 400, response.body
    assert "provider_user_id" in response.body.decode()
    assert harness.container.store.get_connection("u1", "c1") is None


def test_new_credentials_replace_stored_ones_that_can_no_longer_be_opened(
    make_harness: Callable[..., Harness],
) -> None:
    # Given a connection whose stored envelope cannot be opened (altered, or sealed for another connection)
    harness, _ = _oauth_harness(make_harness)
    _put(harness, credentials=_tokens(harness))
    harness.container.store.put_connection(replace(_stored(harness), sealed_credentials='{"v":1,"key":"x"}'))
    # When it is paused without credentials, then PUT with new ones
    paused = _put(harness, status="PAUSED")
    repaired = _put(harness, credentials=_tokens(harness, access="access-repaired"))
    # Then the pause is refused (there is nothing usable to keep), and the new credentials are stored
    assert paused.status_code == 500 and "credentials_unreadable" in paused.body.decode()
    assert repaired.status_code == 200, repaired.body
    assert harness.container.credentials.open(_stored(harness))["access_token"] == "access-repaired"
