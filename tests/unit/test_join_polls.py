"""A reader that joins someone else's sync: how often it looks, when it stops, and what joiners share."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import SyncInProgressError
from chalicelib.domain.model import DatasetKey, DatasetState, RunStatus, SyncCounts, Trigger
from chalicelib.sync.coordinator import SyncCoordinator, _SharedRead
from chalicelib.sync.engine import OutcomeKind

KEY = DatasetKey("u1", "c1", "recovery")
BUDGET_SECONDS = 10.0


class RunningElsewhere:
    """A store where another caller holds the lease until ``ends_at``, then has finished run R2."""

    def __init__(self, clock: FakeClock, ends_at: float) -> None:
        self.clock = clock
        self.ends_at = ends_at
        self.looks: list[float] = []

    def acquire_lease(self, *args: Any, **kwargs: Any) -> DatasetState:
        raise SyncInProgressError(owner="someone-else")

    def get_state(self, key: DatasetKey, consistent: bool = True) -> DatasetState:
        now = self.clock.now()
        self.looks.append(now)
        if now < self.ends_at:
            return DatasetState(key, "demo", lease_owner="someone-else", lease_expires_at=now + 100)
        counts = SyncCounts(inserted=3, pages=1, upstream_calls=1)
        return DatasetState(
            key,
            "demo",
            last_run_id="R2",
            last_run_status=RunStatus.SUCCEEDED,
            last_successful_at=self.ends_at,
            last_counts=counts,
        )


def _join(store: RunningElsewhere, clock: FakeClock) -> Any:
    settings = Settings(jwt_secret="x" * 32, join_poll_interval_seconds=0.25)
    coordinator = SyncCoordinator(cast(Any, store), cast(Any, None), cast(Any, None), clock, settings)
    connection = cast(Any, SimpleNamespace(provider="demo"))
    seen = DatasetState.empty(KEY, "demo")
    return coordinator.sync_or_join(
        connection, seen, cast(Any, None), trigger=Trigger.READ, deadline=clock.now() + BUDGET_SECONDS
    )


def test_a_joiner_looks_a_few_times_and_reports_the_run_it_waited_for() -> None:
    # Given a sync someone else runs, which ends 3 s after this reader joins
    clock = FakeClock()
    started = clock.now()
    store = RunningElsewhere(clock, ends_at=started + 3.0)

    # When the reader joins it with a 10 s budget
    outcome = _join(store, clock)

    # Then it reports that run, found within a second of its end, after a handful of looks, none at once
    assert outcome.kind is OutcomeKind.SUCCEEDED and outcome.joined and outcome.run_id == "R2"
    assert store.looks[0] > started
    assert len(store.looks) <= 7
    assert store.looks[-1] - store.ends_at <= 1.0


def test_a_joiner_looks_one_last_time_at_its_deadline() -> None:
    # Given a sync that outlasts the reader's budget
    clock = FakeClock()
    started = clock.now()
    store = RunningElsewhere(clock, ends_at=started + 60.0)

    # When the reader joins it
    outcome = _join(store, clock)

    # Then it answers "still running" at its deadline, after looking then, not an interval before
    assert outcome.kind is OutcomeKind.TIMED_OUT
    assert store.looks[-1] == started + BUDGET_SECONDS
    assert all(b - a <= 1.0 + 1e-9 for a, b in zip(store.looks, store.looks[1:], strict=False))


def test_joiners_in_one_process_share_a_recent_read_but_never_one_from_before_they_joined() -> None:
    clock = FakeClock()
    t0 = clock.now()
    shared = _SharedRead()
    reads: list[float] = []

    def fetch() -> DatasetState:
        reads.append(clock.now())
        return DatasetState.empty(KEY, "demo")

    # Given joiner A read the state at t0
    shared.read(fetch, clock, joined=t0 - 1, woke=t0, window=0.25)
    # When B (joined before t0) wakes 0.1 s later, and C (joined after t0) wakes then too
    shared.read(fetch, clock, joined=t0 - 0.5, woke=t0 + 0.1, window=0.25)
    assert reads == [t0]  # B took A's read
    shared.read(fetch, clock, joined=t0 + 0.05, woke=t0 + 0.1, window=0.25)
    # Then C read for itself; and a wake a full window after the last read reads again
    assert len(reads) == 2
    clock.advance(1.0)
    shared.read(fetch, clock, joined=t0 - 0.5, woke=clock.now(), window=0.25)
    assert len(reads) == 3


def test_a_joiner_that_wakes_during_a_slow_read_takes_its_answer() -> None:
    clock = FakeClock()
    t0 = clock.now()
    shared = _SharedRead()

    def slow_fetch() -> DatasetState:
        clock.advance(2.0)  # the read took 2 s (a busy local endpoint)
        return DatasetState.empty(KEY, "demo")

    # Given A's read began at t0 and ended at t0 + 2
    shared.read(slow_fetch, clock, joined=t0 - 1, woke=t0, window=0.25)

    # When B, joined before it began, had woken at t0 + 1 while it was in flight
    def must_not_read() -> DatasetState:
        raise AssertionError("B should have taken A's answer")

    # Then B takes A's answer instead of queueing a read of its own behind it
    assert shared.read(must_not_read, clock, joined=t0 - 0.5, woke=t0 + 1.0, window=0.25) is not None
