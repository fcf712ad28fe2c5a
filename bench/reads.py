"""1-3. The read benchmarks (``python -m bench.run --only cached,concurrent,timing``). A script's part, not a test.

Through the real Chalice routes (``chalice.test.Client``) against in-process moto, each in its own moto
state, tables and queue (``in_fresh_aws``):

1. DynamoDB requests per cached read (target 1, at most 2).
2. Upstream fetches for 100 concurrent reads of an expired / never-synced dataset (target 1).
3. Median handler time of a cached read vs one bare GetItem on the same backend.
"""

from __future__ import annotations

import os

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import json  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402
from chalice.test import Client  # noqa: E402

from app import app  # noqa: E402
from bench.calls import AWS_CALLS  # noqa: E402
from bench.harness import fresh_aws, with_kms_key  # noqa: E402
from bench.report import Table, ops_text, percentile  # noqa: E402
from chalicelib.api.auth import authenticate, issue_token  # noqa: E402
from chalicelib.container import Container, build_container, set_container  # noqa: E402
from chalicelib.domain.clock import Clock, FakeClock, SystemClock  # noqa: E402
from chalicelib.domain.config import Settings  # noqa: E402
from chalicelib.domain.model import DatasetKey  # noqa: E402
from chalicelib.providers import ProviderRegistry  # noqa: E402
from chalicelib.providers.demo import DemoProvider  # noqa: E402
from chalicelib.store.items import STATE_SORT_KEY, create_tables  # noqa: E402
from local.counting_provider import CountingProvider  # noqa: E402
from local.moto_atomic import make_moto_dynamodb_atomic  # noqa: E402

DATA_TYPE = "recovery"

CACHED_READS = 200
CONCURRENT_READERS = 100
UPSTREAM_DELAY_SECONDS = 0.2
TIMING_ITERATIONS = 300
WARMUP_ITERATIONS = 20


# --- helpers ------------------------------------------------------------------------------------------


