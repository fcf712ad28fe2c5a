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

``WhoopLikeUpstream`` is also the upstream of benchmark 7 (``bench/whoop_fanout.py``), there with
its sliding request windows switched on.
"""

from __future__ import annotations

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import math  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from types import TracebackType  # noqa: E402
from typing import Any, cast  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import boto3  # noqa: E402

from app import sync_schedule  # noqa: E402
from bench.calls import AWS_CALLS  # noqa: E402
from bench.fanout import (  # noqa: E402
    REGION,
    JsonHandler,
    LogTally,
    fresh_aws,
    queue_depth,
    serve_in_thread,
)
from bench.report import Table, ops_text  # noqa: E402
from chalicelib.api.requests import connection_change  # noqa: E402
from chalicelib.container import Container, build_container, set_container  # noqa: E402
from chalicelib.domain.config import Settings  # noqa: E402
from chalicelib.domain.model import DatasetKey, Trigger  # noqa: E402
from chalicelib.providers import ProviderRegistry, registry_from_config  # noqa: E402
from chalicelib.store.items import create_tables  # noqa: E402
from local.emulator import Handler, ScheduleTicker  # noqa: E402

API_PREFIX = "/developer/v2"
TOKEN_PATH = "/oauth/oauth2/token"
CLIENT_ID_ENV = "BENCH_CLIENT_ID"
CLIENT_SECRET_ENV = "BENCH_CLIENT_SECRET"
BENCH_CLIENT_ID = "bench-oauth-client"
BENCH_CLIENT_SECRET = "bench-oauth-client-secret"
ACCESS_TOKEN_SECONDS = 3600
"""WHOOP's access tokens live an hour (``expires_in: 3600``)."""
REFRESH_SKEW_SECONDS = 300
TOKEN_ENDPOINT_DELAY_SECONDS = 0.2
"""A refresh takes this long at the token endpoint: long enough that every storming sync overlaps it."""

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


# --- a WHOOP-shaped loopback upstream ------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """At most ``requests`` admitted calls in any ``seconds``-long sliding window."""

    requests: int
    seconds: float


@dataclass
class UpstreamCounters:
    api_ok: int = 0
    api_unauthorized: int = 0
    api_rate_limited: int = 0
    refreshes: int = 0
    """Refresh grants given (each rotated the refresh token)."""
    invalid_grant: int = 0
    """Refresh tokens refused: spent before (a double refresh) or never issued."""
    reused_refresh_tokens: int = 0
    """Of those, refresh tokens that had been spent before."""
    token_errors: int = 0
    """Token requests refused for anything else (bad client, bad grant type, malformed)."""

    def minus(self, before: UpstreamCounters) -> UpstreamCounters:
        return UpstreamCounters(
            **{name: getattr(self, name) - getattr(before, name) for name in self.__dataclass_fields__}
        )


@dataclass(frozen=True)
class Arrival:
    at: float
    """The upstream's ``now()`` when the call arrived."""
    status: int
    data_type: str


