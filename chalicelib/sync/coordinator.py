"""Who runs a dataset's sync: win the lease and run it, join the one running, or queue one.

Every decision to sync is a conditional write in the store, so any number of
Lambdas asking at once produce one sync, and at most one background job is queued.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import (
    DatasetNotFoundError,
    JobNotClaimableError,
    QueueUnavailableError,
    SyncInProgressError,
)
from chalicelib.domain.model import (
    Connection,
    DatasetKey,
    DatasetState,
    RunStatus,
    SyncCounts,
    Trigger,
    new_owner,
    new_run_id,
)
from chalicelib.domain.policy import SyncPolicy, lease_is_held
from chalicelib.sync.engine import OutcomeKind, SyncEngine, SyncOutcome
from chalicelib.sync.jobs import Job, JobQueue

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A waiter with less time than this left answers "still running" instead of taking a sync over.
_MIN_TAKEOVER_SECONDS = 1.0
_MAX_POLL_INTERVAL_SECONDS = 1.0
_POLL_JITTER = (0.5, 1.0)
"""Each sleep is this share of the interval, drawn at random, so joiners that came together do not poll together."""


def outcome_from_state(state: DatasetState) -> SyncOutcome:
    """What a joiner reports once the run it waited for has finished."""
    # Decided by the finished run's own status: a later attempt may have changed the dataset's status since.
    if state.last_run_status is RunStatus.SUCCEEDED and state.last_successful_at is not None:
        return SyncOutcome(OutcomeKind.SUCCEEDED, state.last_run_id, state.last_counts or SyncCounts(), joined=True)
    return SyncOutcome(
        OutcomeKind.FAILED, state.last_run_id, SyncCounts(), error=state.last_error or "the sync failed", joined=True
    )


class CoordinatorStore(Protocol):
    """What the coordinator touches: the lease, the queue claim, the dataset state and queued runs."""

    def acquire_lease(
        self,
        key: DatasetKey,
        provider: str,
        owner: str,
        now: float,
        ttl_seconds: float,
        *,
        job_id: str | None = None,
        expected_last_run_id: str | None = None,
        run_id: str | None = None,
    ) -> DatasetState: ...

    def claim_queue(
        self,
        key: DatasetKey,
        provider: str,
        job_id: str,
        now: float,
        *,
        cooldown_seconds: float,
        claim_ttl_seconds: float,
        require_past_cooldown: bool = True,
    ) -> None: ...

    def delete_run(self, key: DatasetKey, run_id: str) -> None: ...

    def ensure_dataset(self, key: DatasetKey, provider: str, next_sync_at: float | None = None) -> None: ...

    def get_state(self, key: DatasetKey, consistent: bool = True) -> DatasetState | None: ...

    def mark_run(
        self, key: DatasetKey, run_id: str, status: RunStatus, *, only_if: RunStatus | tuple[RunStatus, ...]
    ) -> None: ...


@dataclass
class _SharedRead:
    """The latest consistent read of one dataset's state by any of its joiners in this process."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    waiters: int = 0
    started_at: float = -math.inf
    finished_at: float = -math.inf
    state: DatasetState | None = None

    def read(
        self, fetch: Callable[[], DatasetState | None], clock: Clock, *, joined: float, woke: float, window: float
    ) -> DatasetState | None:
        """The state as a joiner that joined at ``joined`` and woke at ``woke`` would have read it.

        The last read serves if it began after the joiner joined, and either began at most ``window``
        before it woke or was still in flight when it woke (one read at a time: who wakes during a read
        waits for it and takes its answer); otherwise this joiner reads.
        """
        with self.lock:
            if self.started_at >= joined and (self.started_at >= woke - window or self.finished_at >= woke):
                return self.state
            started = clock.now()
            state = fetch()
            self.started_at, self.finished_at, self.state = started, clock.now(), state
            return state


