"""The shipped SnapTrade connector (``chalicelib/providers.json``) through the real engine and routes.

``FakeSnapTrade`` answers ``GET /accounts`` and the per-account ``positions/all``, ``balances``
and ``activities`` endpoints (the all-accounts ``/holdings`` and ``/activities`` were removed on
2026-08-10) the way SnapTrade's OpenAPI and request-signature docs describe them: every call
carries ``clientId``, ``timestamp`` (seconds), ``userId`` and ``userSecret`` in its query and a
``Signature`` header, base64 HMAC-SHA256 (consumer key) of the canonical JSON
``{"content": null, "path": ..., "query": ...}``, recomputed here independently.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.model import DatasetKey, Trigger
from chalicelib.domain.upstream import FetchRequest, ProviderError
from chalicelib.providers import ProviderRegistry, parse_limits, registry_from_config
from chalicelib.providers.snaptrade import SnapTradeProvider
from chalicelib.sync.jobs import Job
from tests.functional.conftest import Harness

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "snaptrade"
SHIPPED = json.loads((ROOT / "chalicelib" / "providers.json").read_text())

BASE = "https://api.snaptrade.com"
NOW = 1_787_311_544.0
CLIENT_ID = "TEST-CLIENT"
CONSUMER_KEY = "snaptrade-test-consumer-key-not-real"
USER_ID = "user-42"
USER_SECRET = "us-secret-42"
INDIVIDUAL = "917c8734-8470-4a3e-a18f-57c3f2ee6631"
ROTH = "4c1b2a39-0d8e-4f7a-b6c5-d4e3f2a1b0c9"
VTI = "2bcd7cc3-e922-4976-bce1-9858296801c3"
BTC = "0e9d8c7b-6a59-4847-b3a2-918f7e6d5c4b"
DATA = "/users/u1/connections/s1/data/{}?limit=100"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def body(response: Any) -> Any:
    return json.loads(response.body)


def snaptrade_signature(consumer_key: str, path: str, query: str, content: Any = None) -> str:
    """SnapTrade's request signature, written here from its docs, not from the code under test."""
    canonical = json.dumps({"content": content, "path": path, "query": query}, sort_keys=True, separators=(",", ":"))
    return base64.b64encode(hmac.new(consumer_key.encode(), canonical.encode(), hashlib.sha256).digest()).decode()


def test_the_signature_check_of_this_test_matches_the_documented_examples() -> None:
    # Given the signature examples computed with SnapTrade's documented algorithm
    examples = fixture("signature_examples.json")
    for example in examples["examples"]:
        # When this test's check signs them / Then it gets the same signatures
        signed = snaptrade_signature(examples["consumer_key"], example["path"], example["query"], example["body"])
        assert signed == example["signature"]


def all_activities() -> list[dict[str, Any]]:
    activities: list[dict[str, Any]] = fixture("activities.json")["data"] + fixture("activities_page2.json")["data"]
    return activities


@dataclass
class FakeSnapTrade:
    clock: FakeClock
    accounts: Any = field(default_factory=lambda: fixture("accounts.json"))
    positions: dict[str, Any] = field(default_factory=dict)
    balances: dict[str, Any] = field(default_factory=dict)
    activities: dict[str, list[Any]] = field(default_factory=dict)
    refuse_next: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def register(self, api: responses.RequestsMock) -> None:
        api.add_callback("GET", re.compile(rf"{re.escape(BASE)}/accounts.*"), callback=self._answer)

    def _answer(self, request: Any) -> Any:
        url = urlsplit(request.url)
        self.calls.append(
            {"path": url.path, "raw": url.query, "signature": request.headers.get("Signature"), "at": self.clock.now()}
        )
        if self.refuse_next:
            status, payload, headers = self.refuse_next.pop(0)
            return status, headers, json.dumps(payload)
        query = dict(parse_qsl(url.query))
        signed_by_app = request.headers.get("Signature") == snaptrade_signature(CONSUMER_KEY, url.path, url.query)
        fresh = abs(int(query.get("timestamp", "0")) - self.clock.now()) <= 300
        if not signed_by_app or not fresh or query.get("clientId") != CLIENT_ID:
            return 401, {}, json.dumps(fixture("error_401.json"))
        if (query.get("userId"), query.get("userSecret")) != (USER_ID, USER_SECRET):
            return (
                403,
                {},
                json.dumps({"detail": "Invalid userID or userSecret provided", "status_code": 403, "code": "1083"}),
            )
        headers = {"X-RateLimit-Limit": "250", "X-RateLimit-Remaining": "240", "X-RateLimit-Reset": "31"}
        parts = url.path.strip("/").split("/")
        if parts == ["accounts"]:
            return 200, headers, json.dumps(self.accounts)
        account, what = parts[1], "/".join(parts[2:])
        if what == "positions/all":
            return 200, headers, json.dumps(self.positions.get(account, {"results": [], "data_freshness": None}))
        if what == "balances":
            return 200, headers, json.dumps(self.balances.get(account, []))
        if what == "activities":
            offset, limit = int(query.get("offset", "0")), int(query.get("limit", "1000"))
            items = self.activities.get(account, [])
            page = {
                "data": items[offset : offset + limit],
                "pagination": {"offset": offset, "limit": limit, "total": len(items)},
            }
            return 200, headers, json.dumps(page)
        return 404, {}, json.dumps({"detail": "Not found.", "status_code": 404, "code": "1011"})


