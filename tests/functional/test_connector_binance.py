"""The shipped Binance spot connector (``chalicelib/providers.json``) through the real engine and routes.

``FakeBinance`` answers ``/api/v3/account``, ``/api/v3/myTrades`` and ``/api/v3/time`` the way
Binance's spot REST reference describes them: every signed call is checked (API key header,
``recvWindow``/``timestamp``, the hex HMAC-SHA256 ``signature`` appended last, recomputed here
independently), ``myTrades`` requires ``symbol`` and refuses windows over 24 h (-1127), and
the bodies come from ``tests/fixtures/binance``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from chalicelib.domain.clock import FakeClock
from chalicelib.providers import ProviderRegistry, parse_limits, registry_from_config
from chalicelib.providers.binance import BinanceProvider
from tests.functional.conftest import Harness

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "binance"
SHIPPED = json.loads((ROOT / "chalicelib" / "providers.json").read_text())

BASE = "https://api.binance.com"
NOW = 1_787_311_544.0  # 2026-08-21, when the fixtures' trades are a day or two old
DAY_MS = 86_400_000
EXAMPLE = json.loads((FIXTURES / "hmac_example.json").read_text())  # Binance's own published key pair
API_KEY, API_SECRET = EXAMPLE["apiKey"], EXAMPLE["secretKey"]
TRADES = "/users/u1/connections/b1/data/trades?limit=100"
BALANCES = "/users/u1/connections/b1/data/balances?limit=100"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def body(response: Any) -> Any:
    return json.loads(response.body)


def binance_signature(secret: str, payload: str) -> str:
    """Binance's HMAC-SHA256 SIGNED scheme, written here from its reference, not from the code under test."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def test_the_signature_check_of_this_test_matches_binances_published_example() -> None:
    # Given Binance's own example key and payload / When signed as this test checks signatures
    # Then the result is the signature Binance published (so the checks below can be trusted)
    assert binance_signature(EXAMPLE["secretKey"], EXAMPLE["payload"]) == EXAMPLE["signature"]


def eth_trades() -> list[dict[str, Any]]:
    """ETHUSDT trades that reuse BTCUSDT's trade ids: Binance numbers trades per symbol."""
    trades = []
    for trade in fixture("my_trades_btcusdt.json")[:2]:
        trades.append({**trade, "symbol": "ETHUSDT", "price": "2410.55000000", "commissionAsset": "ETH"})
    return trades


@dataclass
class FakeBinance:
    clock: FakeClock
    secret: str = API_SECRET
    server_offset_ms: int = 0
    trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    account: Any = None
    refuse_next: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    """Answers (status, body, headers) served before any check, oldest first."""
    calls: list[dict[str, Any]] = field(default_factory=list)

    def register(self, api: responses.RequestsMock) -> None:
        api.add_callback("GET", f"{BASE}/api/v3/account", callback=self._signed(self._account))
        api.add_callback("GET", f"{BASE}/api/v3/myTrades", callback=self._signed(self._my_trades))
        api.add_callback("GET", f"{BASE}/api/v3/time", callback=self._time)

    def server_ms(self) -> int:
        return round(self.clock.now() * 1000) + self.server_offset_ms

    @staticmethod
    def _error(status: int, name: str) -> tuple[int, dict[str, str], str]:
        return status, {}, json.dumps(fixture(name))

    def _signed(self, handler: Callable[[dict[str, str]], Any]) -> Callable[[Any], Any]:
        def answer(request: Any) -> Any:
            raw = urlsplit(request.url).query
            self.calls.append({"path": urlsplit(request.url).path, "raw": raw, "headers": dict(request.headers)})
            if self.refuse_next:
                status, payload, headers = self.refuse_next.pop(0)
                return status, headers, json.dumps(payload)
            if request.headers.get("X-MBX-APIKEY") != API_KEY:
                return self._error(401, "error_2015.json")
            payload, _, signature = raw.rpartition("&signature=")
            if "signature=" in payload or signature != binance_signature(self.secret, payload):
                return self._error(400, "error_1022.json")
            query = dict(parse_qsl(payload))
            timestamp, window = int(query["timestamp"]), int(query["recvWindow"])
            if timestamp >= self.server_ms() + 1000 or self.server_ms() - timestamp > window:
                return self._error(400, "error_1021.json")
            status, result = handler(query)
            return status, {"X-MBX-USED-WEIGHT-1M": "40"}, json.dumps(result)

        return answer

    def _account(self, query: dict[str, str]) -> tuple[int, Any]:
        return 200, self.account if self.account is not None else fixture("account_omit_zero.json")

    def _my_trades(self, query: dict[str, str]) -> tuple[int, Any]:
        start, end = int(query["startTime"]), int(query["endTime"])
        if end - start > DAY_MS:
            return 400, fixture("error_1127.json")
        limit = int(query.get("limit", "500"))
        assert limit <= 1000
        found = [t for t in self.trades.get(query["symbol"], []) if start <= t["time"] <= end]
        return 200, sorted(found, key=lambda t: t.get("id", 0))[:limit]

    def _time(self, request: Any) -> Any:
        self.calls.append({"path": urlsplit(request.url).path, "raw": "", "headers": dict(request.headers)})
        return 200, {}, json.dumps({"serverTime": self.server_ms()})