class _SharedStateReads:
    """Joiners of one dataset in one process share their polls of its state.

    In Lambda every joiner is a process of its own and this changes nothing. Where one process serves
    many requests (``chalice local``, the tests) a hundred joiners would otherwise each poll the table,
    and against one local DynamoDB endpoint starve the very sync they wait for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[str, _SharedRead] = {}

    @contextmanager
    def joined(self, dataset_id: str) -> Iterator[_SharedRead]:
        with self._lock:
            shared = self._reads.setdefault(dataset_id, _SharedRead())
            shared.waiters += 1
        try:
            yield shared
        finally:
            with self._lock:
                shared.waiters -= 1
                if shared.waiters == 0:
                    self._reads.pop(dataset_id, None)


class SyncCoordinator:
    def __init__(
        self, store: CoordinatorStore, engine: SyncEngine, queue: JobQueue, clock: Clock, settings: Settings
    ) -> None:
        self._store = store
        self._engine = engine
        self._queue = queue
        self._clock = clock
        self._settings = settings
        self._state_reads = _SharedStateReads()

    def sync_or_join(
        self,
        connection: Connection,
        seen: DatasetState,
        policy: SyncPolicy,
        *,
        trigger: Trigger,
        deadline: float,
    ) -> SyncOutcome:
        """Block (within ``deadline``) until a sync of this dataset has finished.

        ``seen`` is the state this caller decided on. If a run finished since then,
        its result is the answer; if one is running, wait for it; if the lease is
        free, take it and run the sync here.
        """
        key = seen.key
        expected_last_run = seen.last_run_id
        attempts_without_progress = 0
        while True:
            now = self._clock.now()
            owner = new_owner(trigger.value)
            run_id = new_run_id(now)
            try:
                acquire = functools.partial(
                    self._store.acquire_lease,
                    key,
                    connection.provider,
                    owner,
                    now,
                    self._settings.lease_ttl_seconds,
                    expected_last_run_id=expected_last_run,
                    run_id=run_id,
                )
                state = self._ensuring_dataset(key, connection.provider, policy, acquire)
            except SyncInProgressError:
                current = self._wait_for_running_sync(key, expected_last_run, deadline)
                if current is None:
                    return SyncOutcome(OutcomeKind.TIMED_OUT, None, SyncCounts())
                if current.last_run_id != expected_last_run and not lease_is_held(
                    current.lease_expires_at, self._clock.now()
                ):
                    return outcome_from_state(current)
                if deadline - self._clock.now() < _MIN_TAKEOVER_SECONDS:
                    return SyncOutcome(OutcomeKind.TIMED_OUT, None, SyncCounts())
                attempts_without_progress += 1
                if attempts_without_progress > 1:
                    self._clock.sleep(self._settings.join_poll_interval_seconds)  # lost a takeover race: back off
                continue  # the holder vanished (lease expired) or handed off: take over with the time left
            if seen.queued_job_id:
                self._store.mark_run(key, seen.queued_job_id, RunStatus.SUPERSEDED, only_if=RunStatus.QUEUED)
            return self._engine.execute(
                connection,
                state,
                policy,
                owner=owner,
                run_id=run_id,
                trigger=trigger,
                deadline=deadline,
            )

    def _wait_for_running_sync(
        self, key: DatasetKey, expected_last_run: str | None, deadline: float
    ) -> DatasetState | None:
        """Poll the state until the running sync ends or the lease frees; ``None`` if the deadline passes.

        The first look comes after a sleep (the failed acquire just saw the lease held). Then the interval
        doubles up to 1 s, each sleep jittered so that joiners who came together spread out, and the last
        look is at the deadline itself. Joiners of one dataset in one process share their reads.
        """
        base = self._settings.join_poll_interval_seconds
        cap = max(_MAX_POLL_INTERVAL_SECONDS, base)
        interval = base
        with self._state_reads.joined(key.dataset_id) as shared:
            started = self._clock.now()
            while True:
                pause, left = interval * random.uniform(*_POLL_JITTER), deadline - self._clock.now()
                last_look = pause >= left
                self._clock.sleep(max(0.0, min(pause, left)))
                woke = self._clock.now()
                current = shared.read(
                    lambda: self._store.get_state(key, consistent=True),
                    self._clock,
                    joined=started,
                    woke=woke,
                    window=0.0 if last_look else base,  # the look at the deadline is always a fresh one
                )
                now = self._clock.now()
                if current is None:
                    raise DatasetNotFoundError(f"dataset {key.describe()} was deleted")
                if not lease_is_held(current.lease_expires_at, now):
                    return current
                if last_look or now >= deadline:
                    return None
                interval = min(interval * 2, cap)

    def queue_background(
        self,
        key: DatasetKey,
        provider: str,
        policy: SyncPolicy,
        *,
        trigger: Trigger,
        respect_cooldown: bool = True,
    ) -> str:
        """Queue one background sync if this caller wins the claim; return its run id.

        Raises ``ClaimNotWonError`` when a sync is already running or queued, and
        ``QueueUnavailableError`` when SQS did not take the message (the claim is undone).
        """
        now = self._clock.now()
        job = Job(key=key, run_id=new_run_id(now), trigger=trigger, created_at=now)
        self._ensuring_dataset(
            key,
            provider,
            policy,
            lambda: self._store.claim_queue(
                key,
                provider,
                job.run_id,
                now,
                cooldown_seconds=policy.cooldown_seconds,
                claim_ttl_seconds=self._settings.queue_claim_ttl_seconds,
                require_past_cooldown=respect_cooldown,
            ),
        )
        if not self._engine.queue_claimed_job(job):
            raise QueueUnavailableError("the background sync could not be queued")
        return job.run_id

    def _ensuring_dataset(self, key: DatasetKey, provider: str, policy: SyncPolicy, attempt: Callable[[], T]) -> T:
        """Run a lease or claim write; on a dataset's first use, create its state (404 if the connection is gone)."""
        try:
            return attempt()
        except DatasetNotFoundError:
            scheduled = policy.schedule_every_seconds is not None
            self._store.ensure_dataset(key, provider, self._clock.now() if scheduled else None)
            return attempt()

    def run_job(self, job: Job, connection: Connection, policy: SyncPolicy, deadline: float | None) -> SyncOutcome:
        """Worker side. Raises ``SyncInProgressError`` when the job must be retried later."""
        now = self._clock.now()
        owner = new_owner("worker")
        try:
            state = self._store.acquire_lease(
                job.key,
                connection.provider,
                owner,
                now,
                self._settings.lease_ttl_seconds,
                job_id=job.run_id,
                run_id=job.run_id,
            )
        except JobNotClaimableError:
            self._store.mark_run(job.key, job.run_id, RunStatus.SUPERSEDED, only_if=RunStatus.QUEUED)
            raise
        except DatasetNotFoundError:
            self._store.delete_run(job.key, job.run_id)
            raise
        return self._engine.execute(
            connection,
            state,
            policy,
            owner=owner,
            run_id=job.run_id,
            trigger=job.trigger,
            deadline=deadline,
            created_at=job.created_at,
        )
