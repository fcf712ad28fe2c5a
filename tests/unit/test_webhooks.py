"""Webhook signatures, configuration and the receiver's decisions (no AWS: fakes for the store and the queue)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.api.errors import error_view
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import ConfigurationError, Settings
from chalicelib.domain.errors import ClaimNotWonError, NotFoundError, QueueUnavailableError, ValidationError
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey, Trigger
from chalicelib.domain.policy import SyncPolicy
from chalicelib.providers import registry_from_config
from chalicelib.providers.policies import PolicyResolver
from chalicelib.usecases.webhook_config import WebhookConfig, WebhookScheme, parse_webhook_config, read_secret
from chalicelib.usecases.webhook_signatures import (
    WHOOP_SIGNATURE_HEADER,
    WHOOP_TIMESTAMP_HEADER,
    WebhookSignatureError,
    verify_whoop_signature,
)
from chalicelib.usecases.webhooks import WebhookReceiver, parse_event

SECRET = "whoop-client-secret-for-tests"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW_MS = "1767225600000"
# A v2 WHOOP body as the developer docs show it: int64 user id, UUID object id, event type, trace id.
BODY = (
    b'{"user_id":10129,"id":"ecfc6a15-4661-442f-a9a4-f160dd7afae8",'
    b'"type":"sleep.updated","trace_id":"e369c784-5100-49e8-8098-75d35c47b31b"}'
)
DATA_TYPES = ["recovery", "sleep", "cycle", "workout"]
RAW_CONFIG: dict[str, Any] = {
    "scheme": "whoop",
    "secret_env": "WHOOP_CLIENT_SECRET",
    "user_id_field": "user_id",
    "event_type_field": "type",
    "events": {"recovery.updated": "recovery", "sleep.updated": "sleep", "workout.updated": ["workout", "cycle"]},
    "tolerance_seconds": 300,
}


def independent_signature(secret: str, timestamp: str, body: bytes) -> str:
    """WHOOP's formula, written out here so the test does not trust the code under test."""
    mac = hmac.new(secret.encode(), msg=timestamp.encode() + body, digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def signed_headers(body: bytes = BODY, *, timestamp: str = NOW_MS, secret: str = SECRET) -> dict[str, str]:
    return {
        WHOOP_SIGNATURE_HEADER: independent_signature(secret, timestamp, body),
        WHOOP_TIMESTAMP_HEADER: timestamp,
        "Content-Type": "application/json",
    }


def verify(headers: dict[str, str], body: bytes = BODY, *, now: float = NOW, tolerance: float = 300) -> None:
    verify_whoop_signature(headers, body, SECRET, now=now, tolerance_seconds=tolerance)


def rejection(headers: dict[str, str], body: bytes = BODY, *, now: float = NOW) -> str:
    with pytest.raises(WebhookSignatureError) as caught:
        verify(headers, body, now=now)
    assert error_view(caught.value).status == 401
    return caught.value.reason


def config(**changes: Any) -> WebhookConfig:
    return parse_webhook_config("whoop", {**RAW_CONFIG, **changes}, DATA_TYPES)


# --- signatures ------------------------------------------------------------------------------------


def test_a_known_vector_verifies() -> None:
    # Given a signature computed with a fixed secret, timestamp and body, outside the code under test
    headers = signed_headers()
    assert (
        headers[WHOOP_SIGNATURE_HEADER]
        == base64.b64encode(
            hmac.new(b"whoop-client-secret-for-tests", b"1767225600000" + BODY, "sha256").digest()
        ).decode()
    )
    # When it is verified / Then nothing is raised
    verify(headers)


def test_header_names_are_case_insensitive() -> None:
    # Given API Gateway's lower-cased header names
    headers = {name.lower(): value for name, value in signed_headers().items()}
    # Then the signature still verifies
    verify(headers)


def test_a_tampered_body_is_rejected() -> None:
    # Given a body changed by one character after signing
    headers = signed_headers()
    tampered = BODY.replace(b"10129", b"10130")
    # Then it is a bad signature
    assert rejection(headers, tampered) == "bad_signature"


def test_a_reserialised_body_is_rejected() -> None:
    # Given the same JSON, re-serialised with other whitespace (what json.dumps of the parsed body gives)
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert reserialised != BODY
    # Then it does not verify: only the raw bytes are signed
    assert rejection(signed_headers(), reserialised) == "bad_signature"


def test_a_wrong_secret_is_rejected() -> None:
    assert rejection(signed_headers(secret="another-apps-secret")) == "bad_signature"


def test_a_moved_timestamp_breaks_the_signature() -> None:
    # Given a captured webhook whose timestamp header is moved forward to look fresh
    headers = signed_headers(timestamp="1767225000000")
    headers[WHOOP_TIMESTAMP_HEADER] = NOW_MS
    # Then the signature no longer matches (the timestamp is part of the signed message)
    assert rejection(headers) == "bad_signature"


def test_a_stale_timestamp_is_rejected() -> None:
    # Given a correctly signed webhook sent 301 s ago (tolerance 300 s)
    headers = signed_headers(timestamp=str(int((NOW - 301) * 1000)))
    # Then it is a replay
    assert rejection(headers) == "stale_timestamp"


def test_a_future_timestamp_is_rejected() -> None:
    headers = signed_headers(timestamp=str(int((NOW + 301) * 1000)))
    assert rejection(headers) == "stale_timestamp"


def test_the_tolerance_is_inclusive_both_ways() -> None:
    # Given webhooks signed exactly 300 s before and after now
    # Then both are accepted
    verify(signed_headers(timestamp=str(int((NOW - 300) * 1000))))
    verify(signed_headers(timestamp=str(int((NOW + 300) * 1000))))


def test_the_timestamp_is_read_as_milliseconds() -> None:
    # Given a correctly signed timestamp in seconds (not what WHOOP sends): read as ms it is 1970
    headers = signed_headers(timestamp=str(int(NOW)))
    # Then it is stale
    assert rejection(headers) == "stale_timestamp"


@pytest.mark.parametrize(
    ("missing", "reason"),
    [(WHOOP_SIGNATURE_HEADER, "missing_signature"), (WHOOP_TIMESTAMP_HEADER, "missing_timestamp")],
)
def test_missing_headers_are_rejected(missing: str, reason: str) -> None:
    headers = signed_headers()
    del headers[missing]
    assert rejection(headers) == reason


def test_empty_headers_are_rejected() -> None:
    assert rejection({WHOOP_SIGNATURE_HEADER: " ", WHOOP_TIMESTAMP_HEADER: NOW_MS}) == "missing_signature"


@pytest.mark.parametrize(
    "timestamp", ["-1767225600000", "1767225600000.0", "1e12", "x", "1" * 17, "\uff11\uff12\uff13"]
)
def test_malformed_timestamps_are_rejected(timestamp: str) -> None:
    headers = signed_headers()
    headers[WHOOP_TIMESTAMP_HEADER] = timestamp
    assert rejection(headers) == "malformed_timestamp"


@pytest.mark.parametrize("signature", ["not base64!", "é", "abc"])
def test_malformed_signatures_are_rejected(signature: str) -> None:
    headers = signed_headers()
    headers[WHOOP_SIGNATURE_HEADER] = signature
    assert rejection(headers) == "bad_signature"


def test_a_rejection_never_quotes_the_signature_or_secret() -> None:
    headers = signed_headers(secret="another-apps-secret")
    with pytest.raises(WebhookSignatureError) as caught:
        verify(headers)
    text = f"{caught.value} {caught.value.message!r}"
    assert headers[WHOOP_SIGNATURE_HEADER] not in text
    assert SECRET not in text


# --- configuration ---------------------------------------------------------------------------------


def test_a_full_config_parses() -> None:
    parsed = config()
    assert parsed.scheme is WebhookScheme.WHOOP
    assert parsed.secret_env == "WHOOP_CLIENT_SECRET"
    assert parsed.events["recovery.updated"] == ("recovery",)
    assert parsed.events["workout.updated"] == ("workout", "cycle")
    assert parsed.tolerance_seconds == 300


def test_field_names_and_tolerance_have_defaults() -> None:
    raw = {"scheme": "whoop", "secret_env": "S", "events": {"sleep.updated": "sleep"}}
    parsed = parse_webhook_config("whoop", raw, DATA_TYPES)
    assert (parsed.user_id_field, parsed.event_type_field, parsed.tolerance_seconds) == ("user_id", "type", 300)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"secret": "inline-secret"}, "webhooks.secret "),
        ({"scheme": "stripe"}, "webhooks.scheme"),
        ({"scheme": None}, "webhooks.scheme"),
        ({"secret_env": "not a name"}, "webhooks.secret_env"),
        ({"secret_env": 7}, "webhooks.secret_env"),
        ({"events": {}}, "webhooks.events"),
        ({"events": ["sleep.updated"]}, "webhooks.events"),
        ({"events": {"sleep.updated": "naps"}}, "webhooks.events['sleep.updated']"),
        ({"events": {"sleep.updated": ["sleep", "naps"]}}, "naps"),
        ({"events": {"sleep.updated": []}}, "webhooks.events['sleep.updated']"),
        ({"events": {"sleep.updated": 3}}, "webhooks.events['sleep.updated']"),
        ({"tolerance_seconds": 0}, "webhooks.tolerance_seconds"),
        ({"tolerance_seconds": 3601}, "webhooks.tolerance_seconds"),
        ({"tolerance_seconds": True}, "webhooks.tolerance_seconds"),
        ({"tolerance_seconds": 30.5}, "webhooks.tolerance_seconds"),
        ({"user_id_field": ""}, "webhooks.user_id_field"),
        ({"event_type_field": 1}, "webhooks.event_type_field"),
    ],
)
def test_invalid_configs_name_provider_and_key(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        config(**changes)
    assert "provider 'whoop'" in caught.value.message
    assert named in caught.value.message


def test_a_missing_scheme_is_a_configuration_error() -> None:
    raw = {key: value for key, value in RAW_CONFIG.items() if key != "scheme"}
    with pytest.raises(ConfigurationError, match=r"webhooks\.scheme"):
        parse_webhook_config("whoop", raw, DATA_TYPES)


def test_the_secret_is_read_from_the_named_variable() -> None:
    assert read_secret(config(), {"WHOOP_CLIENT_SECRET": SECRET}) == SECRET


@pytest.mark.parametrize("environ", [{}, {"WHOOP_CLIENT_SECRET": ""}])
def test_an_unset_secret_is_a_configuration_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="WHOOP_CLIENT_SECRET, which is not set"):
        read_secret(config(), environ)


