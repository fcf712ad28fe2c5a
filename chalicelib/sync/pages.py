"""Storing one page of a sync: which records are new, changed or unchanged (by content hash), which are
skipped, which tombstones delete something; and the checkpoint that page moves the sync to.

The decisions are plain functions; ``store_page`` only reads the stored hashes and writes the result.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.model import Checkpoint, DatasetKey, DatasetState, RunTally, SyncCounts
from chalicelib.domain.records import describe_skipped, record_problem
from chalicelib.domain.upstream import Page, ProviderError, SkippedRecord, UpstreamRecord
from chalicelib.store.convert import content_hash
from chalicelib.sync.progress import SyncProgress

logger = logging.getLogger(__name__)

_SKIPPED_SAMPLES = 10
"""How many skipped records a run names (the count covers them all)."""
_RESTART_AFTER_FAILURES = 3


class PageStore(Protocol):
    """What storing a page touches: the dataset's records."""

    def get_record_hashes(self, key: DatasetKey, record_ids: Iterable[str]) -> dict[str, str]: ...

    def write_records(
        self,
        key: DatasetKey,
        records: Sequence[tuple[UpstreamRecord, str]],
        *,
        generation: str | None,
        now: float,
        owner: str,
        inserted: Collection[str] = (),
        deleted: Sequence[str] = (),
        tally: RunTally | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class SortedPage:
    """A page's records by what they ask of the store (the last one wins when an id repeats)."""

    latest: dict[str, UpstreamRecord]
    skipped: list[SkippedRecord]


@dataclass(frozen=True)
class PageWrites:
    """What storing a page writes, given the hashes already stored."""

    to_write: list[tuple[UpstreamRecord, str]]
    deleted: list[str]
    counts: SyncCounts
    inserted: frozenset[str] = frozenset()
    """Ids in ``to_write`` that were not stored before (what ``record_count`` grows by)."""


def sort_page(page: Page) -> SortedPage:
    """Records the provider could not parse, and records the store cannot hold (an id over 512 bytes,
    more than 350 KB of JSON), are skipped; the rest are kept, one per id."""
    skipped = list(page.skipped)
    latest = {}
    for record in page.records:
        problem = record_problem(record)
        if problem is None:
            latest[record.record_id] = record
        else:
            skipped.append(problem)
    return SortedPage(latest, skipped)


def page_writes(sorted_page: SortedPage, existing: Mapping[str, str], generation: str | None) -> PageWrites:
    """Compare with the stored content hashes. On a full pass (``generation`` set) unchanged records are
    written too, so the final sweep sees them; on an incremental pass they are not written at all."""
    latest = sorted_page.latest
    live = [r for r in latest.values() if not r.deleted]
    tombstones = [r.record_id for r in latest.values() if r.deleted]
    inserted = updated = unchanged = 0
    to_write = []
    new_ids = set()
    for record in live:
        digest = content_hash(record.data)
        previous = existing.get(record.record_id)
        if previous is None:
            inserted += 1
            new_ids.add(record.record_id)
        elif previous != digest:
            updated += 1
        else:
            unchanged += 1
            if generation is None:
                continue  # incremental pass: nothing to mark, nothing to write
        to_write.append((record, digest))
    deleted = [rid for rid in tombstones if rid in existing]
    counts = SyncCounts(
        inserted=inserted,
        updated=updated,
        unchanged=unchanged,
        deleted=len(deleted),
        pages=1,
        skipped=len(sorted_page.skipped),
    )
    return PageWrites(to_write, deleted, counts, frozenset(new_ids))


def store_page(
    store: PageStore,
    clock: Clock,
    key: DatasetKey,
    page: Page,
    generation: str | None,
    progress: SyncProgress,
) -> SyncCounts:
    """Upsert one page as the lease holder (a holder that lost the lease stores nothing).
    ``generation`` is set on full passes so the final sweep can find deletions.

    Skipped records are counted, and the first few named in the progress (the run shows them).
    The run's counts with this page are stored with it.
    """
    skipped_samples = progress.skipped_samples
    sorted_page = sort_page(page)
    skipped = sorted_page.skipped
    for item in skipped:
        if len(skipped_samples) < _SKIPPED_SAMPLES:
            skipped_samples.append(describe_skipped(item))
    if skipped:
        logger.warning("sync of %s skipped %d record(s): %s", key.describe(), len(skipped), skipped[0].reason)
    existing = store.get_record_hashes(key, sorted_page.latest)
    writes = page_writes(sorted_page, existing, generation)
    if writes.to_write or writes.deleted:
        store.write_records(
            key,
            writes.to_write,
            generation=generation,
            now=clock.now(),
            owner=progress.owner,
            inserted=writes.inserted,
            deleted=writes.deleted,
            tally=RunTally(progress.run_id, progress.totals().plus(writes.counts)),
        )
    return writes.counts


def first_checkpoint(
    state: DatasetState, run_id: str, now: float, *, incremental: bool, full_resync_seconds: float
) -> Checkpoint:
    """Where this sync starts: the saved checkpoint, or a new pass (incremental from the watermark when it can)."""
    checkpoint = state.checkpoint
    if checkpoint is not None and state.consecutive_failures >= _RESTART_AFTER_FAILURES:
        # A checkpoint that keeps failing may hold a page token the provider no longer honours.
        checkpoint = None
    if checkpoint is not None:
        return checkpoint
    # A provider that ignores ``since`` lists everything every time: that is a full pass.
    since = _since(state, now, full_resync_seconds) if incremental else None
    return Checkpoint(generation=run_id, page_token=None, since=since)


def _since(state: DatasetState, now: float, full_resync_seconds: float) -> str | None:
    """Incremental from the watermark, except for a periodic full pass that finds upstream deletions."""
    if state.watermark is None or state.last_full_sync_at is None:
        return None
    if now - state.last_full_sync_at >= full_resync_seconds:
        return None
    return state.watermark


def advance(checkpoint: Checkpoint, page: Page) -> Checkpoint:
    """The checkpoint after ``page``: its next token and the newest change seen so far."""
    newest = checkpoint.max_updated_at
    for stamp in [*(record.updated_at for record in page.records), page.covered_until]:
        if stamp and (newest is None or stamp > newest):
            newest = stamp
    if page.next_page_token is not None and page.next_page_token == checkpoint.page_token:
        raise ProviderError("provider returned the same page token twice", retryable=False)
    return Checkpoint(
        generation=checkpoint.generation,
        page_token=page.next_page_token,
        since=checkpoint.since,
        pages_done=checkpoint.pages_done + 1,
        max_updated_at=newest,
    )
