"""6. The OAuth2 refresh storm (``python -m bench.run --only refresh``). A script's part, not a test.

One WHOOP-shaped connection with 20 data types whose access token has just expired. One
background job per data type is queued (``SyncCoordinator.queue_background``, as a stale read
queues one: the schedule's tick would plan only what WHOOP's day window allows per minute, about
6), and 20 threads, each playing its own worker Lambda (its own container, credential keeper and
HTTP session: nothing shared but DynamoDB, KMS and the upstream), run the 20 jobs at the same
moment. The loopback upstream (``WhoopLikeUpstream``) rotates the refresh token on every refresh
and answers ``400 invalid_grant`` to one spent twice, so a second refresh anywhere shows up in
its counters. Three rounds on the same connection:

1. the access token just expired: every sync needs a refresh before its first call;
2. an hour later it expired again: the refresh must spend the token round 1 rotated in;
3. the provider revoked the access token early (still valid by its ``expires_at``): every sync's
   first call may answer 401, and the refresh after a 401 must be single flight too.

Reported per round: token refreshes (target exactly 1), ``invalid_grant`` answers (target 0),
syncs succeeded (20/20), upstream 401s (0 in rounds 1 and 2), the connection's credentials
version (one bump per refresh) and every AWS call the storm made.

The upstream lives in ``bench/whoop_upstream.py`` (also benchmark 7's, ``bench/whoop_fanout.py``, there
with its sliding request windows switched on); the provider pointed at it in ``bench/whoop_provider.py``.
"""

from __future__ import annotations

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from bench.calls import AWS_CALLS  # noqa: E402
from bench.harness import (  # noqa: E402
    LogTally,
    close_providers,
    fresh_aws,
    lambda_container,
    queue_depth,
    with_kms_key,
)
from bench.report import Table, ops_text  # noqa: E402
from bench.whoop_provider import oauth_app_settings, whoop_provider_config  # noqa: E402
from bench.whoop_upstream import (  # noqa: E402
    ACCESS_TOKEN_SECONDS,
    TOKEN_ENDPOINT_DELAY_SECONDS,
    UpstreamCounters,
    WhoopLikeUpstream,
)
from chalicelib.api.requests import connection_change  # noqa: E402
from chalicelib.container import Container, set_container  # noqa: E402
from chalicelib.domain.config import Settings  # noqa: E402
from chalicelib.domain.model import DatasetKey, Trigger  # noqa: E402
from chalicelib.store.items import create_tables  # noqa: E402

STORM_DATA_TYPES = 20
STORM_USER = "storm-user"
STORM_CONNECTION = "whoop"
STORM_PROVIDER = "whoop"
STORM_PROVIDER_USER_ID = "10129"
STORM_JOB_BUDGET_SECONDS = 285.0
"""What each job's Lambda has left when it starts (300 s timeout minus the hand-off margin)."""
STORM_POLICY = {"cooldown_seconds": 60, "max_staleness_seconds": 1800, "schedule_every_seconds": None}
"""On demand only: the storm's jobs are queued by the benchmark, never by a tick."""
STORM_LIMITS = {
    # WHOOP's published limits (100 a minute, 10,000 a day), with a burst of 50 in the minute (still never more
    # than 100 in any 60 s) so that pacing does not stretch a round's wall time; 20 slots so all 20 syncs run at once.
    "windows": [{"requests": 100, "per_seconds": 60, "burst": 50}, {"requests": 10_000, "per_seconds": 86_400}],
    "max_concurrent_syncs": STORM_DATA_TYPES,
}
WHOOP_COLLECTIONS = {
    "recovery": "/recovery",
    "cycle": "/cycle",
    "sleep": "/activity/sleep",
    "workout": "/activity/workout",
}
"""WHOOP v2's collections (paths under /developer/v2); the storm adds synthetic ones up to 20 data types."""


def storm_data_types(count: int = STORM_DATA_TYPES) -> dict[str, str]:
    """WHOOP's four collections, then synthetic ones (``series_05``...) served the same way."""
    names = dict(WHOOP_COLLECTIONS)
    for index in range(len(names) + 1, count + 1):
        names[f"series_{index:02d}"] = f"/series_{index:02d}"
    return dict(list(names.items())[:count])