# --- events ----------------------------------------------------------------------------------------


def test_a_v2_body_parses_to_the_mapped_data_type() -> None:
    event = parse_event(config(), BODY)
    assert (event.event_type, event.provider_user_id, event.data_types) == ("sleep.updated", "10129", ("sleep",))


def test_an_unmapped_event_has_no_data_types() -> None:
    body = json.dumps({"user_id": 10129, "id": "x", "type": "sleep.deleted"}).encode()
    assert parse_event(config(), body).data_types == ()


def test_a_string_user_id_is_kept_as_is() -> None:
    body = json.dumps({"user_id": "abc-123", "type": "sleep.updated"}).encode()
    assert parse_event(config(), body).provider_user_id == "abc-123"


def test_configured_field_names_are_used() -> None:
    body = json.dumps({"account": 5, "event": "sleep.updated"}).encode()
    event = parse_event(config(user_id_field="account", event_type_field="event"), body)
    assert (event.provider_user_id, event.data_types) == ("5", ("sleep",))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b'{"type": "sleep.updated"}',
        b'{"user_id": null, "type": "sleep.updated"}',
        b'{"user_id": true, "type": "sleep.updated"}',
        b'{"user_id": 1.5, "type": "sleep.updated"}',
        b'{"user_id": "", "type": "sleep.updated"}',
        b'{"user_id": {"id": 1}, "type": "sleep.updated"}',
        b'{"user_id": 10129}',
        b'{"user_id": 10129, "type": 3}',
        b'{"user_id": 10129, "type": "sleep.updated", "pad": "' + b"x" * 70_000 + b'"}',
    ],
)
def test_unusable_bodies_are_400(body: bytes) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event(config(), body)
    assert error_view(caught.value).status == 400


