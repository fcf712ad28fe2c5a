"""7. WHOOP's two windows under the scheduled fan-out (``python -m bench.run --only whoop``). A script's part.

1,000 WHOOP-shaped connections (OAuth2 bearer tokens, one scheduled ``recovery`` data type each,
all due at once) against a loopback upstream (``bench/whoop_upstream.py``'s ``WhoopLikeUpstream``) that
ENFORCES both limits itself: at most 100 admitted calls in any sliding 60 s window, and a daily
cap, 429 + ``Retry-After`` beyond either (and WHOOP's ``X-RateLimit-*`` headers on every answer,
which the providers file names as feedback). The providers file declares the same two windows.
The app's ``sync_schedule`` handler fires at once and every 60 s, as EventBridge would, and W
threads play the SQS event source mapping for ``sync_worker`` (``local/emulator.py``'s ``QueueWorker``).

Which window binds where: the tick spreads a window longer than the tick over that window
(``tick_quota`` in ``chalicelib/domain/planner.py``: its refill, ``(requests - burst) / per_seconds``,
never its burst), so the day window sets how many syncs a tick plans, and a day cap the upstream could reach within
minutes would let the schedule plan nothing at all (250 a day plans 0.002 per tick). The default
cap, 160,000 a day, is the one whose pace is 100 syncs per tick: the day window governs the
schedule (``/sync/status`` names it, with the stretch of the schedule), and those 100 jobs a
minute saturate the minute window, so the sliding 100/60 s limit is what the calls run into.

Reported: upstream calls, 429s (target 0), the most calls in any sliding 60 s window (<= 100), the
calls against the daily cap (<= cap), datasets synced against due, what the operator route
``GET /sync/status`` says about the provider, and every AWS call per synced dataset (``bench/calls.py``).
"""

from __future__ import annotations

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any, cast  # noqa: E402

from chalice.test import Client  # noqa: E402

from app import app, sync_worker  # noqa: E402
from bench.calls import AWS_CALLS  # noqa: E402
from bench.harness import (  # noqa: E402
    LAMBDA_TIMEOUT_SECONDS,
    LogTally,
    add_worker_rows,
    bench_worker,
    close_providers,
    fire_schedule,
    fresh_aws,
    lambda_container,
    queue_depth,
    sqs_client,
    tick_interval,
    with_kms_key,
)
from bench.loopback import max_in_window  # noqa: E402
from bench.report import Table, ops_text  # noqa: E402
from bench.whoop_provider import oauth_app_settings, whoop_provider_config  # noqa: E402
from bench.whoop_upstream import WhoopLikeUpstream, Window  # noqa: E402
from chalicelib.api.auth import issue_token  # noqa: E402
from chalicelib.api.requests import connection_change  # noqa: E402
from chalicelib.container import Container, set_container  # noqa: E402
from chalicelib.domain.clock import SystemClock  # noqa: E402
from chalicelib.domain.config import Settings  # noqa: E402
from chalicelib.store.items import STATE_SORT_KEY, DatasetItem, StateItem, create_tables  # noqa: E402
from local.emulator import Handler, QueueWorker  # noqa: E402

WHOOP_PROVIDER = "whoop"
WHOOP_DATA_TYPE = "recovery"
WHOOP_CONNECTIONS = 1000
WHOOP_MINUTE_LIMIT = 100
"""WHOOP's published per-minute limit (a sliding 60 s window here)."""
WHOOP_DAILY_CAP = 160_000
"""With the default burst (a tenth), the day window refills 144,000 a day: 100 syncs per one-minute tick."""
WHOOP_RUN_SECONDS = 185.0
"""Ticks at 0, 60, 120 and 180 s (three minutes of calls), and the fourth tick's plan."""
WHOOP_WORKERS = 4
WHOOP_MAX_CONCURRENT_SYNCS = 10
WHOOP_POLICY = {"cooldown_seconds": 300, "max_staleness_seconds": 7200, "schedule_every_seconds": 3600}
DAY_SECONDS = 86_400
_JOIN_SECONDS = 60.0
"""How long the end of the run waits for a worker thread to finish the batch it holds."""
_LAMBDA_LEFT_AT_END_SECONDS = 35.0
"""The worker 'Lambdas' time out this long after the run ends (their jobs hand off 15 s before, as near a
real timeout): a batch of ten paced jobs would otherwise keep the run going for another minute or more."""