class WhoopLikeUpstream:
    """127.0.0.1 only; stopped on ``__exit__``. Shaped on WHOOP's v2 API and OAuth2 token endpoint.

    - ``GET /developer/v2/<collection>``: ``{"records": [...], "next_token": null}``; 401 for a
      missing, unknown, expired or revoked bearer token (``accept_any_bearer`` accepts any token
      starting with ``at-``, for many connections); with ``windows``, 429 + ``Retry-After`` when an
      admitted call would exceed one of them, and WHOOP's ``X-RateLimit-*`` headers on every answer.
    - ``POST /oauth/oauth2/token`` (``grant_type=refresh_token``, client id and secret in the form):
      a new access token (``expires_in`` 3600) and a new refresh token every time; the spent refresh
      token is answered ``400 {"error": "invalid_grant"}`` from then on.
    """

    def __init__(
        self,
        now: Callable[[], float],
        *,
        windows: Sequence[Window] = (),
        accept_any_bearer: bool = False,
        records_per_page: int = 2,
        api_delay_seconds: float = 0.0,
        token_delay_seconds: float = TOKEN_ENDPOINT_DELAY_SECONDS,
        access_token_seconds: int = ACCESS_TOKEN_SECONDS,
    ) -> None:
        self.now = now
        self.windows = tuple(windows)
        self.accept_any_bearer = accept_any_bearer
        self.records_per_page = records_per_page
        self.api_delay_seconds = api_delay_seconds
        self.token_delay_seconds = token_delay_seconds
        self.access_token_seconds = access_token_seconds
        self._lock = threading.Lock()
        self._counters = UpstreamCounters()
        self._access_tokens: dict[str, float] = {}
        """Valid access token -> its expiry."""
        self._refresh_token: str | None = None
        self._spent_refresh_tokens: set[str] = set()
        self._issued = 0
        self._admitted: list[float] = []
        """When each admitted API call arrived (for the sliding windows)."""
        self.arrivals: list[Arrival] = []
        upstream = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if not path.startswith(API_PREFIX + "/"):
                    self._answer(404, {"error": "not_found"})
                    return
                status, body, headers = upstream._api(path.removeprefix(API_PREFIX), self.headers.get("Authorization"))
                if upstream.api_delay_seconds:
                    time.sleep(upstream.api_delay_seconds)  # the upstream's own latency, not the service's
                self._answer(status, body, headers)

            def do_POST(self) -> None:
                if urlsplit(self.path).path != TOKEN_PATH:
                    self._answer(404, {"error": "not_found"})
                    return
                length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                if upstream.token_delay_seconds:
                    time.sleep(upstream.token_delay_seconds)
                status, body = upstream._token({name: values[0] for name, values in form.items() if values})
                self._answer(status, body, {"Cache-Control": "no-store"})

        self._server, self._thread = serve_in_thread(Handler, "bench-whoop")

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_base_url(self) -> str:
        return self.origin + API_PREFIX

    @property
    def token_url(self) -> str:
        return self.origin + TOKEN_PATH

    def __enter__(self) -> WhoopLikeUpstream:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- the account's tokens (strict mode) ----------------------------------------------------------

    def seed_tokens(self, access_token: str, expires_at: float, refresh_token: str) -> None:
        """The tokens the user's consent produced (the connection is PUT with the same ones)."""
        with self._lock:
            self._access_tokens = {access_token: expires_at}
            self._refresh_token = refresh_token

    def revoke_access_tokens(self) -> None:
        """The provider drops every access token before its expiry (a password change, a security event)."""
        with self._lock:
            self._access_tokens.clear()

    @property
    def current_refresh_token(self) -> str | None:
        with self._lock:
            return self._refresh_token

    def counters(self) -> UpstreamCounters:
        with self._lock:
            return replace(self._counters)

    # --- the API -------------------------------------------------------------------------------------

    def _api(self, collection: str, authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        data_type = collection.rsplit("/", 1)[-1]
        with self._lock:
            now = self.now()
            if not self._authorized(authorization, now):
                self._counters.api_unauthorized += 1
                self.arrivals.append(Arrival(now, 401, data_type))
                return 401, {"error": "unauthorized"}, {}
            wait = self._window_wait(now)
            if wait is not None:
                self._counters.api_rate_limited += 1
                self.arrivals.append(Arrival(now, 429, data_type))
                headers = {"Retry-After": str(max(1, math.ceil(wait))), **self._rate_headers(now)}
                return 429, {"error": "too_many_requests"}, headers
            self._admitted.append(now)
            self._counters.api_ok += 1
            serial = self._counters.api_ok
            self.arrivals.append(Arrival(now, 200, data_type))
            headers = self._rate_headers(now)
        records = [whoop_record(data_type, serial * 10 + k, now) for k in range(self.records_per_page)]
        return 200, {"records": records, "next_token": None}, headers

    def _authorized(self, authorization: str | None, now: float) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if self.accept_any_bearer:
            return token.startswith("at-")
        expiry = self._access_tokens.get(token)
        return expiry is not None and now < expiry

    def _in_window(self, window: Window, now: float) -> list[float]:
        return [moment for moment in self._admitted if now - moment < window.seconds]

    def _window_wait(self, now: float) -> float | None:
        """Seconds until one more call fits every window; ``None`` when it fits now."""
        waits = []
        for window in self.windows:
            inside = self._in_window(window, now)
            if len(inside) >= window.requests:
                # The call that frees a place is the one ``requests`` back from the newest.
                waits.append(inside[-window.requests] + window.seconds - now)
        return max(waits) if waits else None

    def _rate_headers(self, now: float) -> dict[str, str]:
        """WHOOP's: the limit closest to being hit first, what remains of it, seconds until it is whole again."""
        if not self.windows:
            return {}
        views = []
        for window in self.windows:
            inside = self._in_window(window, now)
            remaining = max(0, window.requests - len(inside))
            reset = (inside[-1] + window.seconds - now) if inside else 0.0
            views.append((remaining, window, reset))
        remaining, closest, reset = min(views, key=lambda view: view[0] / view[1].requests)
        listed = ", ".join(f"{w.requests};window={w.seconds:g}" for w in self.windows)
        return {
            "X-RateLimit-Limit": f"{closest.requests}, {listed}",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }

    # --- the token endpoint --------------------------------------------------------------------------

    def _token(self, form: Mapping[str, str]) -> tuple[int, Any]:
        with self._lock:
            if form.get("client_id") != BENCH_CLIENT_ID or form.get("client_secret") != BENCH_CLIENT_SECRET:
                self._counters.token_errors += 1
                return 401, {"error": "invalid_client"}
            if form.get("grant_type") != "refresh_token":
                self._counters.token_errors += 1
                return 400, {"error": "unsupported_grant_type"}
            presented = form.get("refresh_token", "")
            if not presented or presented != self._refresh_token:
                self._counters.invalid_grant += 1
                if presented in self._spent_refresh_tokens:
                    self._counters.reused_refresh_tokens += 1
                return 400, {"error": "invalid_grant", "error_description": "the refresh token is not valid"}
            self._issued += 1
            self._counters.refreshes += 1
            self._spent_refresh_tokens.add(presented)
            access_token = f"at-{self._issued}-{uuid.uuid4().hex[:8]}"
            self._refresh_token = f"rt-{self._issued}-{uuid.uuid4().hex[:8]}"
            self._access_tokens[access_token] = self.now() + self.access_token_seconds
            return 200, {
                "access_token": access_token,
                "expires_in": self.access_token_seconds,
                "refresh_token": self._refresh_token,
                "scope": form.get("scope", "offline"),
                "token_type": "bearer",
            }


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def whoop_record(data_type: str, serial: int, now: float) -> dict[str, Any]:
    """One record shaped like WHOOP v2's: a recovery is keyed by its ``cycle_id``, the rest by ``id``."""
    stamp = iso(now)
    if data_type == "recovery":
        return {
            "cycle_id": 93_845 + serial,
            "sleep_id": str(uuid.UUID(int=serial)),
            "user_id": 10_129,
            "created_at": stamp,
            "updated_at": stamp,
            "score_state": "SCORED",
            "score": {
                "user_calibrating": False,
                "recovery_score": 40 + serial % 50,
                "resting_heart_rate": 52,
                "hrv_rmssd_milli": 61.4,
                "spo2_percentage": 96.5,
                "skin_temp_celsius": 33.6,
            },
        }
    return {
        "id": str(uuid.UUID(int=serial)),
        "user_id": 10_129,
        "created_at": stamp,
        "updated_at": stamp,
        "start": stamp,
        "end": stamp,
        "timezone_offset": "+00:00",
        "score_state": "SCORED",
        "score": {"strain": 8.2 + serial % 7, "average_heart_rate": 68, "max_heart_rate": 141},
    }


# --- the service side ----------------------------------------------------------------------------------


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


def oauth2_auth(token_url: str) -> dict[str, Any]:
    return {
        "kind": "oauth2",
        "token_url": token_url,
        "client_id_env": CLIENT_ID_ENV,
        "client_secret_env": CLIENT_SECRET_ENV,
        "scopes": ["offline"],
        "refresh_skew_seconds": REFRESH_SKEW_SECONDS,
    }


def whoop_data_type(data_type: str, path: str, policy: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "path": path,
        "records_path": "records",
        "id_field": "cycle_id" if data_type == "recovery" else "id",
        "updated_at_field": "updated_at",
        "policy": dict(policy),
    }


def whoop_provider_config(
    upstream: WhoopLikeUpstream, data_types: Mapping[str, str], limits: Mapping[str, Any], policy: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``rest`` providers-file entry shaped like WHOOP v2, pointed at the loopback upstream."""
    return {
        "type": "rest",
        "base_url": upstream.api_base_url,
        "auth": oauth2_auth(upstream.token_url),
        "pagination": {"kind": "body_cursor", "response_field": "next_token", "request_param": "nextToken"},
        "limits": dict(limits),
        "data_types": {name: whoop_data_type(name, path, policy) for name, path in data_types.items()},
    }


def storm_data_types(count: int = STORM_DATA_TYPES) -> dict[str, str]:
    """WHOOP's four collections, then synthetic ones (``series_05``...) served the same way."""
    names = dict(WHOOP_COLLECTIONS)
    for index in range(len(names) + 1, count + 1):
        names[f"series_{index:02d}"] = f"/series_{index:02d}"
    return dict(list(names.items())[:count])


@contextmanager
def oauth_app_settings() -> Iterator[None]:
    """The app's OAuth2 client id and secret, as a deployment sets them (restored afterwards)."""
    saved = {name: os.environ.get(name) for name in (CLIENT_ID_ENV, CLIENT_SECRET_ENV)}
    os.environ[CLIENT_ID_ENV] = BENCH_CLIENT_ID
    os.environ[CLIENT_SECRET_ENV] = BENCH_CLIENT_SECRET
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def with_kms_key(settings: Settings) -> Settings:
    """A KMS key in the (moto) account to seal the connections' credentials with."""
    kms = boto3.client("kms", region_name=REGION)
    key_id = kms.create_key(Description="smart-sync bench credentials")["KeyMetadata"]["KeyId"]
    return replace(settings, kms_key_id=str(key_id))


def lambda_container(settings: Settings, clock: Any, config: Mapping[str, Any]) -> Container:
    """What one Lambda builds on a cold start: its own registry (so its own HTTP sessions) and services."""
    registry: ProviderRegistry = registry_from_config(config)
    return build_container(settings, clock=clock, registry=registry)  # its KMS client too, made on first use


def close_providers(containers: Sequence[Container]) -> None:
    for container in containers:
        for name in container.registry.names():
            close = getattr(container.registry.get(name), "close", None)
            if callable(close):
                close()


def fire_schedule() -> dict[str, Any]:
    """The app's ``sync_schedule`` handler, invoked as EventBridge's rate rule would (uses the global container)."""
    ticker = ScheduleTicker(
        cast(Handler, sync_schedule),
        "smart-sync-bench-sync_schedule",
        f"arn:aws:events:{REGION}:123456789012:rule/smart-sync-sync_schedule",
        timeout_seconds=60,
    )
    return cast(dict[str, Any], ticker.invoke())


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