# --- the receiver (fakes for the connection index and the queue) ----------------------------------


def connection(user_id: str, connection_id: str, status: ConnectionStatus = ConnectionStatus.ACTIVE) -> Connection:
    return Connection(
        user_id=user_id,
        connection_id=connection_id,
        provider="whoop",
        settings={},
        status=status,
        status_reason=None,
        created_at=NOW,
        updated_at=NOW,
    )


@dataclass
class FakeIndex:
    by_user: dict[str, list[Connection]] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def find_connections_by_provider_user(self, provider: str, provider_user_id: str) -> Iterable[Connection]:
        self.asked.append((provider, provider_user_id))
        return self.by_user.get(provider_user_id, [])


@dataclass
class FakeSyncs:
    pending: set[DatasetKey] = field(default_factory=set)
    unavailable: set[str] = field(default_factory=set)
    queued: list[tuple[DatasetKey, Trigger, bool]] = field(default_factory=list)

    def queue_background(
        self, key: DatasetKey, provider: str, policy: SyncPolicy, *, trigger: Trigger, respect_cooldown: bool = True
    ) -> str:
        if key.connection_id in self.unavailable:
            raise QueueUnavailableError("sqs said no")
        if key in self.pending:
            raise ClaimNotWonError()
        self.pending.add(key)
        self.queued.append((key, trigger, respect_cooldown))
        return f"run-{len(self.queued)}"