def run_bound_handler(ends_at: float) -> Handler:
    """``app.sync_worker`` whose Lambda context never outlives the run by more than a few seconds."""
    handler = cast(Handler, sync_worker)

    def bounded(event: dict[str, Any], context: Any) -> Any:
        return handler(event, replace(context, deadline=min(context.deadline, ends_at)))

    return bounded


WHOOP_FEEDBACK_HEADERS = {
    "remaining_header": "x-ratelimit-remaining",
    "reset_header": "x-ratelimit-reset",
    "limit_header": "x-ratelimit-limit",
}
"""WHOOP's rate-limit headers, which the upstream sends on every answer as WHOOP does."""


def whoop_limits(daily_cap: int, daily_burst: int | None = None, *, feedback: bool = True) -> dict[str, Any]:
    """Both WHOOP windows as the providers file declares them (the day window's burst: the default, a tenth),
    reading WHOOP's rate-limit headers unless ``feedback`` is off."""
    headers = WHOOP_FEEDBACK_HEADERS if feedback else {}
    day: dict[str, Any] = {"requests": daily_cap, "per_seconds": DAY_SECONDS, **headers}
    if daily_burst is not None:
        day["burst"] = daily_burst
    return {
        "windows": [{"requests": WHOOP_MINUTE_LIMIT, "per_seconds": 60, **headers}, day],
        "max_concurrent_syncs": WHOOP_MAX_CONCURRENT_SYNCS,
    }


def operator_status(settings: Settings, now: float) -> tuple[int, Any]:
    """``GET /sync/status`` through the real route, with an operator token (called once the workers stopped:
    ``chalice.test`` swaps the process environment per request)."""
    token = issue_token(settings, "bench-operator", now, operator=True)
    response = Client(app).http.get("/sync/status", headers={"Authorization": f"Bearer {token}"})
    try:
        body = json.loads(response.body)
    except ValueError:
        body = {"unparsed": response.body[:200].decode("utf-8", "replace")}
    return response.status_code, body


