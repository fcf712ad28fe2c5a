"""The plain values behind a truthful run history: the stored tally, a run's totals across attempts, and which
records of a page are new (what ``record_count`` grows by)."""

from __future__ import annotations

from chalicelib.domain.model import DatasetKey, RunStatus, RunTally, SyncCounts, SyncRun, Trigger
from chalicelib.domain.upstream import Page, UpstreamRecord
from chalicelib.store.convert import content_hash
from chalicelib.sync.pages import page_writes, sort_page
from chalicelib.sync.progress import SyncProgress, closing_record

KEY = DatasetKey("u1", "c1", "sleep")


def test_a_tally_survives_its_json() -> None:
    # Given a run's counts so far
    tally = RunTally("run-1", SyncCounts(inserted=3, updated=1, pages=2, upstream_calls=2, skipped=1))
    # When stored and read back
    # Then nothing is lost, and nothing stored reads as no tally
    assert RunTally.from_json(tally.to_json()) == tally
    assert RunTally.from_json(None) is None


def test_a_runs_totals_add_what_earlier_attempts_carried() -> None:
    # Given a redelivered run that carried 2 pages and 2 calls, and did 1 page and 1 call itself
    progress = SyncProgress(KEY, "owner", "demo", None, 0.0, carried=SyncCounts(inserted=20, pages=2, upstream_calls=2))
    progress.counts = SyncCounts(inserted=10, pages=1)
    progress.upstream_calls = 1
    # When its totals and closing record are made
    run = SyncRun(KEY, "run-1", Trigger.BACKGROUND, RunStatus.RUNNING, created_at=0.0, resumed="run-1", attempt=2)
    closed = closing_record(run, RunStatus.SUCCEEDED, progress.totals(), None, progress, ended_at=1.0)
    # Then both attempts count, and the record keeps its attempt and where it resumed
    assert progress.totals() == SyncCounts(inserted=30, pages=3, upstream_calls=3)
    assert (closed.attempt, closed.resumed) == (2, "run-1")
    assert closed.public()["attempt"] == 2


def test_only_records_not_stored_before_are_new() -> None:
    # Given a page with a stored unchanged record, a stored changed one and a new one
    same, changed, new = ({"v": 1}, {"v": 2}, {"v": 3})
    page = Page(records=[UpstreamRecord("same", same), UpstreamRecord("changed", changed), UpstreamRecord("new", new)])
    stored = {"same": content_hash(same), "changed": content_hash({"v": 0})}
    # When the page's writes are decided on an incremental pass
    writes = page_writes(sort_page(page), stored, None)
    # Then only the new one counts as new, and the unchanged one is not written
    assert writes.inserted == frozenset({"new"})
    assert sorted(r.record_id for r, _ in writes.to_write) == ["changed", "new"]