class ShiftedClock:
    """The real clock, moved forward on demand: real threads really wait, and a round can happen 'an hour later'."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


def take_messages(sqs: Any, queue_url: str, expected: int) -> list[dict[str, Any]]:
    """Every visible job on the queue (at least ``expected`` if they are there)."""
    messages: list[dict[str, Any]] = []
    for _ in range(expected + 5):
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        batch = got.get("Messages", [])
        if not batch:
            break
        messages.extend(batch)
        if len(messages) >= expected:
            break
    return messages


@dataclass
class StormRound:
    name: str
    jobs: int
    outcomes: Counter[str]
    errors: list[str]
    upstream: UpstreamCounters
    synced: int
    connection_status: str
    credentials_version_bump: int | None
    refresh_token_rotated: bool
    wall_seconds: float
    aws_calls: Counter[str]
    log_lines: Counter[str] = field(default_factory=Counter)


def storm(
    name: str,
    main: Container,
    lambdas: Sequence[Container],
    upstream: WhoopLikeUpstream,
    sqs: Any,
    queue_url: str,
    data_types: Sequence[str],
) -> StormRound:
    """One job per data type queued, then each run by its own 'Lambda', all released at the same instant."""
    clock = main.clock
    set_container(main)
    before = upstream.counters()
    refresh_token_before = upstream.current_refresh_token
    version_before = _credentials_version(main)
    round_started = clock.now()
    for data_type in data_types:
        # What a stale read of each data type does: claim the dataset and queue one background job.
        main.coordinator.queue_background(
            DatasetKey(STORM_USER, STORM_CONNECTION, data_type),
            STORM_PROVIDER,
            main.policies.policy(STORM_PROVIDER, data_type),
            trigger=Trigger.BACKGROUND,
            respect_cooldown=False,
        )
    messages = take_messages(sqs, queue_url, len(data_types))
    barrier = threading.Barrier(len(messages) + 1)
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def run_job(container: Container, message: dict[str, Any]) -> None:
        barrier.wait()
        try:
            outcome = container.worker.handle(message["Body"], clock.now() + STORM_JOB_BUDGET_SECONDS)
        except Exception as exc:  # counted, shown in the table
            with lock:
                outcomes[type(exc).__name__] += 1
                errors.append(f"{type(exc).__name__}: {exc}"[:160])
            return
        with lock:
            outcomes[outcome] += 1
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    threads = [
        threading.Thread(target=run_job, args=(lambdas[index % len(lambdas)], message), name=f"bench-lambda-{index}")
        for index, message in enumerate(messages)
    ]
    for thread in threads:
        thread.start()
    tally = LogTally()
    with tally.attached(), AWS_CALLS.measure() as calls:
        started = time.perf_counter()
        barrier.wait()  # every 'Lambda' starts its job now
        for thread in threads:
            thread.join(timeout=STORM_JOB_BUDGET_SECONDS)
        wall = time.perf_counter() - started
    synced = 0
    for data_type in data_types:
        state = main.store.get_state(DatasetKey(STORM_USER, STORM_CONNECTION, data_type))
        if state is not None and state.last_successful_at is not None and state.last_successful_at >= round_started:
            synced += 1
    connection = main.store.get_connection(STORM_USER, STORM_CONNECTION)
    version_after = _credentials_version(main)
    return StormRound(
        name=name,
        jobs=len(messages),
        outcomes=outcomes,
        errors=errors,
        upstream=upstream.counters().minus(before),
        synced=synced,
        connection_status=connection.status.value if connection is not None else "gone",
        credentials_version_bump=(
            None if version_before is None or version_after is None else version_after - version_before
        ),
        refresh_token_rotated=upstream.current_refresh_token != refresh_token_before,
        wall_seconds=wall,
        aws_calls=calls.counts,
        log_lines=Counter({k: v for k, v in tally.templates.items() if not k.startswith(("job ", "sync s"))}),
    )


def _credentials_version(container: Container) -> int | None:
    connection = container.store.get_connection(STORM_USER, STORM_CONNECTION)
    version = getattr(connection, "credentials_version", None)
    return int(version) if isinstance(version, int) else None


def bench_refresh(
    base_settings: Settings, results: dict[str, Any], *, data_type_count: int = STORM_DATA_TYPES
) -> Table:
    AWS_CALLS.install()
    data_types = storm_data_types(data_type_count)
    table = Table(
        f"6. OAuth2 refresh storm: 1 WHOOP-shaped connection, {len(data_types)} data types, {len(data_types)} worker "
        f"'Lambdas' (own container each) syncing at the same instant; loopback token endpoint rotating the refresh "
        f"token ({TOKEN_ENDPOINT_DELAY_SECONDS:g}s per refresh, invalid_grant on reuse)"
    )
    rounds: list[StormRound] = []
    containers: list[Container] = []
    clock = ShiftedClock()
    with (
        fresh_aws() as (sqs, queue_url),
        oauth_app_settings(),
        WhoopLikeUpstream(clock.now) as upstream,
    ):
        settings = with_kms_key(base_settings)
        config = {STORM_PROVIDER: whoop_provider_config(upstream, data_types, STORM_LIMITS, STORM_POLICY)}
        main = lambda_container(settings, clock, config)
        create_tables()
        set_container(main)
        containers.append(main)
        try:
            expired_at = clock.now() - 1
            upstream.seed_tokens("at-0-consent", expired_at, "rt-0-consent")
            status = main.connections.put(
                STORM_USER,
                STORM_CONNECTION,
                connection_change(
                    {
                        "provider": STORM_PROVIDER,
                        "credentials": {
                            "access_token": "at-0-consent",
                            "refresh_token": "rt-0-consent",
                            "expires_at": expired_at,
                        },
                        "provider_user_id": STORM_PROVIDER_USER_ID,
                    }
                ),
            ).status_code
            if status not in (200, 201):
                raise RuntimeError(f"could not create the storm connection: {status}")
            lambdas = [lambda_container(settings, clock, config) for _ in data_types]
            containers.extend(lambdas)
            names = list(data_types)
            rounds.append(storm("token just expired", main, lambdas, upstream, sqs, queue_url, names))
            clock.advance(ACCESS_TOKEN_SECONDS + 100)  # the token round 1 got has expired too
            rounds.append(storm("an hour later, expired again", main, lambdas, upstream, sqs, queue_url, names))
            clock.advance(1000)  # still valid by its expires_at (for 2,600 s more) ...
            upstream.revoke_access_tokens()  # ... but the provider no longer takes it: every first call may get 401
            rounds.append(storm("revoked early (401 storm)", main, lambdas, upstream, sqs, queue_url, names))
            depth_after = queue_depth(sqs, queue_url)
        finally:
            close_providers(containers)

    targets = {
        "token just expired": "0",
        "an hour later, expired again": "0",
        "revoked early (401 storm)": f"1..{len(data_types)} (first calls with the revoked token)",
    }
    for index, result in enumerate(rounds, start=1):
        prefix = f"[{index}: {result.name}]"
        counters = result.upstream
        table.add(f"{prefix} jobs queued and run at once", result.jobs, str(len(data_types)))
        table.add(f"{prefix} token refreshes", counters.refreshes, "1")
        table.add(
            f"{prefix} invalid_grant answers (reused refresh tokens)",
            f"{counters.invalid_grant} ({counters.reused_refresh_tokens})",
            "0",
        )
        table.add(
            f"{prefix} syncs succeeded", f"{result.synced}/{len(data_types)}", f"{len(data_types)}/{len(data_types)}"
        )
        table.add(f"{prefix} upstream 401s", counters.api_unauthorized, targets.get(result.name, ""))
        table.add(f"{prefix}   upstream 200s / 429s", f"{counters.api_ok} / {counters.api_rate_limited}")
        table.add(f"{prefix}   other token endpoint refusals", counters.token_errors, "0")
        table.add(f"{prefix}   job outcomes", dict(sorted(result.outcomes.items())) or "-")
        table.add(
            f"{prefix}   credentials version bump / refresh token rotated",
            f"{'?' if result.credentials_version_bump is None else result.credentials_version_bump}"
            f" / {'yes' if result.refresh_token_rotated else 'no'}",
            "1 / yes",
        )
        table.add(f"{prefix}   connection status after", result.connection_status, "ACTIVE")
        table.add(f"{prefix}   wall time, release to last job done (s)", f"{result.wall_seconds:.2f}")
        per_job = max(1, result.jobs)
        table.add(f"{prefix}   AWS calls per sync (all jobs)", f"{sum(result.aws_calls.values()) / per_job:.1f}")
        for service in ("dynamodb", "kms", "sqs"):
            ops = Counter({k: v for k, v in result.aws_calls.items() if k.startswith(f"{service}:")})
            if ops:
                table.add(f"{prefix}     {service} by operation, per sync", ops_text(ops, per_job))
        if result.log_lines:
            table.add(f"{prefix}   service log lines other than sync/job", dict(result.log_lines))
        for error in result.errors[:3]:
            table.add(f"{prefix}   error", error)
    table.add(
        "SQS after the run (visible / in flight / delayed)",
        " / ".join(str(v) for v in depth_after.values()),
        "0 / 0 / 0",
    )
    results["refresh"] = {
        "data_types": len(data_types),
        "rounds": [
            {
                "name": result.name,
                "jobs": result.jobs,
                "token_refreshes": result.upstream.refreshes,
                "invalid_grant": result.upstream.invalid_grant,
                "reused_refresh_tokens": result.upstream.reused_refresh_tokens,
                "token_errors": result.upstream.token_errors,
                "syncs_succeeded": result.synced,
                "upstream_401": result.upstream.api_unauthorized,
                "upstream_200": result.upstream.api_ok,
                "upstream_429": result.upstream.api_rate_limited,
                "outcomes": dict(result.outcomes),
                "credentials_version_bump": result.credentials_version_bump,
                "refresh_token_rotated": result.refresh_token_rotated,
                "connection_status": result.connection_status,
                "wall_seconds": round(result.wall_seconds, 3),
                "aws_calls": dict(result.aws_calls),
                "errors": result.errors,
            }
            for result in rounds
        ],
        "sqs_after": depth_after,
    }
    return table
