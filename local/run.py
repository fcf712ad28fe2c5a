"""One-command local run: ``python -m local.run`` (``make run``). No AWS account, no network.

What it starts, all bound to 127.0.0.1:

- an in-process moto server (DynamoDB + SQS + KMS) on ``--aws-port`` (5005, or any free port if 5005 is taken),
  with the tables, the ``smart-sync-jobs`` queue, the credentials key (``alias/smart-sync``) and a demo user;
- ``chalice local --stage dev`` on ``--port`` (8000) as a child process, pointed at that moto server;
- a worker thread that long-polls the queue and calls ``app.sync_worker`` with a Lambda-shaped SQS
  event, exactly the handler the cloud invokes, and acknowledges what it did not report as failed;
- ``schedule_loop``: what the EventBridge rule does. A thread that calls ``app.sync_schedule`` with a
  scheduled-event-shaped dict, exactly the handler the cloud invokes, 2 s after the banner and then every
  ``TICK_INTERVAL_SECONDS`` (``--tick-seconds`` to watch it faster); one ``tick:`` line per tick.

Ctrl-C or SIGTERM stops everything. ``--smoke`` starts everything, checks it end to end, stops and exits
0 (or 1 on failure): the quick way to prove ``make run`` works on a machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, cast

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_AWS_PORT = 5005
DEFAULT_STAGE = "dev"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
DEMO_USER = "demo-user"
OPERATOR_SUBJECT = "operator"
TOKEN_TTL_SECONDS = 7 * 86400
# Used only when neither the shell nor the chalice stage sets SMART_SYNC_JWT_SECRET.
LOCAL_JWT_SECRET = "smart-sync-local-run-secret-not-for-production"
# Short demo tiers so fresh -> stale -> expired can be watched in two minutes (--provider-policies turns it off).
DEMO_COOLDOWN_SECONDS = 30
DEMO_MAX_STALENESS_SECONDS = 120
# Redelivery delay for jobs the worker reports as failed (the cloud queue uses the Lambda timeout or more).
VISIBILITY_TIMEOUT_SECONDS = 10
HEALTH_TIMEOUT_SECONDS = 30.0
# The first tick comes soon after the banner, so a new user sees the demo datasets refresh on their own.
FIRST_TICK_DELAY_SECONDS = 2.0
SCHEDULE_FUNCTION = "sync_schedule"

logger = logging.getLogger("local.run")


# --- environment ----------------------------------------------------------------------------------------------


def _stage_environment(stage: str) -> dict[str, str]:
    """The environment variables ``chalice local --stage`` applies over ours (config values win)."""
    from chalice.cli.factory import CLIFactory

    config = CLIFactory(str(PROJECT_DIR)).create_config_obj(chalice_stage_name=stage)
    return {str(k): str(v) for k, v in config.environment_variables.items()}


def _lambda_timeout_seconds(stage: str, function_name: str) -> int:
    from chalice.cli.factory import CLIFactory

    config = CLIFactory(str(PROJECT_DIR)).create_config_obj(chalice_stage_name=stage)
    timeout = config.scope(stage, function_name).lambda_timeout
    return int(timeout) if timeout else 300


_ENDPOINT_VARS = (
    "SMART_SYNC_DYNAMODB_HOST",
    "SMART_SYNC_SQS_ENDPOINT",
    "SMART_SYNC_QUEUE_URL",
    "SMART_SYNC_KMS_ENDPOINT",
)
LOCAL_KMS_ALIAS = "alias/smart-sync"
"""Used when neither the shell nor the chalice stage names the credentials key."""


def prepare_environment(stage: str, *, demo_policies: bool) -> None:
    """Dummy AWS credentials, then exactly what the chalice process will see (minus the endpoints)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", *_ENDPOINT_VARS):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    os.environ.setdefault("SMART_SYNC_JWT_SECRET", LOCAL_JWT_SECRET)
    if demo_policies:
        overrides = {
            "demo": {"cooldown_seconds": DEMO_COOLDOWN_SECONDS, "max_staleness_seconds": DEMO_MAX_STALENESS_SECONDS}
        }
        os.environ.setdefault("SMART_SYNC_POLICY_OVERRIDES", json.dumps(overrides))
    stage_env = _stage_environment(stage)
    clashing = sorted(set(stage_env) & set(_ENDPOINT_VARS))
    if clashing:
        raise SystemExit(
            f"stage {stage!r} sets {', '.join(clashing)} in .chalice/config.json; the local run owns those"
        )
    # chalice local applies the stage's variables over the inherited environment; do the same here so
    # the worker thread in this process and the API process agree (JWT secret, table names, budgets).
    os.environ.update(stage_env)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


