"""The shipped WHOOP v2 connector (``chalicelib/providers.json``) through the real engine and routes.

WHOOP is faked with ``responses`` serving the bodies in ``tests/fixtures/whoop`` (shaped on
WHOOP's OpenAPI: ``records`` + ``next_token``, sent back as ``nextToken``; recovery keyed by
``cycle_id``), its token endpoint (rotating refresh tokens) and its signed webhooks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import responses
from responses import matchers

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.model import ConnectionStatus, DatasetKey, Trigger
from chalicelib.providers import registry_from_config
from chalicelib.sync.jobs import Job
from tests.functional.conftest import Harness

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "whoop"
SHIPPED = json.loads((ROOT / "chalicelib" / "providers.json").read_text())

API = "https://api.prod.whoop.com/developer/v2"
TOKEN_URL = "https://api.prod.whoop.com/oauth/oauth2/token"
CLIENT_ID = "whoop-test-client-id"
CLIENT_SECRET = "whoop-test-client-secret-not-real"  # the secret the signed webhook fixtures were made with
ACCESS = "whp_at_example_3b9f0c2e7a41d5e8"
REFRESH = "whp_rt_example_first_8c1d2e3f4a5b"
WHOOP_USER = "10129"
DATA = "/users/u1/connections/w1/data/{}?limit=100"
RATE_HEADERS = {"X-RateLimit-Limit": "100, 100;window=60, 10000;window=86400", "X-RateLimit-Remaining": "97"}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def body(response: Any) -> Any:
    return json.loads(response.body)


@pytest.fixture
def whoop(make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> Harness:
    # The deployment's WHOOP app: client id and secret in the environment, never in a connection
    monkeypatch.setenv("WHOOP_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("WHOOP_CLIENT_SECRET", CLIENT_SECRET)
    # The clock stands where the fixtures were recorded (2026-08-21), when the signed webhooks were sent
    return make_harness(registry=registry_from_config({"whoop": SHIPPED["whoop"]}), clock=FakeClock(1_787_311_544.0))


def connect(harness: Harness, *, expires_in: float = 3600, refresh: str = REFRESH) -> None:
    credentials = {"access_token": ACCESS, "refresh_token": refresh, "expires_at": harness.clock.now() + expires_in}
    created = harness.put_connection(
        connection_id="w1", provider="whoop", credentials=credentials, provider_user_id=WHOOP_USER
    )
    assert created.status_code == 201, created.body


def bearer(token: str = ACCESS) -> Any:
    return matchers.header_matcher({"Authorization": f"Bearer {token}"})


def record_ids(answer: Any) -> list[str]:
    return sorted(record["id"] for record in answer["data"])


# --- a full first sync -------------------------------------------------------------------------------------------


def test_a_first_read_pages_through_recovery_with_next_token(whoop: Harness) -> None:
    # Given a WHOOP user with two pages of recovery (the second holds a PENDING_SCORE record without a score)
    connect(whoop)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        first = api.get(
            f"{API}/recovery",
            match=[bearer(), matchers.query_param_matcher({"limit": "25"})],
            json=fixture("recovery_page1.json"),
            headers=RATE_HEADERS,
        )
        second = api.get(
            f"{API}/recovery",
            match=[
                bearer(),
                matchers.query_param_matcher({"limit": "25", "nextToken": "MTA5MzcxMjoxNzU1Njg3MDkyMTAx"}),
            ],
            json=fixture("recovery_page2.json"),
            headers=RATE_HEADERS,
        )
        # When the dataset is read for the first time
        read = whoop.read(DATA.format("recovery"))
        # Then WHOOP was called at /developer/v2/recovery, the cursor going back as nextToken, no time filter
        assert first.call_count == second.call_count == 1
        for call in api.calls:
            assert urlsplit(call.request.url or "").path == "/developer/v2/recovery"
            assert "start" not in parse_qs(urlsplit(call.request.url or "").query)
    # And every record is cached under its cycle id (recovery has no id of its own), the unscored one too
    assert read.status_code == 200, read.body
    answer = body(read)
    assert answer["metadata"]["source"] == "upstream"
    assert answer["metadata"]["sync"]["pages"] == 2
    assert answer["metadata"]["skipped_records"] == 0
    assert record_ids(answer) == ["1093466", "1093590", "1093712", "1093845"]
    by_id = {record["id"]: record["data"] for record in answer["data"]}
    assert by_id["1093845"]["score"]["recovery_score"] == 67.0
    assert by_id["1093466"]["score_state"] == "PENDING_SCORE" and "score" not in by_id["1093466"]
    assert answer["metadata"]["max_staleness_seconds"] == 7200


@pytest.mark.parametrize(
    ("data_type", "path", "page", "ids"),
    [
        (
            "sleep",
            "/activity/sleep",
            "sleep_page1.json",
            ["5b1e2a44-6c0d-4f43-9d7e-0a1c2b3d4e51", "7d6c5b4a-3928-4716-a5b4-c3d2e1f0a9b8"],
        ),
        ("cycle", "/cycle", "cycle_page1.json", ["1093712", "1093845"]),
        (
            "workout",
            "/activity/workout",
            "workout_page1.json",
            ["4f3e2d1c-0b9a-4887-96a5-b4c3d2e1f0a9", "e1d2c3b4-a596-4877-8b9a-0c1d2e3f4a5b"],
        ),
    ],
)
def test_each_data_type_reads_its_v2_collection(
    whoop: Harness, data_type: str, path: str, page: str, ids: list[str]
) -> None:
    # Given one page of the data type (the cycle page's first record is the current cycle, without an end)
    connect(whoop)
    last_page = {"records": fixture(page)["records"]}  # no next_token: the last page
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.get(f"{API}{path}", match=[bearer(), matchers.query_param_matcher({"limit": "25"})], json=last_page)
        # When it is read
        read = whoop.read(DATA.format(data_type))
    # Then its records are cached under their WHOOP ids (UUIDs for sleep and workout, int64 for cycles)
    assert read.status_code == 200, read.body
    assert record_ids(body(read)) == ids


def test_later_syncs_ask_for_the_last_three_days_and_the_daily_full_pass_removes_deleted_records(
    whoop: Harness,
) -> None:
    # Given a cached workout list of two (and a token that outlives the test)
    connect(whoop, expires_in=3 * 86_400)
    workouts = fixture("workout_page1.json")["records"]
    only_limit = [matchers.query_param_matcher({"limit": "25"})]
    with responses.RequestsMock() as api:
        api.get(f"{API}/activity/workout", match=only_limit, json={"records": workouts})
        assert whoop.read(DATA.format("workout")).status_code == 200
    # When it is read again past max staleness (1 h), WHOOP listing the same two
    whoop.clock.advance(3601)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        # Then the call asks for what happened in the last three days: WHOOP's `start` filters by event
        # time, not by modification, so a fixed look-back (not the watermark) catches late re-scoring
        three_days_ago = datetime.fromtimestamp(whoop.clock.now() - 259_200, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        recent = [matchers.query_param_matcher({"limit": "25", "start": three_days_ago})]
        api.get(f"{API}/activity/workout", match=recent, json={"records": workouts})
        assert whoop.read(DATA.format("workout")).status_code == 200
    # When, a day later, WHOOP lists only one of them (the other was deleted)
    whoop.clock.advance(86_400)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.get(f"{API}/activity/workout", match=only_limit, json={"records": workouts[:1]})
        read = whoop.read(DATA.format("workout"))
    # Then the daily full pass removed the deleted workout
    assert read.status_code == 200, read.body
    assert record_ids(body(read)) == [workouts[0]["id"]]
    assert body(read)["metadata"]["sync"]["deleted"] == 1


# --- OAuth2 --------------------------------------------------------------------------------------------------------


def _raw_connection_item() -> dict[str, Any]:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    key = {"user_id": {"S": "u1"}, "connection_id": {"S": "w1"}}
    item: dict[str, Any] = dynamodb.get_item(TableName="smart-sync-connections", Key=key, ConsistentRead=True)["Item"]
    return item


def test_an_expired_token_is_refreshed_once_and_the_rotated_refresh_token_is_stored_sealed(whoop: Harness) -> None:
    # Given a connection whose access token expired a minute ago
    connect(whoop, expires_in=-60)
    rotated = fixture("token_refresh_response.json")
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        token = api.post(TOKEN_URL, json=rotated)
        data = api.get(f"{API}/cycle", match=[bearer(rotated["access_token"])], json={"records": []})
        # When its data is read
        read = whoop.read(DATA.format("cycle"))
        # Then exactly one refresh was made, as WHOOP documents it (form body, client credentials, scope offline)
        assert token.call_count == 1
        sent = parse_qs(str(api.calls[0].request.body))
        assert sent == {
            "grant_type": ["refresh_token"],
            "refresh_token": [REFRESH],
            "client_id": [CLIENT_ID],
            "client_secret": [CLIENT_SECRET],
            "scope": ["offline"],
        }
        # And the data call carried the new access token only
        assert data.call_count == 1
    assert read.status_code == 200, read.body
    # And the rotated refresh token is what is stored now, sealed: no token is readable in the raw item
    stored = whoop.container.store.get_connection("u1", "w1", consistent=True)
    assert stored is not None
    opened = whoop.container.credentials.open(stored)
    assert opened["refresh_token"] == rotated["refresh_token"]
    assert opened["access_token"] == rotated["access_token"]
    assert opened["expires_at"] == pytest.approx(whoop.clock.now() + 3600)
    raw = json.dumps(_raw_connection_item())
    for secret in (rotated["refresh_token"], rotated["access_token"], REFRESH, ACCESS):
        assert secret not in raw


def test_a_401_on_a_live_token_refreshes_once_and_retries_with_the_new_token(whoop: Harness) -> None:
    # Given a token WHOOP revoked early (it is not expired by its clock)
    connect(whoop)
    rotated = fixture("token_refresh_response.json")
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        refused = api.get(f"{API}/activity/sleep", match=[bearer()], status=401, json=fixture("error_401.json"))
        token = api.post(TOKEN_URL, json=rotated)
        accepted = api.get(
            f"{API}/activity/sleep",
            match=[bearer(rotated["access_token"])],
            json=fixture("sleep_page1.json") | {"next_token": None},
        )
        # When the dataset is read
        read = whoop.read(DATA.format("sleep"))
        # Then the 401 led to one refresh and one retry with the new token
        assert (refused.call_count, token.call_count, accepted.call_count) == (1, 1, 1)
    assert read.status_code == 200, read.body
    assert len(body(read)["data"]) == 2


def test_a_spent_refresh_token_marks_the_connection_for_review_and_the_read_is_a_502(whoop: Harness) -> None:
    # Given an expired access token whose refresh token WHOOP no longer accepts
    connect(whoop, expires_in=-60)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.post(TOKEN_URL, status=400, json=fixture("token_invalid_grant.json"))
        # When the data is read
        read = whoop.read(DATA.format("recovery"))
    # Then the read fails clearly (nothing cached), without a 500 and without quoting a token
    assert read.status_code == 502, read.body
    assert "invalid_grant" in read.body.decode()
    assert REFRESH not in read.body.decode()
    # And the connection needs the user to connect again
    stored = whoop.container.store.get_connection("u1", "w1", consistent=True)
    assert stored is not None and stored.status is ConnectionStatus.NEEDS_REVIEW


# --- rate limits -------------------------------------------------------------------------------------------------


def deliver_continuation(harness: Harness, answer: Any, data_type: str) -> None:
    """Run the job a deferred read queued, as SQS delivers it once its delay is over."""
    run_id = answer["metadata"]["sync"]["continuation_run_id"]
    job = Job(DatasetKey("u1", "w1", data_type), run_id, Trigger.BACKGROUND, harness.clock.now())
    assert harness.deliver([job.to_json()]).payload == {"batchItemFailures": []}


def test_a_429_is_retried_no_sooner_than_x_ratelimit_reset_says(whoop: Harness) -> None:
    # Given WHOOP answers 429 once, with no Retry-After: its reset header says 3 seconds
    # (the remaining count that usually comes with it is covered by the feedback test below)
    connect(whoop)
    called_at: list[float] = []

    def answer(status: int, payload: Any, headers: dict[str, str]) -> Callable[[Any], Any]:
        def reply(_request: Any) -> Any:
            called_at.append(whoop.clock.now())
            return status, headers, json.dumps(payload)

        return reply

    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.add_callback(
            "GET", f"{API}/recovery", callback=answer(429, fixture("error_429.json"), {"X-RateLimit-Reset": "3"})
        )
        api.add_callback("GET", f"{API}/recovery", callback=answer(200, fixture("recovery_page2.json"), RATE_HEADERS))
        # When the dataset is read
        read = whoop.read(DATA.format("recovery"))
        # Then the read either waited for the retry itself or left it to a background job; never a 500
        assert read.status_code in (200, 202), read.body
        if read.status_code == 202:
            whoop.clock.advance(60)
            deliver_continuation(whoop, body(read), "recovery")
    # And the second call came no sooner than WHOOP asked, and its records are cached
    assert len(called_at) == 2 and called_at[1] - called_at[0] >= 3
    assert record_ids(body(whoop.read(DATA.format("recovery")))) == ["1093466", "1093590"]


def test_a_429_with_a_long_reset_is_deferred_to_a_background_job_not_a_500(whoop: Harness) -> None:
    # Given WHOOP's minute window is spent for another 50 s (longer than a sync may wait in place)
    connect(whoop)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.get(f"{API}/cycle", status=429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "50"})
        # When the dataset is read
        read = whoop.read(DATA.format("cycle"))
    # Then the read says "pending", and a continuation job is queued to run after the reset
    assert read.status_code == 202, read.body
    assert body(read)["status"] == "pending"
    assert "asked to wait 50s" in body(read)["metadata"]["warning"]
    runs = body(whoop.read("/users/u1/connections/w1/runs"))["runs"]
    assert sorted(run["status"] for run in runs) == ["deferred", "queued"]


def test_whoops_remaining_count_holds_back_the_next_sync(whoop: Harness) -> None:
    # Given a sync whose answer says no call is left in the minute window for 40 s
    connect(whoop)
    spent = {
        "X-RateLimit-Limit": "100, 100;window=60, 10000;window=86400",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "40",
    }
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.get(f"{API}/recovery", json=fixture("recovery_empty.json"), headers=spent)
        assert whoop.read(DATA.format("recovery")).status_code == 200
    # When another data type is read right after
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        sleep = api.get(f"{API}/activity/sleep", json={"records": []})
        read = whoop.read(DATA.format("sleep"))
        # Then WHOOP is not called before its window resets; the read is left to a background job
        assert sleep.call_count == 0
    assert read.status_code == 202, read.body


# --- hostile answers ---------------------------------------------------------------------------------------------


def test_records_that_are_not_a_list_fail_the_read_with_a_502(whoop: Harness) -> None:
    # Given WHOOP answers with `records` as an object
    connect(whoop)
    with responses.RequestsMock() as api:
        api.get(f"{API}/recovery", json={"records": {"cycle_id": 1}})
        # When the dataset is read
        read = whoop.read(DATA.format("recovery"))
    # Then the read fails clearly, naming the field, never a 500
    assert read.status_code == 502, read.body
    assert "records_path 'records'" in read.body.decode()


def test_one_record_without_its_id_is_skipped_and_counted(whoop: Harness) -> None:
    # Given a recovery page where one record lost its cycle_id
    connect(whoop)
    page = fixture("recovery_page2.json")
    del page["records"][0]["cycle_id"]
    with responses.RequestsMock() as api:
        api.get(f"{API}/recovery", json=page)
        # When the dataset is read
        read = whoop.read(DATA.format("recovery"))
    # Then the good record is kept and the bad one is counted in the metadata
    assert read.status_code == 200, read.body
    answer = body(read)
    assert record_ids(answer) == ["1093466"]
    assert answer["metadata"]["skipped_records"] == 1


# --- webhooks ------------------------------------------------------------------------------------------------------


def test_signed_whoop_webhooks_queue_the_mapped_syncs_and_ignore_deletions(whoop: Harness) -> None:
    # Given u1's connection is WHOOP user 10129, and WHOOP's three signed deliveries (fixture)
    connect(whoop)
    deliveries = {d["fixture"].split("/")[-1]: d for d in fixture("webhook_signed_deliveries.json")["deliveries"]}

    def post(name: str) -> tuple[int, list[str]]:
        delivery = deliveries[name]
        answer = whoop.client.http.post(
            "/webhooks/whoop", headers=delivery["headers"], body=delivery["raw_body"].encode()
        )
        return answer.status_code, sorted(Job.from_json(queued).key.data_type for queued in whoop.queued_bodies())

    # When WHOOP posts recovery.updated, sleep.updated and workout.deleted
    # Then a recovery changes recovery; a sleep changes sleep and the cycle it closes
    assert post("webhook_recovery_updated.json") == (202, ["recovery"])
    assert post("webhook_sleep_updated.json") == (202, ["cycle", "sleep"])
    # And a deletion is acknowledged without a sync (the next full pass removes the record)
    assert post("webhook_workout_deleted.json") == (202, [])


def test_a_webhook_with_a_forged_signature_is_refused(whoop: Harness) -> None:
    # Given a delivery whose body was changed after WHOOP signed it
    connect(whoop)
    delivery = fixture("webhook_signed_deliveries.json")["deliveries"][0]
    forged = delivery["raw_body"].replace("10129", "10130").encode()
    # When it is posted
    answer = whoop.client.http.post("/webhooks/whoop", headers=delivery["headers"], body=forged)
    # Then it is refused and nothing is queued
    assert answer.status_code == 401
    assert whoop.queued_bodies() == []