def portfolio(clock: FakeClock) -> FakeSnapTrade:
    """Two Robinhood accounts: the individual one holds VTI and BTC and has three activities; the IRA holds BTC."""
    roth_positions = {"results": [copy.deepcopy(fixture("positions_all.json")["results"][1])], "data_freshness": None}
    return FakeSnapTrade(
        clock,
        positions={INDIVIDUAL: fixture("positions_all.json"), ROTH: roth_positions},
        balances={INDIVIDUAL: fixture("balances.json"), ROTH: fixture("balances.json")},
        activities={INDIVIDUAL: all_activities()},
    )


def registry(entry: Mapping[str, Any] | None = None) -> ProviderRegistry:
    """The shipped entry, built the way the registry builds it (limits read by the registry, not the provider)."""
    entry = entry or SHIPPED["snaptrade"]
    own = {key: value for key, value in entry.items() if key not in ("limits", "webhooks")}
    return ProviderRegistry(
        {"snaptrade": SnapTradeProvider.from_config("snaptrade", own)},
        {"snaptrade": parse_limits("snaptrade", entry["limits"])},
    )


@pytest.fixture
def make_snaptrade(make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Harness]:
    # The deployment's SnapTrade app: client id and consumer key in the environment, never in a connection
    monkeypatch.setenv("SNAPTRADE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", CONSUMER_KEY)

    def make(entry: Mapping[str, Any] | None = None) -> Harness:
        harness = make_harness(registry=registry(entry), clock=FakeClock(NOW))
        credentials = {"user_id": USER_ID, "user_secret": USER_SECRET}
        created = harness.put_connection(connection_id="s1", provider="snaptrade", credentials=credentials)
        assert created.status_code == 201, created.body
        return harness

    return make


def deliver_continuation(harness: Harness, answer: Any, data_type: str) -> None:
    """Run the job a deferred read queued, as SQS delivers it once its delay is over."""
    run_id = answer["metadata"]["sync"]["continuation_run_id"]
    job = Job(DatasetKey("u1", "s1", data_type), run_id, Trigger.BACKGROUND, harness.clock.now())
    assert harness.deliver([job.to_json()]).payload == {"batchItemFailures": []}


def signed_properly(call: Mapping[str, Any]) -> bool:
    return bool(call["signature"] == snaptrade_signature(CONSUMER_KEY, call["path"], call["raw"]))