# --- AWS (moto) ---------------------------------------------------------------------------------------------


def start_moto(port: int | None) -> tuple[Any, int]:
    """Start moto in this process (so the DynamoDB atomicity patch applies). ``None``: 5005, else any free port."""
    from moto.server import ThreadedMotoServer

    from local.moto_atomic import make_moto_dynamodb_atomic

    make_moto_dynamodb_atomic()
    if port is None:
        chosen = DEFAULT_AWS_PORT if port_is_free(DEFAULT_AWS_PORT) else 0
    elif port_is_free(port):
        chosen = port
    else:
        # ThreadedMotoServer.start() would wait forever for a server that failed to bind.
        raise SystemExit(f"--aws-port {port} is already in use")
    server = ThreadedMotoServer(ip_address=HOST, port=chosen, verbose=False)
    server.start()
    return server, int(server.get_host_and_port()[1])


def create_queue(endpoint: str, queue_name: str) -> str:
    import boto3

    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
    attributes = {"VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS)}
    return str(sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"])


def create_kms_key(endpoint: str, configured: str) -> str:
    """The credentials key on the moto server, under the alias the settings name; returns that alias.

    ``chalice local`` applies the stage's variables over ours, so the key must answer to the
    configured name: only an alias can be given to a key made here.
    """
    import boto3

    alias = configured or LOCAL_KMS_ALIAS
    if not alias.startswith("alias/"):
        raise SystemExit(f"SMART_SYNC_KMS_KEY_ID is {alias!r}; the local run needs an alias (alias/...) it can create")
    kms = boto3.client("kms", region_name=REGION, endpoint_url=endpoint)
    key_id = kms.create_key(Description="smart-sync local credentials key")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return alias


def seed_demo_data() -> None:
    """Tables plus ``demo-user`` with a healthy ``demo`` connection and a ``demo-flaky`` one."""
    from chalicelib.container import build_container
    from chalicelib.domain.config import settings_from_env
    from chalicelib.store.items import create_tables

    container = build_container(settings_from_env(os.environ))
    create_tables()
    demo_connections: dict[str, dict[str, Any]] = {
        "demo": {"latency_seconds": 1.5},
        # One page per sync, so each sync is a coin flip (the demo provider re-draws every minute).
        "demo-flaky": {"latency_seconds": 0.5, "failure_rate": 0.5, "page_size": 30},
    }
    for connection_id, connection_settings in demo_connections.items():
        # Through the same service as PUT /users/{u}/connections/{c}, so the demo data is created like real data.
        container.connections.put(
            DEMO_USER,
            connection_id,
            {"provider": "demo", "credentials": {"token": "demo"}, "settings": connection_settings},
        )


# --- worker: SQS -> the Lambda handler ------------------------------------------------------------------------


@dataclass
class LocalLambdaContext:
    """The parts of the Lambda context object that handlers read."""

    function_name: str
    aws_request_id: str
    deadline: float
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def _describe_job(body: str) -> str:
    try:
        job = json.loads(body)
        return f"{job['user_id']}/{job['connection_id']}/{job['data_type']} ({job['trigger']}, run {job['run_id']})"
    except (ValueError, KeyError, TypeError):
        return "unreadable job body"


def sqs_lambda_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS poller would build from ``ReceiveMessage`` results (also used by the bench)."""
    now_ms = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now_ms,
                    "SenderId": ACCOUNT_ID,
                    "ApproximateFirstReceiveTimestamp": now_ms,
                    **m.get("Attributes", {}),
                },
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


class QueueWorker:
    """What the SQS event source mapping does for the worker Lambda, one batch at a time."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Callable[[dict[str, Any], Any], Any],
        function_name: str,
        timeout_seconds: int,
        stop: threading.Event,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._function_name = function_name
        self._timeout_seconds = timeout_seconds
        self._stop = stop
        self._lock = threading.Lock()
        self.acknowledged: list[str] = []
        """Bodies of the jobs handled and deleted (the smoke test waits on this)."""

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:
                if self._stop.is_set():
                    return
                logger.warning("worker: receive failed (%s); retrying", exc)
                self._stop.wait(1.0)
                continue
            messages = got.get("Messages", [])
            if messages:
                try:
                    self.deliver(messages)
                except Exception:  # never let one bad batch end the worker; unacknowledged jobs come back
                    logger.exception("worker: delivering a batch failed")

    def event_for(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return sqs_lambda_event(messages, self._queue_arn)

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        event = self.event_for(messages)
        context = LocalLambdaContext(
            function_name=self._function_name,
            aws_request_id=str(uuid.uuid4()),
            deadline=time.time() + self._timeout_seconds,
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self._function_name}",
            log_group_name=f"/aws/lambda/{self._function_name}",
        )
        started = time.monotonic()
        try:
            result = self._handler(event, context)
        except Exception:
            # A raising handler fails the whole batch in Lambda too: every message comes back.
            logger.exception(
                "worker: sync_worker raised; all %d job(s) return in %ds", len(messages), VISIBILITY_TIMEOUT_SECONDS
            )
            return
        elapsed = time.monotonic() - started
        failures = result.get("batchItemFailures", []) if isinstance(result, dict) else []
        failed_ids = {str(f.get("itemIdentifier")) for f in failures if isinstance(f, dict)}
        for message in messages:
            what = _describe_job(message["Body"])
            receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "1")
            if message["MessageId"] in failed_ids:
                logger.info(
                    "worker: retry  %s: reported failed (receive %s); back in %ds",
                    what,
                    receives,
                    VISIBILITY_TIMEOUT_SECONDS,
                )
                continue
            try:
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
            except Exception as exc:
                logger.warning("worker: could not delete %s (%s); SQS will redeliver it", what, exc)
                continue
            with self._lock:
                self.acknowledged.append(message["Body"])
            logger.info("worker: done   %s (batch of %d, %.1fs)", what, len(messages), elapsed)


# --- schedule: EventBridge -> the Lambda handler ---------------------------------------------------------------


def scheduled_event(rule_arn: str, now: float) -> dict[str, Any]:
    """The event EventBridge sends a rate rule's target (what chalice turns into a ``CloudWatchEvent``)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def describe_tick(summary: Any) -> str:
    """One line for a tick's summary: ``tick: 9 due, 7 queued; skipped already_queued 2``."""
    if not isinstance(summary, dict):
        return f"tick: sync_schedule returned {summary!r}"
    skipped = summary.get("skipped") or {}
    if isinstance(skipped, dict) and "service_paused" in skipped:
        return "tick: scheduler paused, nothing queued (POST /sync/resume resumes it)"
    line = f"tick: {summary.get('due', '?')} due, {summary.get('queued', '?')} queued"
    if isinstance(skipped, dict) and skipped:
        line += "; skipped " + ", ".join(f"{reason} {count}" for reason, count in skipped.items())
    return line


class ScheduleTicker:
    """What the EventBridge rule does for the schedule Lambda: one scheduled event per tick."""

    def __init__(
        self,
        handler: Callable[[dict[str, Any], Any], Any],
        function_name: str,
        rule_arn: str,
        timeout_seconds: int,
    ) -> None:
        self._handler = handler
        self._function_name = function_name
        self._rule_arn = rule_arn
        self._timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self.summaries: list[Any] = []
        """What each tick that returned returned (the smoke test waits on this)."""

    def fire(self) -> Any:
        """One tick through the handler; logs its line. A raising handler is logged, not raised."""
        now = time.time()
        context = LocalLambdaContext(
            function_name=self._function_name,
            aws_request_id=str(uuid.uuid4()),
            deadline=now + self._timeout_seconds,
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self._function_name}",
            log_group_name=f"/aws/lambda/{self._function_name}",
        )
        try:
            summary = self._handler(scheduled_event(self._rule_arn, now), context)
        except Exception:
            logger.exception("tick: %s raised; the next tick tries again", SCHEDULE_FUNCTION)
            return None
        with self._lock:
            self.summaries.append(summary)
        logger.info(describe_tick(summary))
        return summary


