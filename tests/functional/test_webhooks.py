"""POST /webhooks/{provider} through chalice.test: signed by the provider, no bearer token, single flight.

Connections name their provider account with ``provider_user_id`` (PUT), which the
store's ``by_provider_user`` index maps back; a spy on the store records the lookups.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.domain.model import Connection, Trigger
from chalicelib.providers import registry_from_config
from chalicelib.sync.jobs import Job
from tests.functional.conftest import Harness

SECRET = "demo-webhook-secret-for-functional-tests"
SECRET_ENV = "SMART_SYNC_TEST_DEMO_WEBHOOK_SECRET"
WHOOP_USER = 10129


def whoop_body(event_type: str = "sleep.updated", user_id: Any = WHOOP_USER) -> bytes:
    """A v2 WHOOP webhook body, shaped on developer.whoop.com's webhook reference."""
    payload = {
        "user_id": user_id,
        "id": "ecfc6a15-4661-442f-a9a4-f160dd7afae8",
        "type": event_type,
        "trace_id": "e369c784-5100-49e8-8098-75d35c47b31b",
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def signed(body: bytes, signed_at: float, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(signed_at * 1000))  # WHOOP: milliseconds since the epoch
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return {
        "X-WHOOP-Signature": base64.b64encode(digest).decode(),
        "X-WHOOP-Signature-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def webhooks_registry() -> Any:
    return registry_from_config(
        {
            "demo": {
                "type": "demo",
                "webhooks": {
                    "scheme": "whoop",
                    "secret_env": SECRET_ENV,
                    "user_id_field": "user_id",
                    "event_type_field": "type",
                    "events": {
                        "recovery.updated": "recovery",
                        "sleep.updated": "sleep",
                        "workout.updated": "workout",
                    },
                    "tolerance_seconds": 300,
                },
            },
            "plain": {"type": "demo"},
        }
    )


class WebhookHarness:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.lookups: list[tuple[str, str]] = []

    def post(self, body: bytes, headers: dict[str, str] | None = None, provider: str = "demo") -> Any:
        headers = signed(body, self.harness.clock.now()) if headers is None else headers
        return self.harness.client.http.post(f"/webhooks/{provider}", headers=headers, body=body)

    def jobs(self) -> list[Job]:
        return [Job.from_json(body) for body in self.harness.queued_bodies()]


@pytest.fixture
def hooks(make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> WebhookHarness:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    harness = make_harness(registry=webhooks_registry())
    hooks = WebhookHarness(harness)
    store = harness.container.store
    real_lookup = store.find_connections_by_provider_user

    def spy(provider: str, provider_user_id: str) -> list[Connection]:
        hooks.lookups.append((provider, provider_user_id))
        return real_lookup(provider, provider_user_id)

    monkeypatch.setattr(store, "find_connections_by_provider_user", spy)
    # Given u1's connection c1 is WHOOP user 10129's account
    created = harness.put_connection("u1", "c1", provider_user_id=str(WHOOP_USER))
    assert created.status_code in (200, 201), created.body
    return hooks


def body_of(response: Any) -> Any:
    return json.loads(response.body)


def test_a_verified_webhook_queues_exactly_one_targeted_sync_without_a_bearer_token(hooks: WebhookHarness) -> None:
    # Given u1's connection belongs to WHOOP user 10129
    # When WHOOP posts a signed sleep.updated for that user (no Authorization header at all)
    response = hooks.post(whoop_body("sleep.updated"))
    # Then it is accepted, and one background sync of exactly that dataset is queued, as a webhook trigger
    assert response.status_code == 202
    assert body_of(response) == {"status": "accepted"}
    jobs = hooks.jobs()
    assert len(jobs) == 1
    assert (jobs[0].key.user_id, jobs[0].key.connection_id, jobs[0].key.data_type) == ("u1", "c1", "sleep")
    assert jobs[0].trigger is Trigger.WEBHOOK
    assert hooks.lookups == [("demo", "10129")]


def test_a_burst_of_five_identical_webhooks_queues_one_sync(hooks: WebhookHarness) -> None:
    # When WHOOP delivers the same event five times (its retries, or several changes in a row)
    body = whoop_body("recovery.updated")
    responses = [hooks.post(body) for _ in range(5)]
    # Then every delivery is acknowledged, and single flight leaves one queued sync
    assert [r.status_code for r in responses] == [202] * 5
    assert {json.dumps(body_of(r)) for r in responses} == {'{"status": "accepted"}'}
    jobs = hooks.jobs()
    assert [job.key.data_type for job in jobs] == ["recovery"]


def test_a_webhook_inside_the_cooldown_still_queues_a_sync(hooks: WebhookHarness) -> None:
    # Given the dataset was synced a moment ago (well inside its 300 s cooldown)
    read = hooks.harness.read("/users/u1/connections/c1/data/sleep")
    assert read.status_code == 200
    hooks.harness.clock.advance(5)
    # When WHOOP says the sleep changed
    hooks.post(whoop_body("sleep.updated"))
    # Then a sync is queued anyway: the provider says the cache is out of date
    assert [job.key.data_type for job in hooks.jobs()] == ["sleep"]


def test_the_queued_job_runs_as_a_webhook_sync(hooks: WebhookHarness) -> None:
    # Given a webhook queued a sync
    hooks.post(whoop_body("workout.updated"))
    bodies = hooks.harness.queued_bodies()
    # When the worker runs it
    assert hooks.harness.deliver(bodies).payload == {"batchItemFailures": []}
    # Then the run is recorded with the webhook trigger
    runs = body_of(hooks.harness.read("/users/u1/connections/c1/runs"))["runs"]
    assert [(run["data_type"], run["trigger"], run["status"]) for run in runs] == [("workout", "webhook", "succeeded")]


def test_every_connection_of_the_account_is_synced_and_no_other_providers(hooks: WebhookHarness) -> None:
    # Given a second connection to the same WHOOP account (u2), and a "plain" connection with the same account id
    assert hooks.harness.put_connection("u2", "c2", provider_user_id=str(WHOOP_USER)).status_code in (200, 201)
    assert hooks.harness.put_connection("u3", "c3", provider="plain", provider_user_id=str(WHOOP_USER)).status_code in (
        200,
        201,
    )
    # When WHOOP posts for that account
    hooks.post(whoop_body("sleep.updated"))
    # Then both WHOOP (demo) connections get their sync, and the other provider's connection none
    queued = sorted((job.key.user_id, job.key.connection_id, job.key.data_type) for job in hooks.jobs())
    assert queued == [("u1", "c1", "sleep"), ("u2", "c2", "sleep")]


def test_an_unknown_user_gets_the_same_answer_and_no_sync(hooks: WebhookHarness) -> None:
    # Given a known user's answer
    known = hooks.post(whoop_body(user_id=WHOOP_USER))
    hooks.jobs()
    # When the same event arrives for a WHOOP user nobody connected
    unknown = hooks.post(whoop_body(user_id=999_999))
    # Then the answer is identical (no oracle) and nothing is queued
    assert (unknown.status_code, unknown.body) == (known.status_code, known.body)
    assert hooks.jobs() == []


def test_a_paused_connection_is_not_synced(hooks: WebhookHarness) -> None:
    hooks.harness.put_connection("u1", "c1", status="PAUSED")
    response = hooks.post(whoop_body())
    assert response.status_code == 202
    assert hooks.jobs() == []


@pytest.mark.parametrize("event_type", ["sleep.deleted", "user.updated"])
def test_an_unmapped_event_is_accepted_and_ignored(hooks: WebhookHarness, event_type: str) -> None:
    response = hooks.post(whoop_body(event_type))
    assert (response.status_code, body_of(response)) == (202, {"status": "accepted"})
    assert hooks.jobs() == []
    assert hooks.lookups == []


def test_a_bad_signature_is_401(hooks: WebhookHarness) -> None:
    # Given a body signed with another secret
    body = whoop_body()
    response = hooks.post(body, signed(body, hooks.harness.clock.now(), secret="not-the-client-secret"))
    # Then it is refused and nothing is looked up or queued
    assert response.status_code == 401
    assert body_of(response)["error"]["code"] == "unauthorized"
    assert hooks.lookups == [] and hooks.jobs() == []


def test_a_stale_timestamp_is_401(hooks: WebhookHarness) -> None:
    # Given a correctly signed webhook captured 301 s ago (tolerance 300 s)
    body = whoop_body()
    captured = signed(body, hooks.harness.clock.now())
    hooks.harness.clock.advance(301)
    # When it is replayed
    response = hooks.post(body, captured)
    # Then it is refused
    assert response.status_code == 401
    assert hooks.jobs() == []


def test_missing_signature_headers_are_401(hooks: WebhookHarness) -> None:
    response = hooks.post(whoop_body(), {"Content-Type": "application/json"})
    assert response.status_code == 401


def test_a_bearer_token_does_not_replace_the_signature(hooks: WebhookHarness) -> None:
    response = hooks.post(whoop_body(), hooks.harness.headers("u1", operator=True))
    assert response.status_code == 401


def test_a_signed_body_that_is_not_json_is_400_but_unsigned_it_is_401(hooks: WebhookHarness) -> None:
    garbage = b"definitely not json"
    assert hooks.post(garbage).status_code == 400
    assert hooks.post(garbage, {"Content-Type": "application/json"}).status_code == 401


def test_a_signed_body_without_user_id_is_400(hooks: WebhookHarness) -> None:
    body = json.dumps({"type": "sleep.updated", "id": "x"}).encode()
    response = hooks.post(body)
    assert response.status_code == 400
    assert body_of(response)["error"]["code"] == "bad_request"


@pytest.mark.parametrize("provider", ["nobody", "plain"])
def test_a_provider_without_webhooks_is_404(hooks: WebhookHarness, provider: str) -> None:
    body = whoop_body()
    response = hooks.post(body, signed(body, hooks.harness.clock.now()), provider=provider)
    assert response.status_code == 404
    assert body_of(response)["error"]["code"] == "not_found"


def test_an_unset_secret_is_a_500_that_quotes_nothing(hooks: WebhookHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)
    response = hooks.post(whoop_body())
    assert response.status_code == 500
    assert body_of(response)["error"]["code"] == "configuration_error"
    assert hooks.jobs() == []


def test_logs_never_carry_the_secret_signature_body_or_user(
    hooks: WebhookHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given debug logging for the service (botocore's own debug lines are not ours to judge)
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    body = whoop_body("sleep.updated")
    headers = signed(body, hooks.harness.clock.now())
    # When a verified webhook and a forged one arrive
    hooks.post(body, headers)
    hooks.post(body, signed(body, hooks.harness.clock.now(), secret="forged"))
    # Then the log says which provider and event, and whether a connection matched, and nothing more
    webhook_lines = [r.getMessage() for r in caplog.records if r.name == "chalicelib.usecases.webhooks"]
    assert any("provider=demo event=sleep.updated matched=True" in line for line in webhook_lines)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "chalicelib.usecases.webhooks")
    everything = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("chalicelib"))
    for secret_thing in (SECRET, headers["X-WHOOP-Signature"], body.decode(), "e369c784", str(WHOOP_USER)):
        assert secret_thing not in everything