def receiver(index: FakeIndex, syncs: FakeSyncs, **webhooks: Any) -> WebhookReceiver:
    registry = registry_from_config(
        {
            "whoop": {"type": "demo", "webhooks": {**RAW_CONFIG, **webhooks}},
            "plain": {"type": "demo"},
        }
    )
    policies = PolicyResolver(registry, Settings())
    return WebhookReceiver(registry, index, policies, syncs, FakeClock(NOW), environ={"WHOOP_CLIENT_SECRET": SECRET})


def test_a_verified_webhook_queues_one_targeted_sync_per_active_connection() -> None:
    # Given WHOOP user 10129 with an active connection, a paused one and a connection needing review
    index = FakeIndex(
        {
            "10129": [
                connection("u1", "c1"),
                connection("u1", "c2", ConnectionStatus.PAUSED),
                connection("u2", "c3", ConnectionStatus.NEEDS_REVIEW),
            ]
        }
    )
    syncs = FakeSyncs()
    # When a signed sleep.updated arrives
    outcome = receiver(index, syncs).receive("whoop", signed_headers(), BODY)
    # Then only the active connection's sleep dataset is queued, as a webhook trigger ignoring the cooldown
    assert index.asked == [("whoop", "10129")]
    assert syncs.queued == [(DatasetKey("u1", "c1", "sleep"), Trigger.WEBHOOK, False)]
    assert (outcome.connections, outcome.queued, outcome.already_pending) == (1, 1, 0)


def test_an_event_mapped_to_two_data_types_queues_both() -> None:
    index = FakeIndex({"10129": [connection("u1", "c1")]})
    syncs = FakeSyncs()
    body = BODY.replace(b"sleep.updated", b"workout.updated")
    receiver(index, syncs).receive("whoop", signed_headers(body), body)
    assert [key.data_type for key, _, _ in syncs.queued] == ["workout", "cycle"]


def test_a_sync_already_pending_is_single_flight() -> None:
    # Given the dataset's sync is already queued or running
    index = FakeIndex({"10129": [connection("u1", "c1")]})
    syncs = FakeSyncs(pending={DatasetKey("u1", "c1", "sleep")})
    # When the webhook arrives
    outcome = receiver(index, syncs).receive("whoop", signed_headers(), BODY)
    # Then nothing more is queued, and that is not an error
    assert syncs.queued == []
    assert (outcome.queued, outcome.already_pending) == (0, 1)


def test_an_unmapped_event_looks_nothing_up() -> None:
    index = FakeIndex({"10129": [connection("u1", "c1")]})
    syncs = FakeSyncs()
    body = BODY.replace(b"sleep.updated", b"sleep.deleted")
    outcome = receiver(index, syncs).receive("whoop", signed_headers(body), body)
    assert index.asked == [] and syncs.queued == []
    assert outcome.data_types == ()


def test_an_unknown_user_is_not_an_error() -> None:
    outcome = receiver(FakeIndex(), FakeSyncs()).receive("whoop", signed_headers(), BODY)
    assert (outcome.connections, outcome.queued) == (0, 0)


def test_a_queue_failure_asks_for_redelivery_after_trying_every_connection() -> None:
    # Given two connections, SQS refusing the first one's job
    index = FakeIndex({"10129": [connection("u1", "c1"), connection("u2", "c2")]})
    syncs = FakeSyncs(unavailable={"c1"})
    # When the webhook arrives
    with pytest.raises(QueueUnavailableError) as caught:
        receiver(index, syncs).receive("whoop", signed_headers(), BODY)
    # Then the other connection was still queued, and the answer is a 503 (the provider delivers again)
    assert [key.connection_id for key, _, _ in syncs.queued] == ["c2"]
    assert error_view(caught.value).status == 503


@pytest.mark.parametrize("provider", ["plain", "nobody"])
def test_a_provider_without_webhooks_is_404(provider: str) -> None:
    with pytest.raises(NotFoundError):
        receiver(FakeIndex(), FakeSyncs()).receive(provider, signed_headers(), BODY)


def test_the_signature_is_checked_before_the_body_is_read() -> None:
    # Given an unsigned body that is not even JSON
    # Then the answer is 401, not 400: nothing about the body is revealed to an unsigned caller
    with pytest.raises(WebhookSignatureError):
        receiver(FakeIndex(), FakeSyncs()).receive("whoop", {}, b"not json")


def test_an_invalid_config_fails_on_first_use() -> None:
    bad = receiver(FakeIndex(), FakeSyncs(), events={"sleep.updated": "naps"})
    with pytest.raises(ConfigurationError, match="provider 'whoop'"):
        bad.receive("whoop", signed_headers(), BODY)
