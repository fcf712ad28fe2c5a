"""Background jobs: the message format and the queue port (SQS in the cloud and locally)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.domain.config import Settings
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.model import DatasetKey, Trigger, validate_id

JOB_VERSION = 1
MAX_DELAY_SECONDS = 900  # SQS's limit for DelaySeconds
SQS_BATCH = 10  # SQS's limit for SendMessageBatch


def delay_for_sqs(seconds: float) -> int:
    """Whole seconds SQS accepts (0..900), rounded up so a job never arrives before its time."""
    return max(0, min(MAX_DELAY_SECONDS, math.ceil(seconds)))


@dataclass(frozen=True)
class Job:
    """An intent to sync one dataset. The worker still has to win the dataset's lease.

    ``run_id`` doubles as the claim token written to the dataset state, which is
    what makes a redelivered message harmless: once the run finished the claim is
    gone and the message is acknowledged without a second sync.
    """

    key: DatasetKey
    run_id: str
    trigger: Trigger
    created_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": JOB_VERSION,
                "user_id": self.key.user_id,
                "connection_id": self.key.connection_id,
                "data_type": self.key.data_type,
                "run_id": self.run_id,
                "trigger": self.trigger.value,
                "created_at": self.created_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, body: str) -> Job:
        try:
            raw: dict[str, Any] = json.loads(body)
            if raw.get("v") != JOB_VERSION:
                raise ValidationError(f"unsupported job version {raw.get('v')!r}")
            key = DatasetKey(
                validate_id("user_id", raw["user_id"]),
                validate_id("connection_id", raw["connection_id"]),
                validate_id("data_type", raw["data_type"]),
            )
            return cls(
                key=key,
                run_id=validate_id("run_id", raw["run_id"]),
                trigger=Trigger(raw["trigger"]),
                created_at=float(raw["created_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"malformed job message: {exc}") from exc


class JobQueue(Protocol):
    def send(self, job: Job, delay_seconds: float = 0) -> None: ...

    def send_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Send in batches of 10; returns the jobs SQS did not take."""
        ...


class SqsJobQueue:
    """Sends jobs to the SQS queue the worker Lambda consumes. The client is created on first use."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self._settings = settings
        self._client = client
        self._queue_url = settings.queue_url
        self._creating = threading.Lock()

    def _sqs(self) -> Any:
        if self._client is None:
            with self._creating:  # boto3's default session is not safe to build clients from in parallel
                if self._client is None:
                    import boto3

                    self._client = boto3.client(
                        "sqs", region_name=self._settings.region, endpoint_url=self._settings.sqs_endpoint
                    )
        return self._client

    def queue_url(self) -> str:
        if self._queue_url is None:
            client = self._sqs()
            with self._creating:
                if self._queue_url is None:
                    self._queue_url = client.get_queue_url(QueueName=self._settings.queue_name)["QueueUrl"]
        return self._queue_url

    def send(self, job: Job, delay_seconds: float = 0) -> None:
        self._sqs().send_message(
            QueueUrl=self.queue_url(), MessageBody=job.to_json(), DelaySeconds=delay_for_sqs(delay_seconds)
        )

    def send_many(self, jobs: Sequence[Job]) -> list[Job]:
        failed: list[Job] = []
        for start in range(0, len(jobs), SQS_BATCH):
            batch = jobs[start : start + SQS_BATCH]
            entries = [{"Id": str(index), "MessageBody": job.to_json()} for index, job in enumerate(batch)]
            try:
                answer = self._sqs().send_message_batch(QueueUrl=self.queue_url(), Entries=entries)
            except Exception:
                failed.extend(batch)
                continue
            failed.extend(batch[int(entry["Id"])] for entry in answer.get("Failed", []))
        return failed