@dataclass
class Env:
    container: Container
    clock: Clock
    client: Client
    provider: CountingProvider

    def headers(self, user_id: str) -> dict[str, str]:
        token = issue_token(self.container.settings, user_id, self.clock.now())
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def put_connection(self, user_id: str, connection_id: str, settings: Mapping[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"provider": "demo", "credentials": {"token": "secret-demo-token"}}
        if settings is not None:
            body["settings"] = dict(settings)
        response = self.client.http.put(
            f"/users/{user_id}/connections/{connection_id}", headers=self.headers(user_id), body=json.dumps(body)
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"put_connection failed: {response.status_code} {response.body!r}")


def build_env(settings: Settings, clock: Clock, delay_seconds: float = 0.0) -> Env:
    delay = (lambda _request: time.sleep(delay_seconds)) if delay_seconds else None  # real upstream latency
    provider = CountingProvider(DemoProvider("demo"), delay)
    container = build_container(settings, clock=clock, registry=ProviderRegistry({"demo": provider}))
    set_container(container)
    return Env(container, clock, Client(app), provider)


def data_path(user_id: str, connection_id: str) -> str:
    return f"/users/{user_id}/connections/{connection_id}/data/{DATA_TYPE}"


def time_ms(fn: Callable[[], Any], iterations: int, warmup: int = WARMUP_ITERATIONS) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


# --- 1. DynamoDB requests per cached read -------------------------------------------------------------


def bench_cached_read_requests(settings: Settings, results: dict[str, Any]) -> Table:
    env = build_env(settings, FakeClock())
    env.put_connection("u1", "c1")
    path = data_path("u1", "c1")
    headers = env.headers("u1")

    with AWS_CALLS.dynamodb_operations() as sync_ops:
        first = env.client.http.get(path, headers=headers)
    first_body = json.loads(first.body)
    if first.status_code != 200 or first_body["metadata"]["source"] != "upstream":
        raise RuntimeError(f"first read did not sync: {first.status_code} {first_body}")

    sources: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    with AWS_CALLS.dynamodb_operations() as cached_ops:
        for _ in range(CACHED_READS):
            response = env.client.http.get(path, headers=headers)
            statuses[response.status_code] += 1
            sources[json.loads(response.body)["metadata"]["source"]] += 1

    first_page = json.loads(env.client.http.get(path + "?limit=10", headers=headers).body)
    paged_path = f"{path}?limit=10&next_token={first_page['next_token']}"
    paged_reads = 50
    with AWS_CALLS.dynamodb_operations() as paged_ops:
        for _ in range(paged_reads):
            response = env.client.http.get(paged_path, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"paged read failed: {response.status_code} {response.body!r}")

    total = sum(cached_ops.values())
    per_read = total / CACHED_READS
    table = Table("1. DynamoDB requests per cached read")
    table.add("syncing first read: DynamoDB calls", sum(sync_ops.values()))
    table.add("  by operation", ops_text(sync_ops))
    table.add("cached reads (N)", CACHED_READS)
    table.add("  answers", f"{dict(statuses)} source={dict(sources)}", f"{{200: {CACHED_READS}}} source=cache")
    table.add("DynamoDB calls during N cached reads", total)
    table.add("DynamoDB requests per cached read", f"{per_read:g}", "1 (at most 2)")
    table.add("  by operation, per read", ops_text(cached_ops, CACHED_READS))
    table.add(
        "context: later page (next_token), per read",
        f"{sum(paged_ops.values()) / paged_reads:g} ({ops_text(paged_ops, paged_reads)})",
        "at most 2",
    )
    results["cached_read"] = {
        "reads": CACHED_READS,
        "dynamodb_requests_per_read": per_read,
        "ops_per_read": {k: v / CACHED_READS for k, v in cached_ops.items()},
        "all_200_from_cache": statuses == Counter({200: CACHED_READS}) and sources == Counter({"cache": CACHED_READS}),
        "syncing_read_ops": dict(sync_ops),
        "next_token_page_requests_per_read": sum(paged_ops.values()) / paged_reads,
    }
    return table


# --- 2. upstream fetches for concurrent expired reads -------------------------------------------------


@dataclass
class RoundResult:
    fetches: int
    statuses: Counter[int]
    sources: Counter[str]
    joined: int
    errors: list[str]
    notes: list[str]
    latencies_ms: list[float]
    ops: Counter[str]
    wall_ms: float


def concurrent_round(env: Env, user_id: str, connection_id: str) -> RoundResult:
    path = data_path(user_id, connection_id)
    headers = env.headers(user_id)
    # One HTTP client per thread, made before the race. (LocalGateway keeps current_request
    # thread-local, but TestHTTPClient swaps the process-wide os.environ per request.)
    clients = [Client(app) for _ in range(CONCURRENT_READERS)]
    for client in clients:
        _ = client.http
    barrier = threading.Barrier(CONCURRENT_READERS + 1)
    latencies = [0.0] * CONCURRENT_READERS
    statuses = [0] * CONCURRENT_READERS
    bodies: list[dict[str, Any]] = [{} for _ in range(CONCURRENT_READERS)]
    errors: list[str] = []

    def read(index: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            response = clients[index].http.get(path, headers=headers)
            statuses[index] = response.status_code
            bodies[index] = json.loads(response.body)
        except Exception as exc:  # report, do not hide
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            latencies[index] = (time.perf_counter() - start) * 1000

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(CONCURRENT_READERS)]
    for thread in threads:
        thread.start()
    env.provider.reset()
    environ_before = os.environ
    with AWS_CALLS.dynamodb_operations() as ops:
        barrier.wait()
        released = time.perf_counter()
        for thread in threads:
            thread.join(timeout=30)
        wall_ms = (time.perf_counter() - released) * 1000
    notes: list[str] = []
    if os.environ is not environ_before:
        notes.append("harness: concurrent chalice.test.Client requests left os.environ swapped (restored)")
        os.environ = environ_before  # type: ignore[assignment]  # noqa: B003  (restore the same object)
    if any(thread.is_alive() for thread in threads):
        errors.append("some reader threads did not finish within 30 s")
    sources = Counter(str(b.get("metadata", {}).get("source", b.get("error", {}).get("code"))) for b in bodies)
    joined = sum(1 for b in bodies if b.get("metadata", {}).get("sync", {}).get("joined_running_sync"))
    return RoundResult(
        fetches=env.provider.calls,
        statuses=Counter(statuses),
        sources=sources,
        joined=joined,
        errors=errors,
        notes=notes,
        latencies_ms=latencies,
        ops=ops,
        wall_ms=wall_ms,
    )


def bench_concurrent_reads(
    settings: Settings, sqs: Any, queue_url: str, results: dict[str, Any], *, cold: bool = False
) -> Table:
    make_moto_dynamodb_atomic()
    # cooldown == max_staleness == 1 s: fresh for 1 s after a sync, then expired (no "stale" tier in between).
    overrides = {"demo/recovery": {"cooldown_seconds": 1, "max_staleness_seconds": 1}}
    concurrent_settings = replace(settings, join_poll_interval_seconds=0.02, policy_overrides=overrides)
    env = build_env(concurrent_settings, SystemClock(), UPSTREAM_DELAY_SECONDS)
    demo_settings = {"records": 10, "page_size": 50}
    env.put_connection("u2", "c2", demo_settings)
    # Warm, like a warm Lambda: PynamoDB creates each model's botocore client lazily and without a lock
    # (build_container -> bind_models drops them), so a cold 50-thread race first builds dozens of clients.
    # ``--cold`` skips this to show the cold-container race.
    if not cold:
        env.put_connection("u2", "warmup", demo_settings)
        warm = env.client.http.get(data_path("u2", "warmup"), headers=env.headers("u2"))
        if warm.status_code != 200:
            raise RuntimeError(f"warm-up read failed: {warm.status_code} {warm.body!r}")

    table = Table(
        f"2. Upstream fetches, {CONCURRENT_READERS} concurrent reads (fetch_page sleeps "
        f"{UPSTREAM_DELAY_SECONDS:g}s real time, SystemClock, join poll 0.02s, 10 records in 1 page, "
        f"{'COLD' if cold else 'warm'} clients)"
    )
    rounds: dict[str, RoundResult] = {}
    rounds["never_synced"] = concurrent_round(env, "u2", "c2")
    time.sleep(1.1)  # let the dataset pass max_staleness (1 s): the next reads find it expired
    rounds["expired"] = concurrent_round(env, "u2", "c2")
    queued = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    queued_messages = int(queued["Attributes"]["ApproximateNumberOfMessages"])

    results["concurrent"] = {"cold_clients": cold}
    for name, result in rounds.items():
        ok = result.statuses.get(200, 0)
        p50 = percentile(result.latencies_ms, 50)
        p95 = percentile(result.latencies_ms, 95)
        table.add(f"[{name}] upstream fetches (fetch_page calls)", result.fetches, "1")
        table.add(f"[{name}] 200 answers", f"{ok}/{CONCURRENT_READERS}", str(CONCURRENT_READERS))
        table.add(f"[{name}]   statuses / sources", f"{dict(result.statuses)} / {dict(result.sources)}")
        table.add(f"[{name}]   joined the running sync", result.joined, str(CONCURRENT_READERS - 1))
        table.add(f"[{name}] latency p50 / p95 / max (ms)", f"{p50:.1f} / {p95:.1f} / {max(result.latencies_ms):.1f}")
        table.add(f"[{name}]   wall time, barrier to last answer (ms)", f"{result.wall_ms:.1f}")
        table.add(f"[{name}]   DynamoDB calls (all readers)", sum(result.ops.values()))
        table.add(f"[{name}]   by operation", ops_text(result.ops))
        for error in result.errors[:5]:
            table.add(f"[{name}]   ERROR", error)
        for note in result.notes:
            table.add(f"[{name}]   note", note)
        results["concurrent"][name] = {
            "upstream_fetches": result.fetches,
            "ok_200": ok,
            "statuses": {str(k): v for k, v in result.statuses.items()},
            "joined": result.joined,
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "max_ms": round(max(result.latencies_ms), 2),
            "dynamodb_calls": dict(result.ops),
            "errors": result.errors,
            "notes": result.notes,
        }
    table.add("SQS messages queued by these reads", queued_messages, "0")
    results["concurrent"]["sqs_messages_queued"] = queued_messages
    return table


# --- 3. cached read vs bare GetItem -------------------------------------------------------------------


def bench_cached_read_time(settings: Settings, results: dict[str, Any]) -> Table:
    clock = FakeClock()
    env = build_env(settings, clock)
    env.put_connection("u3", "c3")
    path = data_path("u3", "c3")
    headers = env.headers("u3")
    first = env.client.http.get(path, headers=headers)
    if first.status_code != 200:
        raise RuntimeError(f"first read failed: {first.status_code} {first.body!r}")
    check = json.loads(env.client.http.get(path, headers=headers).body)
    if check["metadata"]["source"] != "cache":
        raise RuntimeError(f"second read was not cached: {check['metadata']}")
    records = len(check["data"])

    key = DatasetKey("u3", "c3", DATA_TYPE)
    ddb = boto3.client("dynamodb", region_name=settings.region)
    table_name = settings.datasets_table
    get_key = {"pk": {"S": key.dataset_id}, "sk": {"S": STATE_SORT_KEY}}
    limit = settings.default_page_limit + 2

    def cached_read() -> None:
        env.client.http.get(path, headers=headers)

    def cached_read_one() -> None:
        env.client.http.get(path + "?limit=1", headers=headers)

    def bare_get_item() -> None:
        ddb.get_item(TableName=table_name, Key=get_key)

    def bare_query() -> None:
        ddb.query(
            TableName=table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": key.dataset_id}},
            Limit=limit,
        )

    def reader_only() -> None:
        env.container.reader.read("u3", "c3", DATA_TYPE, {})

    def jwt_only() -> None:
        authenticate(headers, env.container.settings, clock.now())

    read_ms = statistics.median(time_ms(cached_read, TIMING_ITERATIONS))
    read_one_ms = statistics.median(time_ms(cached_read_one, TIMING_ITERATIONS))
    get_ms = statistics.median(time_ms(bare_get_item, TIMING_ITERATIONS))
    query_ms = statistics.median(time_ms(bare_query, TIMING_ITERATIONS))
    reader_ms = statistics.median(time_ms(reader_only, TIMING_ITERATIONS))
    jwt_ms = statistics.median(time_ms(jwt_only, TIMING_ITERATIONS))
    ratio = read_ms / get_ms

    table = Table(f"3. Median handler time, {TIMING_ITERATIONS} iterations each ({records} cached records per answer)")
    table.add("cached read via chalice.test.Client (ms)", f"{read_ms:.3f}")
    table.add("bare boto3 GetItem, state item (ms)", f"{get_ms:.3f}")
    table.add("ratio cached read / GetItem", f"{ratio:.2f}x")
    table.add("cached read, limit=1 (state + 1 record) (ms)", f"{read_one_ms:.3f}")
    table.add("ratio cached read limit=1 / GetItem", f"{read_one_ms / get_ms:.2f}x")
    table.add("handler overhead over its own Query (ms)", f"{read_ms - query_ms:.3f}")
    table.add("  context: bare boto3 Query, same as the read (ms)", f"{query_ms:.3f}")
    table.add("  context: DatasetReader.read, no HTTP/JWT (ms)", f"{reader_ms:.3f}")
    table.add("  context: JWT verification only (ms)", f"{jwt_ms:.3f}")
    results["timing"] = {
        "iterations": TIMING_ITERATIONS,
        "records_per_answer": records,
        "cached_read_median_ms": round(read_ms, 4),
        "bare_get_item_median_ms": round(get_ms, 4),
        "ratio": round(ratio, 2),
        "cached_read_limit1_median_ms": round(read_one_ms, 4),
        "ratio_limit1": round(read_one_ms / get_ms, 2),
        "bare_query_median_ms": round(query_ms, 4),
        "reader_only_median_ms": round(reader_ms, 4),
        "jwt_only_median_ms": round(jwt_ms, 4),
    }
    return table


# --- each in its own AWS account ----------------------------------------------------------------------


def in_fresh_aws(settings: Settings, bench: Callable[[Settings, Any, str], Table]) -> Callable[[], Table]:
    """``bench`` run later in a new moto state with its tables, queue and KMS key (``bench(keyed, sqs, url)``)."""

    def go() -> Table:
        with fresh_aws() as (sqs, queue_url):
            keyed = with_kms_key(settings)  # connection credentials are sealed with KMS
            build_container(keyed, clock=FakeClock(), registry=ProviderRegistry({"demo": DemoProvider()}))
            create_tables()
            return bench(keyed, sqs, queue_url)

    return go
