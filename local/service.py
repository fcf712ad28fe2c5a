"""The local service's parts, started in order and stopped in reverse: moto, the Lambdas' emulator, the API.

Everything here reads ``os.environ``, so ``local.environment.prepare_environment`` runs first, and nothing
from ``chalicelib`` or ``app`` is imported before the endpoints are set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from local.api_process import kill_process_group, start_chalice, stop_process_group, wait_for_health
from local.aws import VISIBILITY_TIMEOUT_SECONDS, create_kms_key, create_queue, seed_demo_data, start_moto
from local.console import SCHEDULE_FUNCTION, say
from local.emulator import Handler, QueueWorker, ScheduleTicker, schedule_loop
from local.environment import (
    ACCOUNT_ID,
    DEMO_USER,
    HOST,
    OPERATOR_SUBJECT,
    REGION,
    TOKEN_TTL_SECONDS,
    lambda_timeout_seconds,
)

WORKER_FUNCTION = "sync_worker"
WORKER_CONCURRENCY = 10
"""Concurrent worker batches, as concurrent Lambdas: the demo provider's own ``max_concurrent_syncs``
(the default limits), so its limits, not the runner, bound a local fan-out."""
HEALTH_TIMEOUT_SECONDS = 30.0
_JOIN_SECONDS = 15.0
"""How long a sync in progress gets to finish once the runner stops."""


@dataclass(frozen=True)
class Options:
    port: int
    aws_port: int | None
    stage: str
    autoreload: bool
    tick_seconds: float | None
    workers: int = WORKER_CONCURRENCY
    verbose: bool = False


class LocalService:
    """moto, the worker and schedule threads, and ``chalice local``; ``close`` stops whatever started."""

    def __init__(self, options: Options, stop: threading.Event) -> None:
        self.options = options
        self.stop = stop
        self.base_url = f"http://{HOST}:{options.port}"
        self.endpoint = ""
        self.settings: Any = None
        self.worker: QueueWorker | None = None
        self.ticker: ScheduleTicker | None = None
        self.tick_seconds = 0.0
        self.chalice: subprocess.Popen[bytes] | None = None
        self._moto: Any = None
        self._schedule: threading.Thread | None = None

    def start_aws(self) -> None:
        """moto, then the queue, the credentials key, the tables and the demo user; sets the endpoints."""
        self._moto, aws_port = start_moto(self.options.aws_port)
        self.endpoint = f"http://{HOST}:{aws_port}"
        os.environ["SMART_SYNC_DYNAMODB_HOST"] = self.endpoint
        os.environ["SMART_SYNC_SQS_ENDPOINT"] = self.endpoint

        from chalicelib.domain.config import settings_from_env

        os.environ["SMART_SYNC_QUEUE_URL"] = create_queue(self.endpoint, settings_from_env(os.environ).queue_name)
        os.environ["SMART_SYNC_KMS_ENDPOINT"] = self.endpoint
        os.environ["SMART_SYNC_KMS_KEY_ID"] = create_kms_key(self.endpoint, settings_from_env(os.environ).kms_key_id)
        self.settings = settings_from_env(os.environ)
        seed_demo_data()

    def start_worker(self) -> None:
        """The SQS event source mapping for ``app.sync_worker``; prepares (does not start) the schedule."""
        import boto3

        from app import app as chalice_app
        from app import sync_schedule, sync_worker
        from chalicelib.domain.planner import TICK_INTERVAL_SECONDS

        stage, queue_name = self.options.stage, self.settings.queue_name
        self.worker = QueueWorker(
            lambda: boto3.client("sqs", region_name=REGION, endpoint_url=self.endpoint),
            queue_url=os.environ["SMART_SYNC_QUEUE_URL"],
            queue_arn=f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}",
            handler=cast(Handler, sync_worker),
            function_name=f"{chalice_app.app_name}-{stage}-{WORKER_FUNCTION}",
            timeout_seconds=lambda_timeout_seconds(stage, WORKER_FUNCTION),
            stop=self.stop,
            concurrency=self.options.workers,
            redelivery_seconds=VISIBILITY_TIMEOUT_SECONDS,
        )
        self.worker.start()
        schedule_name = f"{chalice_app.app_name}-{stage}-{SCHEDULE_FUNCTION}"
        self.ticker = ScheduleTicker(
            handler=cast(Handler, sync_schedule),
            function_name=schedule_name,
            # The rule `chalice deploy` creates for a scheduled function.
            rule_arn=f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{schedule_name}-event",
            timeout_seconds=lambda_timeout_seconds(stage, SCHEDULE_FUNCTION),
        )
        self.tick_seconds = float(self.options.tick_seconds or TICK_INTERVAL_SECONDS)
        # The API process (started next) and this one report ticks on the interval actually used.
        os.environ["SMART_SYNC_TICK_INTERVAL_SECONDS"] = str(self.tick_seconds)

    def start_schedule(self) -> None:
        assert self.ticker is not None
        self._schedule = threading.Thread(
            target=schedule_loop, args=(self.stop, self.ticker.fire, self.tick_seconds), name="schedule", daemon=True
        )
        self._schedule.start()

    def start_api(self) -> bool:
        """``chalice local``; whether it answered ``/health`` in time (says why not, unless stopping)."""
        self.chalice = start_chalice(self.options.port, self.options.stage, self.options.autoreload)
        if wait_for_health(self.base_url, self.chalice, HEALTH_TIMEOUT_SECONDS, self.stop):
            return True
        if not self.stop.is_set():
            print(f"chalice local did not answer {self.base_url}/health within 30s", file=sys.stderr, flush=True)
        return False

    def tokens(self) -> tuple[str, str]:
        """The demo user's token and an operator token, both valid a week."""
        from chalicelib.api.auth import issue_token

        now = time.time()
        user = issue_token(self.settings, DEMO_USER, now, ttl_seconds=TOKEN_TTL_SECONDS)
        operator = issue_token(self.settings, OPERATOR_SUBJECT, now, operator=True, ttl_seconds=TOKEN_TTL_SECONDS)
        return user, operator

    def api_exited(self) -> bool:
        if self.chalice is None or self.chalice.poll() is None:
            return False
        print(f"chalice local exited with code {self.chalice.returncode}; stopping", file=sys.stderr, flush=True)
        return True

    def kill_api(self) -> None:
        if self.chalice is not None:
            kill_process_group(self.chalice)

    def close(self) -> None:
        self.stop.set()
        if self._moto is None:
            return  # nothing started
        if self.chalice is not None:
            stop_process_group(self.chalice)
        started = time.monotonic()
        if self.worker is not None:
            self.worker.join(_JOIN_SECONDS)
        if self._schedule is not None:
            self._schedule.join(timeout=max(0.0, _JOIN_SECONDS - (time.monotonic() - started)))
        if self._moto is not None:
            self._moto.stop()
        say("stopped: chalice local, worker, schedule, moto")