# --- a full first sync ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "endpoint", "ids"),
    [
        ("accounts", None, [ROTH, INDIVIDUAL]),
        ("holdings", "positions/all", [f"{ROTH}:{BTC}", f"{INDIVIDUAL}:{BTC}", f"{INDIVIDUAL}:{VTI}"]),
        ("balances", "balances", [f"{ROTH}:USD", f"{INDIVIDUAL}:USD"]),
    ],
)
def test_a_first_read_lists_the_accounts_then_calls_each_account(
    make_snaptrade: Callable[..., Harness], data_type: str, endpoint: str | None, ids: list[str]
) -> None:
    # Given a SnapTrade user with two accounts
    harness = make_snaptrade()
    fake = portfolio(harness.clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the data type is read for the first time
        read = harness.read(DATA.format(data_type))
    assert read.status_code == 200, read.body
    # Then the accounts were listed, then (per-account data) each account's endpoint was called once
    expected = ["/accounts"] + ([f"/accounts/{a}/{endpoint}" for a in (INDIVIDUAL, ROTH)] if endpoint else [])
    assert [call["path"] for call in fake.calls] == expected
    # And every call carried the app's and the user's identifiers, a timestamp in seconds, and a valid signature
    for call in fake.calls:
        assert [name for name, _ in parse_qsl(call["raw"])] == ["clientId", "timestamp", "userId", "userSecret"]
        assert dict(parse_qsl(call["raw"]))["timestamp"] == str(int(NOW))
        assert signed_properly(call)
    # And per-account records are keyed by account, and say which account they belong to
    answer = body(read)
    assert sorted(record["id"] for record in answer["data"]) == sorted(ids)
    if endpoint:
        assert {record["data"]["account_id"] for record in answer["data"]} == {INDIVIDUAL, ROTH}
    assert answer["metadata"]["skipped_records"] == 0


def test_transactions_page_by_offset_within_each_account(make_snaptrade: Callable[..., Harness]) -> None:
    # Given the shipped entry with a page of 2 activities (instead of 1000): the individual account has 3
    entry = copy.deepcopy(SHIPPED["snaptrade"])
    entry["data_types"]["transactions"]["page_size"] = 2
    harness = make_snaptrade(entry)
    fake = portfolio(harness.clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the transactions are read
        read = harness.read(DATA.format("transactions"))
    assert read.status_code == 200, read.body
    # Then each account's activities were paged by offset until a short page
    pages = [(call["path"], dict(parse_qsl(call["raw"])).get("offset")) for call in fake.calls]
    assert pages == [
        ("/accounts", None),
        (f"/accounts/{INDIVIDUAL}/activities", "0"),
        (f"/accounts/{INDIVIDUAL}/activities", "2"),
        (f"/accounts/{ROTH}/activities", "0"),
    ]
    assert all(dict(parse_qsl(call["raw"])).get("limit") in (None, "2") for call in fake.calls)
    assert all(signed_properly(call) for call in fake.calls)
    # And all three activities are cached, each with its account
    answer = body(read)
    assert sorted(record["id"] for record in answer["data"]) == sorted(
        f"{INDIVIDUAL}:{a['id']}" for a in all_activities()
    )
    assert answer["metadata"]["sync"]["pages"] == 4


def test_a_user_without_accounts_has_no_holdings(make_snaptrade: Callable[..., Harness]) -> None:
    # Given a SnapTrade user who disconnected every brokerage
    harness = make_snaptrade()
    fake = FakeSnapTrade(harness.clock, accounts=[])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the holdings are read
        read = harness.read(DATA.format("holdings"))
    # Then one call listed no account, and the answer is an empty list
    assert read.status_code == 200, read.body
    assert [call["path"] for call in fake.calls] == ["/accounts"]
    assert body(read)["data"] == []


# --- refused credentials ----------------------------------------------------------------------------------------


def test_a_signature_snaptrade_cannot_verify_answers_502(
    make_snaptrade: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployment configured with the wrong consumer key
    harness = make_snaptrade()
    monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", "a-consumer-key-snaptrade-does-not-know")
    fake = portfolio(harness.clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the accounts are read
        read = harness.read(DATA.format("accounts"))
    # Then the read answers 502 saying the credentials were rejected, quoting no secret, after one call
    assert read.status_code == 502, read.body
    text = read.body.decode()
    assert "401" in text and "credentials rejected" in text
    assert USER_SECRET not in text and "a-consumer-key" not in text
    assert len(fake.calls) == 1
    stored = harness.container.store.get_connection("u1", "s1", consistent=True)
    assert stored is not None and stored.auth_failures == 1


# --- rate limits and busy brokerages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payload", "headers", "wait"),
    [
        pytest.param(
            429, fixture("error_429.json"), {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "7"}, 7, id="429"
        ),
        pytest.param(503, fixture("error_503.json"), {}, 0, id="503-brokerage-busy"),
        pytest.param(
            425, {"detail": "Account is being populated", "status_code": 425, "code": "3012"}, {}, 0, id="425"
        ),
    ],
)
def test_a_refusal_worth_retrying_is_retried_and_the_read_succeeds(
    make_snaptrade: Callable[..., Harness], status: int, payload: Any, headers: dict[str, str], wait: int
) -> None:
    # Given SnapTrade refuses the accounts listing once
    harness = make_snaptrade()
    fake = portfolio(harness.clock)
    fake.refuse_next.append((status, payload, headers))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the accounts are read
        read = harness.read(DATA.format("accounts"))
        # Then the read waited for the retry itself, or (a longer wait) left it to a background job: never a 500
        assert read.status_code in (200, 202), read.body
        if read.status_code == 202:
            harness.clock.advance(60)
            deliver_continuation(harness, body(read), "accounts")
    # And the call was made again, no sooner than SnapTrade's reset asked, and the accounts are cached
    assert len(fake.calls) == 2
    assert fake.calls[1]["at"] - fake.calls[0]["at"] >= wait
    assert len(body(harness.read(DATA.format("accounts")))["data"]) == 2


# --- hostile answers ---------------------------------------------------------------------------------------------


def test_positions_that_are_not_a_list_fail_the_read_with_a_502(make_snaptrade: Callable[..., Harness]) -> None:
    # Given an account whose positions answer holds an object where the list should be
    harness = make_snaptrade()
    fake = portfolio(harness.clock)
    fake.positions[INDIVIDUAL] = {"results": {"VTI": 50}}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the holdings are read
        read = harness.read(DATA.format("holdings"))
    # Then the read fails clearly, naming the field
    assert read.status_code == 502, read.body
    assert "records_path 'results'" in read.body.decode()


def test_a_position_without_an_instrument_id_is_skipped_and_counted(make_snaptrade: Callable[..., Harness]) -> None:
    # Given one position whose instrument lost its id
    harness = make_snaptrade()
    fake = portfolio(harness.clock)
    del fake.positions[INDIVIDUAL]["results"][0]["instrument"]["id"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the holdings are read
        read = harness.read(DATA.format("holdings"))
    # Then the other positions are kept and the bad one is counted
    assert read.status_code == 200, read.body
    answer = body(read)
    assert sorted(record["id"] for record in answer["data"]) == [f"{ROTH}:{BTC}", f"{INDIVIDUAL}:{BTC}"]
    assert answer["metadata"]["skipped_records"] == 1


def test_the_shipped_snaptrade_entry_builds_through_the_registry() -> None:
    # Given the shipped providers file's snaptrade entry / When the registry builds it
    built = registry_from_config({"snaptrade": SHIPPED["snaptrade"]})
    # Then it is the SnapTrade provider with its four data types and SnapTrade's 250 calls a minute
    provider = built.get("snaptrade")
    assert isinstance(provider, SnapTradeProvider)
    assert set(provider.data_types()) == {"accounts", "holdings", "balances", "transactions"}
    [window] = built.limits("snaptrade").windows
    assert (window.requests, window.per_seconds) == (250, 60)


# --- the fan-out's own guards ------------------------------------------------------------------------------------


def _with_holdings(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = copy.deepcopy(SHIPPED["snaptrade"])
    entry.pop("limits")
    entry["data_types"]["holdings"].update(changes)
    return entry


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        pytest.param(
            _with_holdings(for_each={"listing": "accounts", "as": "account"}), "for_each.as", id="as-fills-nothing"
        ),
        pytest.param(
            _with_holdings(for_each={"listing": "portfolios", "as": "account_id"}), "'portfolios'", id="unknown-listing"
        ),
        pytest.param(
            _with_holdings(for_each={"listing": "holdings", "as": "account_id"}), "itself repeated", id="self-listing"
        ),
        pytest.param(
            _with_holdings(for_each={"setting": "a", "listing": "accounts", "as": "account_id"}),
            "exactly one",
            id="two-sources",
        ),
        pytest.param(
            _with_holdings(for_each={"listing": "accounts", "as": "account_id", "per": 2}), "unknown key", id="typo"
        ),
        pytest.param(_with_holdings(pagination={"kind": "pages"}), "data type 'holdings'", id="bad-own-pagination"),
    ],
)
def test_a_broken_fan_out_declaration_fails_at_start_up_naming_the_key(entry: dict[str, Any], fragment: str) -> None:
    # Given a snaptrade entry with one mistake / When it is built
    with pytest.raises(ConfigurationError) as caught:
        SnapTradeProvider.from_config("snaptrade", entry)
    # Then the error names the provider and what is wrong
    assert "'snaptrade'" in str(caught.value) and fragment in str(caught.value)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not json", id="not-json"),
        pytest.param(json.dumps({"v": ["../../admin"], "i": 0, "t": None}), id="value-that-bends-the-url"),
        pytest.param(json.dumps({"v": [INDIVIDUAL], "i": 3, "t": None}), id="index-out-of-range"),
        pytest.param(json.dumps({"v": [INDIVIDUAL], "i": 0, "t": 7}), id="inner-token-not-text"),
    ],
)
def test_a_checkpoint_token_that_is_not_ours_is_refused_without_a_call(token: str) -> None:
    # Given a stored page token that this provider did not write (storage is not proof)
    provider = registry().get("snaptrade")
    request = FetchRequest(
        connection_id="s1",
        data_type="holdings",
        credentials={"user_id": USER_ID, "user_secret": USER_SECRET},
        settings={},
        page_token=token,
        since=None,
        timeout_seconds=5,
        now_epoch=NOW,
        sleep=lambda _seconds: None,
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        # When a sync resumes from it
        with pytest.raises(ProviderError) as caught:
            provider.fetch_page(request)
        # Then it is refused (not retried) before anything is called
        assert len(api.calls) == 0
    assert caught.value.retryable is False
    assert "page token" in str(caught.value)