def _compact(value: Any, limit: int = 180) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bench_whoop(
    base_settings: Settings,
    results: dict[str, Any],
    *,
    connections: int = WHOOP_CONNECTIONS,
    daily_cap: int = WHOOP_DAILY_CAP,
    daily_burst: int | None = None,
    feedback: bool = True,
    run_seconds: float = WHOOP_RUN_SECONDS,
    workers: int = WHOOP_WORKERS,
) -> Table:
    AWS_CALLS.install()
    every = tick_interval(base_settings)
    threads_before = threading.active_count()
    burst_text = "default burst" if daily_burst is None else f"burst {daily_burst}"
    burst_text += ", X-RateLimit-* read as feedback" if feedback else ", no header feedback"
    table = Table(
        f"7. WHOOP limits under the fan-out: {connections} connections x {WHOOP_DATA_TYPE} (all due), loopback "
        f"upstream enforcing {WHOOP_MINUTE_LIMIT} calls per sliding 60 s and {daily_cap:,} per day (429 + Retry-After "
        f"beyond either), the same two windows in the providers file (day: {burst_text}); sync_schedule every "
        f"{every:g}s for {run_seconds:g}s, {workers} SQS worker threads, "
        f"max_concurrent_syncs={WHOOP_MAX_CONCURRENT_SYNCS}"
    )
    windows = [Window(WHOOP_MINUTE_LIMIT, 60.0), Window(daily_cap, float(DAY_SECONDS))]
    clock = SystemClock()
    with (
        # The visibility timeout Lambda requires at least (its timeout): a batch still running is never redelivered.
        fresh_aws(LAMBDA_TIMEOUT_SECONDS) as (sqs, queue_url),
        oauth_app_settings(),
        WhoopLikeUpstream(clock.now, windows=windows, accept_any_bearer=True, token_delay_seconds=0.0) as upstream,
    ):
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        settings = with_kms_key(base_settings)
        limits = whoop_limits(daily_cap, daily_burst, feedback=feedback)
        config = {WHOOP_PROVIDER: whoop_provider_config(upstream, {WHOOP_DATA_TYPE: "/recovery"}, limits, WHOOP_POLICY)}
        container = lambda_container(settings, clock, config)
        create_tables()
        set_container(container)
        stop = threading.Event()
        worker: QueueWorker | None = None
        try:
            setup_started = time.perf_counter()
            put_connections(container, connections, expires_at=clock.now() + DAY_SECONDS)
            setup_seconds = time.perf_counter() - setup_started
            # The worker 'Lambdas' end with the run (plus a margin), wherever in it they were invoked.
            ends_at = time.time() + run_seconds + _LAMBDA_LEFT_AT_END_SECONDS
            worker = bench_worker(sqs_client, queue_url, queue_arn, stop, workers, run_bound_handler(ends_at))
            stats = worker.stats

            tally = LogTally()
            with tally.attached(), AWS_CALLS.measure() as calls:
                started = clock.now()
                ticks = [(0.0, fire_schedule())]
                worker.start("bench-whoop-worker")
                while (since := clock.now() - started) < run_seconds:
                    if since >= every * len(ticks):
                        ticks.append((since, fire_schedule()))  # EventBridge's next rate tick
                    time.sleep(0.25)
                stop.set()
                stopped_at = clock.now() - started
                still_running = worker.join(_JOIN_SECONDS)
                ended_at = clock.now() - started
            depth_after = queue_depth(sqs, queue_url)
            states = [
                item
                for item in DatasetItem.scan(DatasetItem.sk == STATE_SORT_KEY)
                if isinstance(item, StateItem) and item.provider == WHOOP_PROVIDER
            ]
            status_code, status = operator_status(settings, clock.now())
        finally:
            stop.set()
            if worker is not None:
                worker.join(5)
            close_providers([container])
    threads_after = threading.active_count()

    arrivals = sorted(upstream.arrivals, key=lambda arrival: arrival.at)
    counts = Counter(arrival.status for arrival in arrivals)
    all_times = [arrival.at for arrival in arrivals]
    ok_times = [arrival.at for arrival in arrivals if arrival.status == 200]
    busiest_minute = max_in_window(all_times, 60.0)
    busiest_ok_minute = max_in_window(ok_times, 60.0)
    first_call_at = all_times[0] - started if all_times else None
    last_call_at = all_times[-1] - started if all_times else None
    synced = sum(1 for state in states if state.last_successful_at is not None)
    failed_states = sum(1 for state in states if state.last_error)
    due = ticks[0][1].get("due", 0) if ticks else 0
    queued = sum(int(summary.get("queued") or 0) for _, summary in ticks)
    per_sync = max(1, synced)
    polls = calls.counts.get("sqs:ReceiveMessage", 0)
    work_calls = calls.total - polls
    provider_view = (status.get("providers") or {}).get(WHOOP_PROVIDER, {}) if isinstance(status, dict) else {}

    table.add(
        "setup: connections created (ConnectionService.put, credentials sealed)",
        f"{connections} in {setup_seconds:.1f}s",
    )
    for offset, summary in ticks:
        table.add(
            f"tick at +{offset:.0f}s: due / queued / skipped",
            f"{summary.get('due')} / {summary.get('queued')} / {summary.get('skipped') or '-'}",
        )
    table.add("upstream calls (all answers)", len(arrivals))
    table.add("429s received from the upstream", counts.get(429, 0), "0")
    table.add("401s received from the upstream", counts.get(401, 0), "0")
    table.add(
        "most calls in any sliding 60 s window (all / 200s)",
        f"{busiest_minute} / {busiest_ok_minute}",
        f"<= {WHOOP_MINUTE_LIMIT}",
    )
    table.add("calls against the daily cap (200s, all within 24 h)", counts.get(200, 0), f"<= {daily_cap:,}")
    table.add(
        "  first / last upstream call (s after the first tick)",
        " / ".join("-" if moment is None else f"{moment:.1f}" for moment in (first_call_at, last_call_at)),
    )
    table.add("datasets synced / queued by the ticks / due", f"{synced} / {queued} / {due}")
    table.add("datasets with an error recorded", failed_states, "0")
    table.add("worker outcomes (job handled: ...)", dict(sorted(tally.outcomes.items())) or "-")
    table.add(
        "AWS API calls per synced dataset (tick, worker, SQS; not the idle polls)", f"{work_calls / per_sync:.1f}"
    )
    for service in ("dynamodb", "sqs", "kms"):
        ops = Counter(
            {
                name: n
                for name, n in calls.counts.items()
                if name.startswith(f"{service}:") and name != "sqs:ReceiveMessage"
            }
        )
        if ops:
            table.add(f"  {service} by operation, per synced dataset", ops_text(ops, per_sync))
    table.add("  ReceiveMessage polls of the event source mapping (idle ones included)", polls)
    table.add("  time inside AWS calls, summed over threads", calls.seconds_text())
    table.add(
        f"GET /sync/status: HTTP status / providers.{WHOOP_PROVIDER} keys",
        f"{status_code} / {', '.join(provider_view) or '-'}",
        "200",
    )
    for key, value in provider_view.items():
        if key == "statistics" and isinstance(value, Mapping):
            names = ("total_syncs", "successful_syncs", "failed_syncs")
            table.add(
                "  status statistics: total / successful / failed syncs", " / ".join(str(value.get(n)) for n in names)
            )
        elif key == "quota" and isinstance(value, Mapping):
            for name, item in value.items():
                table.add(f"  status quota.{name}", item if isinstance(item, str) else _compact(item))
        elif key == "windows" and isinstance(value, list):
            for index, window in enumerate(value):
                table.add(f"  status windows[{index}]", _compact(window))
        else:
            table.add(f"  status {key}", _compact(value))
    notable = {k: v for k, v in tally.templates.items() if not k.startswith(("job ", "sync started", "sync succeeded"))}
    table.add("service log lines other than started/succeeded/handled", _compact(notable, 400) if notable else "-")
    add_worker_rows(
        table, stats, tally, depth_after, batches_note=" (incl. given back as the run ends)", expect_clean=False
    )
    table.add("run: workers stopped at / all joined at (s)", f"{stopped_at:.1f} / {ended_at:.1f}")
    table.add(
        "threads alive before / after (workers still running)", f"{threads_before} / {threads_after} ({still_running})"
    )
    results["whoop"] = {
        "connections": connections,
        "minute_limit": WHOOP_MINUTE_LIMIT,
        "daily_cap": daily_cap,
        "daily_burst": daily_burst,
        "feedback_headers": feedback,
        "run_seconds": run_seconds,
        "workers": workers,
        "ticks": [
            {"at": round(offset, 1), **{k: summary.get(k) for k in ("due", "queued", "skipped")}}
            for offset, summary in ticks
        ],
        "setup_seconds": round(setup_seconds, 2),
        "upstream_calls": len(arrivals),
        "upstream_200": counts.get(200, 0),
        "upstream_429": counts.get(429, 0),
        "upstream_401": counts.get(401, 0),
        "max_calls_in_60s": busiest_minute,
        "max_200s_in_60s": busiest_ok_minute,
        "first_call_at": None if first_call_at is None else round(first_call_at, 1),
        "last_call_at": None if last_call_at is None else round(last_call_at, 1),
        "datasets_due": due,
        "datasets_queued": queued,
        "datasets_synced": synced,
        "datasets_with_error": failed_states,
        "worker_outcomes": dict(tally.outcomes),
        "aws_calls": dict(calls.counts),
        "aws_calls_per_synced_dataset": round(work_calls / per_sync, 2),
        "status_http": status_code,
        "status_provider": provider_view,
        "log_lines": dict(tally.templates),
        "errors": stats.handler_errors + stats.receive_errors,
        "warnings": tally.warnings,
        "sqs_after": depth_after,
        "threads_before_after": [threads_before, threads_after],
    }
    return table


def put_connections(container: Container, count: int, *, expires_at: float) -> None:
    """The fleet, PUT as the API would (credentials sealed with KMS); tokens valid all run (this is about limits)."""
    for index in range(count):
        container.connections.put(
            f"user-{index:04d}",
            WHOOP_PROVIDER,
            connection_change(
                {
                    "provider": WHOOP_PROVIDER,
                    "credentials": {
                        "access_token": f"at-user-{index:04d}",
                        "refresh_token": f"rt-user-{index:04d}",
                        "expires_at": expires_at,
                    },
                    "provider_user_id": str(20_000 + index),
                }
            ),
        )