def schedule_loop(
    stop: threading.Event,
    tick: Callable[[], object],
    interval_seconds: float,
    first_delay_seconds: float = FIRST_TICK_DELAY_SECONDS,
) -> None:
    """Call ``tick`` after ``first_delay_seconds``, then every ``interval_seconds`` until ``stop`` is set.

    A fixed rate, like EventBridge: a slow tick does not push the next ones back, and ticks missed while
    one ran long (or the laptop slept) are dropped, not fired in a burst.
    """
    next_at = time.monotonic() + min(first_delay_seconds, interval_seconds)
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        try:
            tick()
        except Exception:  # never let one tick end the schedule
            logger.exception("tick: failed; the next tick tries again")
        next_at += interval_seconds
        now = time.monotonic()
        if next_at <= now:
            next_at += (math.floor((now - next_at) / interval_seconds) + 1) * interval_seconds


# --- chalice local ----------------------------------------------------------------------------------------------


def chalice_command(port: int, stage: str, autoreload: bool) -> list[str]:
    script = Path(sys.executable).parent / ("chalice.exe" if os.name == "nt" else "chalice")
    found = str(script) if script.exists() else shutil.which("chalice")
    if found is None:
        raise SystemExit("the chalice command is not installed in this virtualenv (make run installs it)")
    command = [found, "--project-dir", str(PROJECT_DIR), "local", "--host", HOST, "--port", str(port)]
    command += ["--stage", stage, "--autoreload" if autoreload else "--no-autoreload"]
    return command