def registry(entry: Mapping[str, Any] | None = None) -> ProviderRegistry:
    """The shipped entry, built the way the registry builds it (limits read by the registry, not the provider)."""
    entry = entry or SHIPPED["binance"]
    own = {key: value for key, value in entry.items() if key not in ("limits", "webhooks")}
    return ProviderRegistry(
        {"binance": BinanceProvider.from_config("binance", own)}, {"binance": parse_limits("binance", entry["limits"])}
    )


@pytest.fixture
def make_binance(make_harness: Callable[..., Harness]) -> Callable[..., Harness]:
    def make(entry: Mapping[str, Any] | None = None) -> Harness:
        return make_harness(registry=registry(entry), clock=FakeClock(NOW))

    return make


def connect(
    harness: Harness, *, key: str = API_KEY, secret: str = API_SECRET, symbols: Any = ("BTCUSDT", "ETHUSDT")
) -> Any:
    settings = {"symbols": list(symbols) if isinstance(symbols, tuple) else symbols}
    credentials = {"api_key": key, "api_secret": secret}
    return harness.put_connection(connection_id="b1", provider="binance", credentials=credentials, settings=settings)


def fake_with_trades(harness: Harness) -> FakeBinance:
    btc = fixture("my_trades_btcusdt.json") + fixture("my_trades_btcusdt_page2.json")
    return FakeBinance(harness.clock, trades={"BTCUSDT": btc, "ETHUSDT": eth_trades()})


# --- a full first sync ---------------------------------------------------------------------------------------------


def test_balances_are_one_signed_account_call_without_zero_balances(make_binance: Callable[..., Harness]) -> None:
    # Given a Binance account holding BTC, ETH and USDT
    harness = make_binance()
    assert connect(harness).status_code == 201
    fake = FakeBinance(harness.clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the balances are read for the first time
        read = harness.read(BALANCES)
    # Then one signed call was made: the query as documented, the signature last and valid, the key in its header
    assert read.status_code == 200, read.body
    [call] = fake.calls
    assert call["path"] == "/api/v3/account"
    names = [name for name, _ in parse_qsl(call["raw"])]
    assert names == ["omitZeroBalances", "recvWindow", "timestamp", "signature"]
    query = dict(parse_qsl(call["raw"]))
    assert query["omitZeroBalances"] == "true" and query["recvWindow"] == "5000"
    assert query["timestamp"] == str(round(NOW * 1000))
    payload = call["raw"].rpartition("&signature=")[0]
    assert query["signature"] == binance_signature(API_SECRET, payload)
    assert call["headers"]["X-MBX-APIKEY"] == API_KEY
    # And each balance is cached under its asset
    answer = body(read)
    assert sorted(r["id"] for r in answer["data"]) == ["BTC", "ETH", "USDT"]
    assert {r["id"]: r["data"]["free"] for r in answer["data"]}["USDT"] == "1834.55120000"


def test_trades_walk_24_hour_windows_for_each_symbol_of_the_connection(make_binance: Callable[..., Harness]) -> None:
    # Given a connection trading BTCUSDT and ETHUSDT, whose trades ids overlap across the two symbols
    harness = make_binance()
    assert connect(harness).status_code == 201
    fake = fake_with_trades(harness)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the trades are read for the first time
        read = harness.read(TRADES)
    assert read.status_code == 200, read.body
    # Then each symbol's last 7 days were walked in consecutive windows of at most 24 h, 1000 trades each at most
    now_ms = round(NOW * 1000)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        windows = [
            (int(q["startTime"]), int(q["endTime"]))
            for q in (dict(parse_qsl(c["raw"])) for c in fake.calls)
            if q["symbol"] == symbol
        ]
        assert windows[0][0] == now_ms - 7 * DAY_MS and windows[-1][1] == now_ms
        assert all(end - start <= DAY_MS for start, end in windows)
        assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))
    assert all(dict(parse_qsl(c["raw"]))["limit"] == "1000" for c in fake.calls)
    # And every trade is cached under its symbol and id, so equal ids of two symbols both stay
    answer = body(read)
    assert sorted(r["id"] for r in answer["data"]) == [
        "BTCUSDT:5120443871",
        "BTCUSDT:5120443872",
        "BTCUSDT:5121002210",
        "BTCUSDT:5121002211",
        "ETHUSDT:5120443871",
        "ETHUSDT:5120443872",
    ]
    assert answer["metadata"]["sync"]["upstream_calls"] == len(fake.calls) == 14


