"""Performance numbers quoted in the issue notes (``make bench``). A script, not a test.

Everything but 8 runs in-process against moto (DynamoDB, SQS, KMS), most through the real Chalice
routes (``chalice.test.Client``) or the real Lambda handlers, so counts are exact and times are relative.
The command line (``python -m bench.run --only NAME,...``) names each benchmark, numbered as its table is:

- ``sync-cost``: DynamoDB calls per one-page background sync, one warm worker (``bench/sync_cost.py``).
- ``cached`` (1): DynamoDB requests per cached read (target 1, at most 2) (``bench/reads.py``).
- ``concurrent`` (2): upstream fetches for 100 concurrent reads of an expired / never-synced dataset
  (target 1) (``bench/reads.py``).
- ``timing`` (3): median handler time of a cached read vs one bare GetItem on the same backend
  (``bench/reads.py``).
- ``fanout`` (4): fan-out of 1,000 connections against a loopback upstream enforcing R req/s: 429s
  (target 0), requests served, completion time against the ideal N/R (``bench/fanout.py``).
- ``tick`` (5): one tick over 10,000 due datasets: AWS API calls per dataset (target at most 0.15), wall
  time (``bench/tick.py``).
- ``refresh`` (6): OAuth2 refresh storm: 20 syncs of one connection's 20 data types at the same instant,
  each in its own worker "Lambda", with the access token expired (twice) or revoked: token refreshes
  (target exactly 1 per round), invalid_grant answers (target 0), syncs succeeded (20/20)
  (``bench/oauth_storm.py``, its upstream ``bench/whoop_upstream.py``).
- ``whoop`` (7): WHOOP's two windows: 1,000 connections against a loopback upstream enforcing 100 calls
  per sliding 60 s and a daily cap (whose pace plans 100 syncs a tick), the schedule ticking every 60 s
  for 185 s: 429s (target 0), most calls in any 60 s (<= 100), calls against the cap (<= cap), datasets
  synced, ``/sync/status`` (``bench/whoop_fanout.py``).
- ``local-load`` (8): the local run under load: 100 concurrent HTTP reads of one never-synced dataset
  against ``python -m local.run`` in its own process: answers with data, slowest answer, upstream calls
  (target 1) (``bench/local_load.py``).
- ``fairness`` (9): user A's slow demo syncs filling the provider's slots against user B's one-page read:
  the most of A's syncs running at once, B's read status and time, two rounds (``bench/fairness.py``).

Each in-process benchmark gets its own moto state (``mock_aws``), tables, queue and container: the shared
limits (provider token buckets) one benchmark leaves behind must not throttle the next. What they share:
``bench/harness.py`` (AWS state, worker Lambdas, log tally), ``bench/loopback.py`` (fake upstreams),
``bench/calls.py`` (AWS call counts), ``bench/report.py`` (the tables).

Options: ``--cold`` races cold clients in 2; ``--fanout-rate/--fanout-burst/--fanout-workers/
--fanout-connections/--fanout-one-tick`` change 4; ``--whoop-connections/--whoop-daily-cap/
--whoop-daily-burst/--whoop-no-feedback/--whoop-seconds/--whoop-workers`` change 7.
"""

from __future__ import annotations

import os

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Any  # noqa: E402

from bench.calls import AWS_CALLS  # noqa: E402
from bench.fairness import bench_fairness  # noqa: E402
from bench.fanout import FANOUT_BURST, FANOUT_CONNECTIONS, FANOUT_RATE, FANOUT_WORKERS, bench_fanout  # noqa: E402
from bench.local_load import bench_local_load  # noqa: E402
from bench.oauth_storm import bench_refresh  # noqa: E402
from bench.reads import (  # noqa: E402
    bench_cached_read_requests,
    bench_cached_read_time,
    bench_concurrent_reads,
    in_fresh_aws,
)
from bench.report import Table  # noqa: E402
from bench.sync_cost import bench_sync_cost  # noqa: E402
from bench.tick import bench_tick  # noqa: E402
from bench.whoop_fanout import (  # noqa: E402
    WHOOP_CONNECTIONS,
    WHOOP_DAILY_CAP,
    WHOOP_RUN_SECONDS,
    WHOOP_WORKERS,
    bench_whoop,
)
from chalicelib.domain.config import Settings  # noqa: E402
from local.moto_speed import apply_all as make_moto_fast  # noqa: E402

