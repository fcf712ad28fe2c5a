"""4. The scheduled fan-out at scale (``python -m bench.run --only fanout``). A script's part, not a test.

N connections of a ``rest`` provider whose upstream is a loopback HTTP server that enforces R
requests/second itself (a token bucket, 429 + ``Retry-After: 1`` above it). The schedule's tick
(``FanOut.tick``) fires at once and every 60 s, as EventBridge would, and queues the due datasets
(at most its per-provider quota each time); W worker threads play the SQS event source mapping
(receive up to 10, invoke ``app.sync_worker`` with a Lambda-shaped event, delete what it did not
report as failed). Reported: 429s received (target 0), requests served, and completion time
against the ideal N/R (utilisation, target at least 0.9).

It runs the real code paths in-process against moto (``mock_aws``) with the real ``SystemClock``.
moto costs that real AWS does not have would otherwise dominate: ``bench.run`` applies
``local/moto_speed.py`` before any benchmark (same results, only faster).
"""

from __future__ import annotations

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

from bench.calls import AWS_CALLS  # noqa: E402
from bench.harness import (  # noqa: E402
    LAMBDA_TIMEOUT_SECONDS,
    VISIBILITY_TIMEOUT_SECONDS,
    LogTally,
    add_worker_rows,
    bench_worker,
    close_providers,
    fresh_aws,
    queue_depth,
    sqs_client,
    tick_interval,
    tick_quota,
)
from bench.loopback import JsonHandler, LoopbackServer, max_in_window  # noqa: E402
from bench.report import Table, ops_text  # noqa: E402
from chalicelib.api.requests import connection_change  # noqa: E402
from chalicelib.container import build_container, set_container  # noqa: E402
from chalicelib.domain.clock import SystemClock  # noqa: E402
from chalicelib.domain.config import Settings  # noqa: E402
from chalicelib.providers import parse_limits, registry_from_config  # noqa: E402
from chalicelib.store.items import STATE_SORT_KEY, DatasetItem, StateItem, create_tables  # noqa: E402

FANOUT_CONNECTIONS = 1000
FANOUT_RATE = 10.0
"""Upstream limit R (requests/second), also the service's own limit: ideal run N/R = 100 s. In-process
moto on 2 cores serves about 10-11 syncs/s at most (each sync is ~21 DynamoDB calls of ~4.5 ms CPU
each), so a higher R would measure moto, not the service. One tick queues at most
ceil(R x 60 x 1.5) = 900 jobs at this rate: the schedule ticks every 60 s, as EventBridge does."""
FANOUT_BURST = 5
"""Service bucket capacity B < R: the upstream bucket keeps (R - B)/R s of slack for the delay between
the service taking a token (a DynamoDB write) and its request reaching the upstream. B = R gave a few
429s in trials."""
FANOUT_WORKERS = 2
"""More threads only add GIL and moto-lock contention here (2 cores)."""
FANOUT_RECORDS_PER_PAGE = 3
FANOUT_DATA_TYPE = "items"