def test_a_full_window_goes_on_just_after_its_newest_trade(make_binance: Callable[..., Harness]) -> None:
    # Given the shipped entry with a page of 2 (instead of 1000), and a day holding three BTCUSDT trades
    entry = copy.deepcopy(SHIPPED["binance"])
    entry["data_types"]["trades"]["page_size"] = 2
    harness = make_binance(entry)
    assert connect(harness, symbols=("BTCUSDT",)).status_code == 201
    fake = fake_with_trades(harness)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the trades are read
        read = harness.read(TRADES)
    # Then the full window was followed by one starting just after its newest trade, and nothing was lost
    assert read.status_code == 200, read.body
    starts = [int(dict(parse_qsl(c["raw"]))["startTime"]) for c in fake.calls]
    assert 1_787_200_012_345 + 1 in starts
    assert len(body(read)["data"]) == 4


def test_a_clock_refusal_is_mended_once_with_binances_server_time(make_binance: Callable[..., Harness]) -> None:
    # Given Binance's clock is 10 s ahead of ours (more than the 5 s recvWindow)
    harness = make_binance()
    assert connect(harness).status_code == 201
    fake = FakeBinance(harness.clock, server_offset_ms=10_000)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the balances are read
        read = harness.read(BALANCES)
    # Then the -1021 refusal made us read the server time once and sign again with it
    assert read.status_code == 200, read.body
    assert [c["path"] for c in fake.calls] == ["/api/v3/account", "/api/v3/time", "/api/v3/account"]
    assert dict(parse_qsl(fake.calls[2]["raw"]))["timestamp"] == str(round(NOW * 1000) + 10_000)


