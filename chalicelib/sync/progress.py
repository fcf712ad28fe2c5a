"""One sync as it runs: what it holds (lease, slot, probe), what it has done, and the run record it ends with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from chalicelib.domain.model import (
    Checkpoint,
    DatasetKey,
    DatasetState,
    RunStatus,
    RunTally,
    SyncCounts,
    SyncRun,
    Trigger,
)


@dataclass
class SyncProgress:
    """One sync as it runs: what it holds (lease, slot, probe) and what it has done so far."""

    key: DatasetKey
    owner: str
    provider: str
    deadline: float | None
    renew_at: float
    """When the lease (and slot) are next renewed."""
    slot_held: bool = False
    probe: bool = False
    """This sync is the half-open breaker's probe and has not reported yet."""
    counts: SyncCounts = field(default_factory=SyncCounts)
    upstream_calls: int = 0
    provider_answered: bool = False
    """Any answer at all (a page, a 4xx, a 401): the breaker measures reachability, not usefulness."""
    connection_scope: str = ""
    """``user#connection``: the limit scope of providers whose limits are per API key."""
    weight: int = 1
    """What one call costs against the provider's rate windows."""
    feedback: Mapping[str, str] | None = None
    """The last answer's headers, not yet applied to the shared limits (rides on the next take)."""
    refreshed: bool = False
    """The credentials were refreshed after a 401 in this sync (only once: a second 401 is real)."""
    skipped_samples: list[str] = field(default_factory=list)
    token_in_hand: bool = False
    """The start's write already took the first call's weight."""
    safe_until: float = 0.0
    """Until then the lease is surely ours (half its TTL left): writing records needs no fence write first."""
    run_recorded: bool = False
    """The run's RUNNING record is written (at its first checkpoint: a one-page sync writes its run once)."""
    complete_listing: bool = True
    """The provider lists every record on a full pass (so unseen records may be swept)."""
    carried: SyncCounts = field(default_factory=SyncCounts)
    """What earlier attempts of this same run did (a redelivered job goes on counting from its tally)."""
    incarnation: str | None = None
    """The dataset's state item this sync took the lease on (a purge and a new one make another)."""
    run_id: str = ""
    job_run: bool = False
    """The run is the dataset's queued job (a worker's delivery of it), so its attempts count."""

    def totals(self) -> SyncCounts:
        """The run's counts across its attempts, upstream calls included."""
        return self.carried.plus(replace(self.counts, upstream_calls=self.upstream_calls))

    def tally(self) -> RunTally:
        """The run's counts so far, as stored with its pages and checkpoints."""
        return RunTally(self.run_id, self.totals())


def starting_run(
    state: DatasetState,
    checkpoint: Checkpoint,
    progress: SyncProgress,
    *,
    trigger: Trigger,
    created_at: float | None,
    started: float,
) -> SyncRun:
    """The run's RUNNING record, and what earlier attempts of the same run carry into ``progress``.

    It resumed if it starts from a saved checkpoint (a redelivered job from its own: it names itself);
    a redelivered job goes on counting from the tally its last attempt stored with its pages.
    """
    if state.run_tally is not None and state.run_tally.run_id == progress.run_id:
        progress.carried = state.run_tally.counts
    resumed = state.checkpoint is not None and checkpoint == state.checkpoint
    return SyncRun(
        key=state.key,
        run_id=progress.run_id,
        trigger=trigger,
        status=RunStatus.RUNNING,
        created_at=created_at if created_at is not None else started,
        started_at=started,
        resumed=checkpoint.generation if resumed else None,
        attempt=max(state.job_attempts, 1) if progress.job_run else 1,
    )


def closing_record(
    run: SyncRun,
    status: RunStatus,
    counts: SyncCounts,
    error: str | None,
    progress: SyncProgress,
    *,
    ended_at: float,
) -> SyncRun:
    """The run's final record, naming the records it skipped."""
    return SyncRun(
        key=run.key,
        run_id=run.run_id,
        trigger=run.trigger,
        status=status,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=ended_at,
        counts=counts,
        error=error,
        resumed=run.resumed,
        skipped_records=tuple(progress.skipped_samples),
        attempt=run.attempt,
    )