BENCH_SECRET = "bench-secret-that-is-long-enough-for-hs256"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def machine_table(results: dict[str, Any]) -> Table:
    table = Table("machine")
    versions = {p: _version(p) for p in ("chalice", "pynamodb", "moto", "botocore", "pyjwt")}
    table.add("python", f"{platform.python_implementation()} {platform.python_version()} ({sys.platform})")
    table.add("cpu count", os.cpu_count())
    table.add("platform", platform.platform())
    table.add("packages", " ".join(f"{k} {v}" for k, v in versions.items()))
    table.add("backend", "in-process moto; absolute times are not AWS latencies")
    results["machine"] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        **versions,
        "backend": "in-process moto",
    }
    return table


BENCHMARKS = (
    "sync-cost",
    "cached",
    "concurrent",
    "timing",
    "fanout",
    "tick",
    "refresh",
    "whoop",
    "local-load",
    "fairness",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="smart-sync performance numbers")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--cold", action="store_true", help="2: race cold PynamoDB clients")
    parser.add_argument("--fanout-connections", type=int, default=FANOUT_CONNECTIONS)
    parser.add_argument("--fanout-rate", type=float, default=FANOUT_RATE)
    parser.add_argument("--fanout-burst", type=int, default=FANOUT_BURST)
    parser.add_argument("--fanout-workers", type=int, default=FANOUT_WORKERS)
    parser.add_argument(
        "--fanout-one-tick", action="store_true", help="4: tick once instead of every tick interval (needs quota >= N)"
    )
    parser.add_argument("--whoop-connections", type=int, default=WHOOP_CONNECTIONS)
    parser.add_argument("--whoop-daily-cap", type=int, default=WHOOP_DAILY_CAP, help="7: the upstream's daily cap")
    parser.add_argument(
        "--whoop-daily-burst", type=int, default=None, help="7: the day window's burst (default: a tenth)"
    )
    parser.add_argument(
        "--whoop-no-feedback", action="store_true", help="7: do not declare WHOOP's X-RateLimit-* headers as feedback"
    )
    parser.add_argument("--whoop-seconds", type=float, default=WHOOP_RUN_SECONDS, help="7: how long the run lasts")
    parser.add_argument("--whoop-workers", type=int, default=WHOOP_WORKERS)
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    settings = Settings(jwt_secret=BENCH_SECRET, join_poll_interval_seconds=0.01)
    AWS_CALLS.install()
    make_moto_fast()  # local/moto_speed.py: moto's O(table) costs, and its DynamoDB writes made atomic
    tables = [machine_table(results)]

    def run(name: str, bench: Callable[[], Table]) -> None:
        if name in args.only:
            print(f"running {name}...", file=sys.stderr, flush=True)
            tables.append(bench())

    run("sync-cost", lambda: bench_sync_cost(settings, results))
    run("cached", in_fresh_aws(settings, lambda keyed, _sqs, _url: bench_cached_read_requests(keyed, results)))
    run(
        "concurrent",
        in_fresh_aws(
            settings, lambda keyed, sqs, url: bench_concurrent_reads(keyed, sqs, url, results, cold=args.cold)
        ),
    )
    run("timing", in_fresh_aws(settings, lambda keyed, _sqs, _url: bench_cached_read_time(keyed, results)))
    run(
        "fanout",
        lambda: bench_fanout(
            settings,
            results,
            connections=args.fanout_connections,
            rate=args.fanout_rate,
            burst=args.fanout_burst,
            workers=args.fanout_workers,
            periodic_ticks=not args.fanout_one_tick,
        ),
    )
    run("tick", lambda: bench_tick(settings, results))
    run("refresh", lambda: bench_refresh(settings, results))
    run(
        "whoop",
        lambda: bench_whoop(
            settings,
            results,
            connections=args.whoop_connections,
            daily_cap=args.whoop_daily_cap,
            daily_burst=args.whoop_daily_burst,
            feedback=not args.whoop_no_feedback,
            run_seconds=args.whoop_seconds,
            workers=args.whoop_workers,
        ),
    )
    run("local-load", lambda: bench_local_load(results))
    run("fairness", lambda: bench_fairness(settings, results))
    results["elapsed_seconds"] = round(time.perf_counter() - started, 2)
    for table in tables:
        print(table.render())
        print()
    print(f"elapsed: {results['elapsed_seconds']} s")
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