_OUTPUT_LOCK = threading.Lock()
# INFO lines from botocore (every client) and pynamodb (import) that say nothing about the local run.
_NOISE = (
    "Found credentials in environment variables.",
    "Override settings for pynamo not available",
    "Using Default settings value",
)


def say(text: str) -> None:
    """One write per message, so the API's relayed output never splits a line (or the banner)."""
    with _OUTPUT_LOCK:
        try:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # stdout closed (`make run | head`): keep draining the API's output
            pass


def _relay(stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if line and not line.startswith(_NOISE):
            say(f"api:    {line}")


def start_chalice(port: int, stage: str, autoreload: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CHALICE_WORKER", None)
    # Its own process group: Ctrl-C reaches only this runner, which then stops the whole group
    # (with --autoreload, chalice local is a watcher process plus a server process).
    process = subprocess.Popen(
        chalice_command(port, stage, autoreload),
        cwd=PROJECT_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=os.name == "posix",
    )
    assert process.stdout is not None
    threading.Thread(target=_relay, args=(process.stdout,), name="api-output", daemon=True).start()
    return process


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return

    def send(sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
        process.wait(timeout)


def wait_for_health(base_url: str, process: subprocess.Popen[bytes], timeout: float, stop: threading.Event) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None or stop.is_set():
            return False
        try:
            if requests.get(f"{base_url}/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False


# --- banner and smoke test ------------------------------------------------------------------------------------


def demo_tiers(settings: Any) -> str:
    """The recovery tiers as the app will apply them (providers file + SMART_SYNC_POLICY_OVERRIDES)."""
    from chalicelib.providers import load_registry
    from chalicelib.providers.policies import PolicyResolver

    policy = PolicyResolver(load_registry(settings), settings).policy("demo", "recovery")
    return f"fresh < {policy.cooldown_seconds}s, stale < {policy.max_staleness_seconds}s, expired after"


def banner(
    base_url: str, aws_endpoint: str, user_token: str, operator_token: str, tiers: str, tick_seconds: float
) -> str:
    auth = '-H "Authorization: Bearer {}"'
    data = f"{base_url}/users/{DEMO_USER}/connections/demo/data/recovery"
    return "\n".join(
        [
            f"Demo user token ({DEMO_USER}, valid 7 days):",
            user_token,
            "Operator token (valid 7 days):",
            operator_token,
            "",
            f"Read ({tiers}):",
            f"  curl -s {auth.format(user_token)} {data}",
            "Sync status:",
            f"  curl -s {auth.format(user_token)} {base_url}/users/{DEMO_USER}/sync-status",
            "Force refresh:",
            f"  curl -s {auth.format(user_token)} '{data}?force_refresh=true'",
            "Schedule status (operator):",
            f"  curl -s {auth.format(operator_token)} {base_url}/sync/status",
            "Fan out now (operator):",
            f"  curl -s -X POST {auth.format(operator_token)} {base_url}/sync/run",
            "",
            f"API {base_url} (chalice local) | AWS {aws_endpoint} (moto) | worker: in this process",
            f"Schedule: {SCHEDULE_FUNCTION} every {tick_seconds:g}s in this process, first tick in "
            f"{min(FIRST_TICK_DELAY_SECONDS, tick_seconds):g}s",
            "Ctrl-C stops everything.",
        ]
    )


def _get_json(url: str, token: str, timeout: float = 30) -> tuple[int, Any]:
    import requests

    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text.strip()


def _synced_at(sync_status: Any, connection_id: str) -> dict[str, str | None]:
    """``{data_type: last_sync_at}`` of one connection's scheduled data types in a sync-status answer."""
    if not isinstance(sync_status, dict):
        return {}
    for connection in sync_status.get("connections", []):
        if connection.get("connection_id") == connection_id:
            return {
                data_type: dataset.get("last_sync_at")
                for data_type, dataset in connection.get("datasets", {}).items()
                if dataset.get("schedule_every_seconds") is not None
            }
    return {}


def smoke_check(
    base_url: str,
    user_token: str,
    operator_token: str,
    worker: QueueWorker,
    ticker: ScheduleTicker,
    start_schedule: Callable[[], None],
) -> bool:
    """An inline read, a queued job through SQS and the worker, the operator status, then one scheduled tick.

    The schedule starts only after the first two checks, so they never race a tick; its first tick then
    must get a scheduled dataset of the demo user that nothing else touched synced by the worker.
    """
    import requests

    headers = {"Authorization": f"Bearer {user_token}"}
    read = requests.get(f"{base_url}/users/{DEMO_USER}/connections/demo/data/recovery", headers=headers, timeout=60)
    try:
        body: Any = read.json()
    except ValueError:
        body = {}
    metadata = body.get("metadata", {}) if isinstance(body, dict) else {}
    say(f"smoke: GET recovery -> {read.status_code}: {metadata.get('message') or body}")
    read_ok = read.status_code == 200 and bool(metadata.get("message"))

    queued = requests.post(
        f"{base_url}/users/{DEMO_USER}/connections/demo/sync",
        headers=headers,
        json={"data_type": "sleep"},
        timeout=30,
    )
    say(f"smoke: POST sync sleep -> {queued.status_code}: {queued.text.strip()}")
    worker_ok = False
    if queued.status_code == 202:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not worker_ok:
            worker_ok = any('"data_type":"sleep"' in b for b in list(worker.acknowledged))
            time.sleep(0.2)
    say(f"smoke: worker handled the queued job: {'yes' if worker_ok else 'NO'}")

    code, status = _get_json(f"{base_url}/sync/status", operator_token)
    running = status.get("status") if isinstance(status, dict) else None
    say(f"smoke: GET /sync/status (operator) -> {code}: status {running or status}")
    status_ok = code == 200 and running == "running"
    code, denied = _get_json(f"{base_url}/sync/status", user_token)
    say(f"smoke: GET /sync/status (user) -> {code}: {denied}")
    status_ok = status_ok and code == 403

    return read_ok and worker_ok and status_ok and _smoke_tick(base_url, user_token, ticker, start_schedule)


def _smoke_tick(base_url: str, user_token: str, ticker: ScheduleTicker, start_schedule: Callable[[], None]) -> bool:
    status_url = f"{base_url}/users/{DEMO_USER}/sync-status"
    code, before = _get_json(status_url, user_token)
    waiting = sorted(data_type for data_type, at in _synced_at(before, "demo").items() if at is None)
    if code != 200 or not waiting:
        say(f"smoke: no never-synced scheduled dataset of {DEMO_USER}/demo to watch ({code}: {before})")
        return False
    start_schedule()
    deadline = time.monotonic() + FIRST_TICK_DELAY_SECONDS + 15
    while time.monotonic() < deadline and not ticker.summaries:
        time.sleep(0.2)
    summary = ticker.summaries[0] if ticker.summaries else None
    say(f"smoke: schedule fired: {describe_tick(summary) if summary is not None else 'NO'}")
    if not isinstance(summary, dict) or not summary.get("queued"):
        return False
    synced: dict[str, str | None] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, after = _get_json(status_url, user_token)
        synced = {data_type: at for data_type, at in _synced_at(after, "demo").items() if data_type in waiting and at}
        if synced:
            break
        time.sleep(1.0)
    shown = ", ".join(f"demo/{data_type} at {at}" for data_type, at in sorted(synced.items())) or "NO"
    say(f"smoke: scheduled sync of {DEMO_USER} ({', '.join(waiting)} never synced before): {shown}")
    return bool(synced)


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_API_PORT, help="API port (default 8000)")
    parser.add_argument("--aws-port", type=int, default=None, help="moto port (default 5005, else any free port)")
    parser.add_argument("--stage", default=DEFAULT_STAGE, help="chalice stage (default dev)")
    parser.add_argument("--smoke", action="store_true", help="start, check end to end, stop; exit 0 on success")
    parser.add_argument("--autoreload", action="store_true", help="restart the API on file changes (not the worker)")
    parser.add_argument(
        "--provider-policies",
        action="store_true",
        help="keep the providers' own cooldown/staleness instead of the short demo tiers",
    )
    parser.add_argument(
        "--tick-seconds",
        type=_positive_seconds,
        default=None,
        help="fire the schedule every N seconds (default: TICK_INTERVAL_SECONDS, the deployed rate)",
    )
    parser.add_argument("--verbose", action="store_true", help="also show the app's own INFO logs from the worker")
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds above 0")
    return value


class _SayHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            # In this process everything but the runner's own lines is the worker Lambda's code logging.
            prefix = "" if record.name == logger.name else "worker: "
            say(prefix + self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(verbose: bool) -> None:
    """The runner's lines at INFO; the app's own INFO lines (one per sync step) only with --verbose.

    Call again after importing ``app``, which sets its loggers to INFO for Lambda.
    """
    if not logging.getLogger().handlers:
        handler = _SayHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logger.setLevel(logging.INFO)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    for name in ("chalicelib", "smart-sync"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    if not port_is_free(args.port):
        print(f"port {args.port} is already in use (another `make run`?); pick another with --port", file=sys.stderr)
        return 1
    demo_policies = not args.provider_policies
    # Everything below reads os.environ; nothing from chalicelib or app is imported before it is final.
    prepare_environment(args.stage, demo_policies=demo_policies)

    stop = threading.Event()
    stopping = {"count": 0}
    chalice: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping["count"] += 1
        stop.set()
        if stopping["count"] > 1:  # second Ctrl-C: do not wait for anything
            if chalice is not None and chalice.poll() is None and os.name == "posix":
                with contextlib.suppress(OSError):
                    os.killpg(chalice.pid, signal.SIGKILL)
            os._exit(1)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    moto, aws_port = start_moto(args.aws_port)
    exit_code = 0
    threads: list[threading.Thread] = []
    try:
        endpoint = f"http://{HOST}:{aws_port}"
        os.environ["SMART_SYNC_DYNAMODB_HOST"] = endpoint
        os.environ["SMART_SYNC_SQS_ENDPOINT"] = endpoint

        from chalicelib.api.auth import issue_token
        from chalicelib.domain.config import settings_from_env

        queue_name = settings_from_env(os.environ).queue_name
        queue_url = create_queue(endpoint, queue_name)
        os.environ["SMART_SYNC_QUEUE_URL"] = queue_url
        os.environ["SMART_SYNC_KMS_ENDPOINT"] = endpoint
        os.environ["SMART_SYNC_KMS_KEY_ID"] = create_kms_key(endpoint, settings_from_env(os.environ).kms_key_id)
        settings = settings_from_env(os.environ)
        seed_demo_data()

        import boto3

        from app import app as chalice_app
        from app import sync_schedule, sync_worker
        from chalicelib.domain.planner import TICK_INTERVAL_SECONDS

        configure_logging(args.verbose)

        function_name = "sync_worker"
        worker = QueueWorker(
            sqs=boto3.client("sqs", region_name=REGION, endpoint_url=endpoint),
            queue_url=queue_url,
            queue_arn=f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}",
            handler=cast(Callable[[dict[str, Any], Any], Any], sync_worker),
            function_name=f"{chalice_app.app_name}-{args.stage}-{function_name}",
            timeout_seconds=_lambda_timeout_seconds(args.stage, function_name),
            stop=stop,
        )
        threads = [threading.Thread(target=worker.run, name="sqs-worker", daemon=True)]
        threads[0].start()

        schedule_name = f"{chalice_app.app_name}-{args.stage}-{SCHEDULE_FUNCTION}"
        ticker = ScheduleTicker(
            handler=cast(Callable[[dict[str, Any], Any], Any], sync_schedule),
            function_name=schedule_name,
            # The rule `chalice deploy` creates for a scheduled function.
            rule_arn=f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{schedule_name}-event",
            timeout_seconds=_lambda_timeout_seconds(args.stage, SCHEDULE_FUNCTION),
        )
        tick_seconds = float(args.tick_seconds or TICK_INTERVAL_SECONDS)
        # The API process (started next) and this one report ticks on the interval actually used.
        os.environ["SMART_SYNC_TICK_INTERVAL_SECONDS"] = str(tick_seconds)

        def start_schedule() -> None:
            thread = threading.Thread(
                target=schedule_loop, args=(stop, ticker.fire, tick_seconds), name="schedule", daemon=True
            )
            threads.append(thread)
            thread.start()

        chalice = start_chalice(args.port, args.stage, args.autoreload)
        base_url = f"http://{HOST}:{args.port}"
        if not wait_for_health(base_url, chalice, HEALTH_TIMEOUT_SECONDS, stop):
            if not stop.is_set():
                print(f"chalice local did not answer {base_url}/health within 30s", file=sys.stderr, flush=True)
                exit_code = 1
            return exit_code

        now = time.time()
        user_token = issue_token(settings, DEMO_USER, now, ttl_seconds=TOKEN_TTL_SECONDS)
        operator_token = issue_token(settings, OPERATOR_SUBJECT, now, operator=True, ttl_seconds=TOKEN_TTL_SECONDS)
        tiers = demo_tiers(settings)
        say("\n" + banner(base_url, endpoint, user_token, operator_token, tiers, tick_seconds) + "\n")

        if args.smoke:
            try:
                passed = smoke_check(base_url, user_token, operator_token, worker, ticker, start_schedule)
                exit_code = 0 if passed else 1
            except OSError as exc:  # requests' errors are OSErrors: the API did not answer
                say(f"smoke: request failed: {exc}")
                exit_code = 1
            say(f"smoke: {'OK' if exit_code == 0 else 'FAILED'}")
            return exit_code

        start_schedule()  # after the banner, so the first tick's line follows it
        while not stop.wait(0.5):
            if chalice.poll() is not None:
                print(f"chalice local exited with code {chalice.returncode}; stopping", file=sys.stderr, flush=True)
                exit_code = 1
                break
        return exit_code
    finally:
        stop.set()
        if chalice is not None:
            stop_process_group(chalice)
        for thread in threads:
            thread.join(timeout=15)
        moto.stop()
        say("stopped: chalice local, worker, schedule, moto")


if __name__ == "__main__":
    raise SystemExit(main())