class RateLimitedUpstream(LoopbackServer):
    """``GET /items`` on 127.0.0.1: its own token bucket (capacity R, R per second, full at start);
    429 with ``Retry-After: 1`` when empty, else 200 with one page of records."""

    def __init__(self, rate: float, records_per_page: int = FANOUT_RECORDS_PER_PAGE) -> None:
        self.rate = rate
        self.capacity = rate
        self.records_per_page = records_per_page
        self._lock = threading.Lock()
        self._tokens = rate
        self._refilled_at = time.monotonic()
        self._served = 0
        self.arrivals: list[tuple[float, int]] = []
        """(time.monotonic(), status) of every request."""
        upstream = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/items":
                    self._answer(404, {"error": "not found"})
                    return
                served = upstream._admit()
                if served is None:
                    self._answer(429, {"error": "rate limited"}, {"Retry-After": "1"})
                    return
                items = [
                    {"id": f"item-{k}", "updated_at": "2026-11-01T00:00:00Z", "value": served * 10 + k}
                    for k in range(upstream.records_per_page)
                ]
                self._answer(200, {"items": items, "next": None})

        super().__init__(Handler, "bench-upstream")

    @property
    def base_url(self) -> str:
        return self.origin

    def _admit(self) -> int | None:
        """Take a token: the number of requests served so far, or ``None`` for a 429."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._refilled_at) * self.rate)
            self._refilled_at = now
            if self._tokens >= 1.0 - 1e-9:
                self._tokens -= 1.0
                self.arrivals.append((now, 200))
                self._served += 1
                return self._served
            self.arrivals.append((now, 429))
            return None

    def served(self) -> int:
        with self._lock:
            return self._served


def bench_fanout(
    base_settings: Settings,
    results: dict[str, Any],
    *,
    connections: int = FANOUT_CONNECTIONS,
    rate: float = FANOUT_RATE,
    burst: int = FANOUT_BURST,
    workers: int = FANOUT_WORKERS,
    max_concurrent_syncs: int | None = None,
    periodic_ticks: bool = True,
) -> Table:
    concurrent_syncs = max_concurrent_syncs or workers
    ideal = connections / rate
    timeout = 2 * ideal + 60
    threads_before = threading.active_count()
    tick_every = tick_interval(base_settings) if periodic_ticks else None
    schedule = f"the schedule ticking every {tick_every:g}s" if tick_every else "one tick"
    table = Table(
        f"4. Fan-out: {connections} connections, {schedule}, {workers} SQS worker threads, loopback upstream "
        f"enforcing R={rate:g} req/s (bucket {rate:g}, 429 + Retry-After: 1 above it); service limits "
        f"requests_per_second={rate:g}, burst={burst}, max_concurrent_syncs={concurrent_syncs}; SystemClock"
    )
    with fresh_aws(VISIBILITY_TIMEOUT_SECONDS) as (sqs, queue_url), RateLimitedUpstream(rate) as upstream:
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        registry = registry_from_config(
            {
                "bench": {
                    "type": "rest",
                    "base_url": upstream.base_url,
                    "limits": {
                        "requests_per_second": rate,
                        "burst": burst,
                        "max_concurrent_syncs": concurrent_syncs,
                    },
                    "data_types": {
                        FANOUT_DATA_TYPE: {
                            "path": "/items",
                            "records_path": "items",
                            "id_field": "id",
                            "updated_at_field": "updated_at",
                            "policy": {
                                "cooldown_seconds": 60,
                                "max_staleness_seconds": 600,
                                "schedule_every_seconds": 3600,
                            },
                        }
                    },
                }
            }
        )
        container = build_container(base_settings, clock=SystemClock(), registry=registry)
        create_tables()
        set_container(container)
        stop = threading.Event()
        worker = bench_worker(sqs_client, queue_url, queue_arn, stop, workers)
        stats = worker.stats
        try:
            setup_started = time.perf_counter()
            for index in range(connections):
                container.connections.put(
                    f"user-{index:04d}", "bench", connection_change({"provider": "bench", "credentials": {}})
                )
            setup_seconds = time.perf_counter() - setup_started

            tally = LogTally()
            AWS_CALLS.install()
            with tally.attached(), AWS_CALLS.measure() as calls:
                # The event source mapping polls before the first tick, as in AWS: jobs start as they are sent.
                worker.start("bench-worker")
                tick_started = time.monotonic()
                ticks = [(0.0, container.fanout.tick())]
                tick_seconds = time.monotonic() - tick_started
                idle_since: float | None = None
                finished = "timeout"
                checked_at = 0.0
                while time.monotonic() - tick_started < timeout:
                    time.sleep(0.25)
                    since_start = time.monotonic() - tick_started
                    if tick_every and since_start >= tick_every * len(ticks):
                        ticks.append((since_start, container.fanout.tick()))  # EventBridge's next rate tick
                    served_all = upstream.served() >= connections
                    if not served_all and time.monotonic() - checked_at < 5.0:
                        continue  # GetQueueAttributes is O(messages) in moto: look only now and then
                    checked_at = time.monotonic()
                    if sum(queue_depth(sqs, queue_url).values()) == 0:
                        if served_all:
                            finished = "every job done"
                            break
                        idle_since = idle_since or checked_at
                        if checked_at - idle_since > 5 and (not tick_every or not ticks[-1][1]["queued"]):
                            finished = "queue empty, upstream short of N"
                            break
                    else:
                        idle_since = None
                done_at = time.monotonic()
                stop.set()
                worker.join(LAMBDA_TIMEOUT_SECONDS)
            depth_after = queue_depth(sqs, queue_url)
            states = [
                item
                for item in DatasetItem.scan(DatasetItem.sk == STATE_SORT_KEY)
                if isinstance(item, StateItem) and item.provider == "bench"
            ]
        finally:
            stop.set()
            worker.join(5)
            close_providers([container])
    threads_after = threading.active_count()

    arrivals = sorted(upstream.arrivals)
    ok_times = [moment for moment, status in arrivals if status == 200]
    limited = sum(1 for _, status in arrivals if status == 429)
    synced = sum(1 for state in states if state.last_successful_at is not None)
    failed_states = sum(1 for state in states if state.last_error)
    first_at = arrivals[0][0] if arrivals else tick_started
    last_at = arrivals[-1][0] if arrivals else tick_started
    last_ok = ok_times[-1] if ok_times else tick_started
    elapsed_tick_to_last_ok = last_ok - tick_started
    elapsed_requests = last_at - first_at
    utilisation = ideal / elapsed_tick_to_last_ok if elapsed_tick_to_last_ok > 0 else 0.0
    utilisation_requests = ideal / elapsed_requests if elapsed_requests > 0 else 0.0
    busiest_second = max_in_window([moment for moment, _ in arrivals], 1.0)
    busiest_ok_second = max_in_window(ok_times, 1.0)
    steady = [moment for moment in ok_times if moment >= first_at + 5]
    steady_rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0

    table.add("setup: connections created (ConnectionService.put)", f"{connections} in {setup_seconds:.1f}s")
    service_limits = parse_limits("bench", {"requests_per_second": rate, "burst": burst})
    table.add("tick quota at this rate (the tick's planner, first tick)", tick_quota(base_settings, service_limits))
    for offset, summary in ticks:
        table.add(
            f"tick at +{offset:.0f}s: due / queued / skipped",
            f"{summary['due']} / {summary['queued']} / {summary['skipped'] or '-'}",
        )
    table.add("first tick's wall time (s)", f"{tick_seconds:.2f}")
    table.add("429s received from the upstream", limited, "0")
    table.add("upstream requests served (200)", len(ok_times), str(connections))
    table.add("upstream requests total", len(arrivals))
    table.add("datasets with a successful sync", f"{synced}/{len(states)}", f"{connections}/{connections}")
    table.add("datasets with an error recorded", failed_states, "0")
    table.add("ideal time N/R (s)", f"{ideal:.1f}")
    table.add("elapsed, tick start to last 200 (s)", f"{elapsed_tick_to_last_ok:.1f}")
    table.add("utilisation = ideal / elapsed (tick to last 200)", f"{utilisation:.3f}", ">= 0.9")
    table.add("  elapsed, first to last upstream request (s)", f"{elapsed_requests:.1f}")
    table.add("  utilisation, first to last request", f"{utilisation_requests:.3f}")
    table.add("  tick start to first request (s)", f"{first_at - tick_started:.2f}")
    table.add("  steady rate of 200s after the first 5 s (req/s)", f"{steady_rate:.2f}", f"<= {rate:g}")
    table.add("  most requests in any 1 s window (all / 200s)", f"{busiest_second} / {busiest_ok_second}")
    table.add("  end condition / tick start to end (s)", f"{finished} / {done_at - tick_started:.1f}")
    table.add("worker outcomes (job handled: ...)", dict(sorted(tally.outcomes.items())) or "-")
    per_sync = max(1, synced)
    table.add("AWS API calls from the tick to the end, per synced dataset", f"{calls.total / per_sync:.1f}")
    for service in ("dynamodb", "sqs"):
        ops = Counter({name: n for name, n in calls.counts.items() if name.startswith(f"{service}:")})
        table.add(f"  {service} by operation, per synced dataset", ops_text(ops, per_sync))
    table.add("  time inside AWS calls, summed over threads", calls.seconds_text())
    notable = {k: v for k, v in tally.templates.items() if not k.startswith(("job ", "sync started", "sync succeeded"))}
    table.add("service log lines other than started/succeeded/handled", notable or "-")
    add_worker_rows(table, stats, tally, depth_after)
    table.add("threads alive before / after", f"{threads_before} / {threads_after}", "equal")
    results["fanout"] = {
        "connections": connections,
        "rate": rate,
        "burst": burst,
        "workers": workers,
        "max_concurrent_syncs": concurrent_syncs,
        "ticks": [
            {"at": round(offset, 1), **{k: summary.get(k) for k in ("due", "queued", "skipped")}}
            for offset, summary in ticks
        ],
        "tick_seconds": round(tick_seconds, 3),
        "setup_seconds": round(setup_seconds, 2),
        "upstream_429": limited,
        "upstream_200": len(ok_times),
        "upstream_requests": len(arrivals),
        "datasets_synced": synced,
        "ideal_seconds": round(ideal, 2),
        "elapsed_tick_to_last_200": round(elapsed_tick_to_last_ok, 2),
        "utilisation": round(utilisation, 4),
        "elapsed_first_to_last_request": round(elapsed_requests, 2),
        "utilisation_first_to_last_request": round(utilisation_requests, 4),
        "steady_rate": round(steady_rate, 3),
        "max_requests_in_1s": busiest_second,
        "worker_outcomes": dict(tally.outcomes),
        "aws_calls": dict(calls.counts),
        "aws_call_seconds": {k: round(v, 2) for k, v in calls.seconds.items()},
        "log_lines": dict(tally.templates),
        "batch_item_failures": stats.batch_item_failures,
        "errors": stats.handler_errors + stats.receive_errors,
        "warnings": tally.warnings,
        "sqs_after": depth_after,
        "end": finished,
        "threads_before_after": [threads_before, threads_after],
    }
    return table