# --- refused credentials ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [
        pytest.param(API_KEY, "not-the-secret", "-1022", id="bad-signature-400"),
        pytest.param("a-revoked-api-key", API_SECRET, "-2015", id="rejected-key-401"),
    ],
)
def test_refused_credentials_answer_502_naming_binances_code(
    make_binance: Callable[..., Harness], key: str, secret: str, code: str
) -> None:
    # Given a connection whose secret (or key) Binance does not accept
    harness = make_binance()
    assert connect(harness, key=key, secret=secret).status_code == 201
    fake = FakeBinance(harness.clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the balances are read (nothing cached yet)
        read = harness.read(BALANCES)
    # Then the read answers 502 saying Binance refused the key or its signature, once (an auth error is not retried)
    assert read.status_code == 502, read.body
    text = read.body.decode()
    assert "refused the API key or its signature" in text and f"code {code}" in text
    assert secret not in text and key not in text
    assert len(fake.calls) == 1
    # And the refusal counts against the connection (NEEDS_REVIEW after a few in a row)
    stored = harness.container.store.get_connection("u1", "b1", consistent=True)
    assert stored is not None and stored.auth_failures == 1


def test_a_bad_signature_after_a_good_sync_answers_from_the_stale_cache(make_binance: Callable[..., Harness]) -> None:
    # Given cached balances
    harness = make_binance()
    assert connect(harness).status_code == 201
    fake = FakeBinance(harness.clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        assert harness.read(BALANCES).status_code == 200
    # When, past max staleness, Binance refuses the signature
    harness.clock.advance(1801)
    fake.refuse_next.append((400, fixture("error_1022.json"), {}))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        read = harness.read(BALANCES)
    # Then the read answers from the stale cache, with a warning and the refusal as its error
    assert read.status_code == 200, read.body
    answer = body(read)
    assert answer["metadata"]["source"] == "stale_cache"
    assert "stale" in answer["metadata"]["warning"]
    assert "code -1022" in answer["metadata"]["error"]
    assert sorted(r["id"] for r in answer["data"]) == ["BTC", "ETH", "USDT"]


# --- rate limits -------------------------------------------------------------------------------------------------


def test_a_429_is_retried_after_retry_after(make_binance: Callable[..., Harness]) -> None:
    # Given Binance answers 429 (-1003, Retry-After: 2) once
    harness = make_binance()
    assert connect(harness).status_code == 201
    fake = FakeBinance(harness.clock)
    fake.refuse_next.append((429, fixture("error_1003_429.json"), {"Retry-After": "2"}))
    started = harness.clock.now()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the balances are read
        read = harness.read(BALANCES)
    # Then the call was made again after the wait Binance asked for, and the read succeeded
    assert read.status_code == 200, read.body
    assert len(fake.calls) == 2
    assert harness.clock.now() - started >= 2


def test_a_418_ban_defers_the_sync_instead_of_calling_again(make_binance: Callable[..., Harness]) -> None:
    # Given Binance has banned the IP for 2 minutes (418 with Retry-After: 120)
    harness = make_binance()
    assert connect(harness).status_code == 201
    fake = FakeBinance(harness.clock)
    fake.refuse_next.append(
        (418, {"code": -1003, "msg": "Way too much request weight used; IP banned."}, {"Retry-After": "120"})
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the balances are read
        read = harness.read(BALANCES)
    # Then Binance is not called again: the read answers "pending" and a delayed job will go on
    assert read.status_code == 202, read.body
    assert len(fake.calls) == 1
    assert int(read.headers["Retry-After"]) >= 119


# --- hostile answers ---------------------------------------------------------------------------------------------


def test_balances_that_are_not_a_list_fail_the_read_with_a_502(make_binance: Callable[..., Harness]) -> None:
    # Given an account answer whose `balances` is an object
    harness = make_binance()
    assert connect(harness).status_code == 201
    fake = FakeBinance(harness.clock, account={**fixture("account.json"), "balances": {"BTC": "0.1"}})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the balances are read
        read = harness.read(BALANCES)
    # Then the read fails clearly, naming the field
    assert read.status_code == 502, read.body
    assert "records_path 'balances'" in read.body.decode()


def test_a_trade_without_an_id_is_skipped_and_counted(make_binance: Callable[..., Harness]) -> None:
    # Given one BTCUSDT trade that lost its id
    harness = make_binance()
    assert connect(harness, symbols=("BTCUSDT",)).status_code == 201
    fake = fake_with_trades(harness)
    del fake.trades["BTCUSDT"][2]["id"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        # When the trades are read
        read = harness.read(TRADES)
    # Then the other trades are kept and the bad one is counted
    assert read.status_code == 200, read.body
    answer = body(read)
    assert len(answer["data"]) == 3
    assert answer["metadata"]["skipped_records"] == 1


# --- connections ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "symbols",
    [
        pytest.param(None, id="absent"),
        pytest.param("BTCUSDT", id="not-a-list"),
        pytest.param([], id="empty"),
        pytest.param(["BTC/USDT"], id="not-a-symbol"),
    ],
)
def test_a_connection_needs_a_list_of_symbols(make_binance: Callable[..., Harness], symbols: Any) -> None:
    # Given a Binance connection without a usable symbols list
    harness = make_binance()
    # When it is created
    response = connect(harness, symbols=symbols)
    # Then it is refused, saying what is needed
    assert response.status_code == 400, response.body
    assert "symbols" in body(response)["error"]["message"]


def test_the_shipped_binance_entry_builds_through_the_registry() -> None:
    # Given the shipped providers file's binance entry / When the registry builds it
    built = registry_from_config({"binance": SHIPPED["binance"]})
    # Then it is the Binance provider, with its weighted data types and its shared limit window
    provider = built.get("binance")
    assert isinstance(provider, BinanceProvider)
    assert {name: spec.weight for name, spec in provider.data_types().items()} == {"balances": 20, "trades": 20}
    [window] = built.limits("binance").windows
    assert (window.requests, window.per_seconds, window.used_header) == (6000, 60, "x-mbx-used-weight-1m")
