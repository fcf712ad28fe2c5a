"""The worker's use case: run one queued job, or say why it was dropped or deferred."""

from __future__ import annotations

import logging
from typing import Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.errors import DatasetNotFoundError, JobNotClaimableError, NotFoundError, ValidationError
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey, RunStatus, Trigger
from chalicelib.providers.policies import PolicyResolver
from chalicelib.sync.coordinator import SyncCoordinator
from chalicelib.sync.engine import OutcomeKind, SyncOutcome
from chalicelib.sync.jobs import Job, JobQueue
from chalicelib.usecases.fanout import FanOut

logger = logging.getLogger(__name__)


class WorkerStore(Protocol):
    """What a worker touches before it hands a job to the coordinator."""

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None: ...

    def mark_run(self, key: DatasetKey, run_id: str, status: RunStatus, *, only_if: RunStatus) -> None: ...

    def release_queue_claim(self, key: DatasetKey, job_id: str, *, unschedule: bool = False) -> None: ...


class WorkerService:
    """Runs queued jobs. Returns normally when the message is done (synced, superseded, deferred
    or undeliverable); raises ``SyncInProgressError`` when SQS should redeliver it later."""

    def __init__(
        self,
        store: WorkerStore,
        policies: PolicyResolver,
        coordinator: SyncCoordinator,
        fanout: FanOut,
        queue: JobQueue,
        clock: Clock,
    ) -> None:
        self._store = store
        self._policies = policies
        self._coordinator = coordinator
        self._fanout = fanout
        self._queue = queue
        self._clock = clock

    def handle(self, body: str, deadline: float | None) -> str:
        try:
            job = Job.from_json(body)
        except ValidationError as exc:
            logger.error("dropping malformed job: %s", exc.message)
            return "malformed"
        connection = self._store.get_connection(job.key.user_id, job.key.connection_id)
        if connection is None:
            logger.info("dropping job for a deleted connection: %s", job.key.describe())
            self._store.release_queue_claim(job.key, job.run_id)
            return "connection_gone"
        if connection.status is not ConnectionStatus.ACTIVE:
            # Off the schedule until a PUT revives it (a sync that ended after the pause may have put it back).
            self._store.release_queue_claim(job.key, job.run_id, unschedule=True)
            return "connection_inactive"
        if job.trigger is Trigger.SCHEDULE and self._fanout.state().paused:
            # The dataset stays due: the first tick after resume sends it again.
            self._store.release_queue_claim(job.key, job.run_id)
            return "scheduler_paused"
        try:
            policy = self._policies.policy(connection.provider, job.key.data_type)
        except NotFoundError:
            self._store.release_queue_claim(job.key, job.run_id, unschedule=True)
            return "unknown_data_type"
        try:
            outcome = self._coordinator.run_job(job, connection, policy, deadline)
        except JobNotClaimableError:
            return "superseded"
        except DatasetNotFoundError:
            return "dataset_gone"
        if outcome.kind is OutcomeKind.DEFERRED:
            return self._defer(job, outcome)
        return outcome.kind.value

    def _defer(self, job: Job, outcome: SyncOutcome) -> str:
        if outcome.breaker_open:
            # Deferred, not failed: the claim was dropped with the lease, the dataset stays due,
            # and the schedule sends it again once the provider's breaker lets calls through.
            self._store.mark_run(job.key, job.run_id, RunStatus.DEFERRED, only_if=RunStatus.QUEUED)
            return "deferred_provider_down"
        # Same job, same claim, later: SQS holds it back for the wait the provider's limits asked for.
        self._queue.send(job, outcome.retry_after_seconds or 1.0)
        return "deferred_provider_busy"
