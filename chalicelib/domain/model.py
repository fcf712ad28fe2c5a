"""Domain values shared by the store, the engine and the API. Plain data, no I/O."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from chalicelib.domain.clock import to_iso
from chalicelib.domain.errors import ValidationError

_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def validate_id(kind: str, value: str) -> str:
    """Ids become parts of DynamoDB keys joined by ``#``: keep them to a safe alphabet."""
    # fullmatch, not match: ``$`` lets a trailing newline through.
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise ValidationError(f"{kind} must be 1-128 characters of letters, digits and . _ : @ -")
    return value


class ConnectionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    NEEDS_REVIEW = "NEEDS_REVIEW"


class DatasetStatus(StrEnum):
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    NEEDS_REVIEW = "NEEDS_REVIEW"


class Trigger(StrEnum):
    READ = "read"
    BACKGROUND = "background"
    FORCE = "force"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    """A provider told us (signed webhook) that a dataset changed upstream."""


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    HANDED_OFF = "HANDED_OFF"
    """The read budget ran out; the rest of the sync continues as a queued job."""
    SUPERSEDED = "SUPERSEDED"
    """A queued job that another caller's sync made unnecessary."""
    LEASE_LOST = "LEASE_LOST"
    DEFERRED = "DEFERRED"
    """Not started (or paused mid-way) because the provider's limits or breaker said wait."""
    ABANDONED = "ABANDONED"
    """Its process died holding the lease: the next sync that took the expired lease recorded this."""


@dataclass(frozen=True)
class DatasetKey:
    user_id: str
    connection_id: str
    data_type: str

    @property
    def dataset_id(self) -> str:
        return f"{self.user_id}#{self.connection_id}#{self.data_type}"

    @property
    def dataset_key(self) -> str:
        """Sort key inside one user's datasets."""
        return f"{self.connection_id}#{self.data_type}"

    def describe(self) -> str:
        return f"{self.user_id}/{self.connection_id}/{self.data_type}"


@dataclass(frozen=True)
class Connection:
    user_id: str
    connection_id: str
    provider: str
    settings: Mapping[str, Any]
    status: ConnectionStatus
    status_reason: str | None
    created_at: float
    updated_at: float
    """When the user last PUT this connection (a token refresh does not move it)."""
    sealed_credentials: str = field(default="", repr=False)
    """The credentials as stored: a KMS envelope (``chalicelib.store.vault``), ``""`` when there are none."""
    credentials_version: int = 0
    """Bumped by every credentials write (a PUT carrying credentials, a token refresh)."""
    provider_user_id: str | None = None
    """The account's id at the provider, which its inbound webhooks name."""
    auth_failures: int = 0
    """Provider 401/403 answers in a row (reset by a success or new credentials)."""

    @property
    def has_credentials(self) -> bool:
        return bool(self.sealed_credentials)

    def public(self) -> dict[str, Any]:
        """What the API may show: never the credentials, sealed or not."""
        return {
            "user_id": self.user_id,
            "connection_id": self.connection_id,
            "provider": self.provider,
            "provider_user_id": self.provider_user_id,
            "settings": dict(self.settings),
            "status": self.status.value,
            "status_reason": self.status_reason,
            "has_credentials": self.has_credentials,
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
        }

    def inactive_reason(self) -> str:
        """Why it is not synced, in words: "paused", or "needs review: <reason>"."""
        why = self.status.value.lower().replace("_", " ")
        return f"{why}: {self.status_reason}" if self.status_reason else why

    def __repr__(self) -> str:  # credentials must never reach a log line
        return f"Connection({self.user_id}/{self.connection_id}, provider={self.provider}, status={self.status})"


@dataclass(frozen=True)
class Checkpoint:
    """Where an unfinished sync stopped. Saved only after the page before it was stored."""

    generation: str
    """Id of the run that started this pass; records seen in the pass carry it (deletion sweep)."""
    page_token: str | None
    since: str | None
    pages_done: int = 0
    max_updated_at: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | None) -> Checkpoint | None:
        if not raw:
            return None
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class SyncCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    pages: int = 0
    upstream_calls: int = 0
    skipped: int = 0
    """Upstream records left out (malformed, or too large for the store); the rest were kept."""

    def plus(self, other: SyncCounts) -> SyncCounts:
        return SyncCounts(
            inserted=self.inserted + other.inserted,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
            deleted=self.deleted + other.deleted,
            pages=self.pages + other.pages,
            upstream_calls=self.upstream_calls + other.upstream_calls,
            skipped=self.skipped + other.skipped,
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RunTally:
    """A running sync's counts so far, stored with each page it writes: a redelivered attempt of the
    same run goes on counting from them, so a run's counts add up across its attempts."""

    run_id: str
    counts: SyncCounts

    def to_json(self) -> str:
        return json.dumps({"run_id": self.run_id, **self.counts.as_dict()}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | None) -> RunTally | None:
        if not raw:
            return None
        values = json.loads(raw)
        return cls(run_id=str(values.pop("run_id")), counts=SyncCounts(**values))


@dataclass(frozen=True)
class DatasetState:
    key: DatasetKey
    provider: str
    status: DatasetStatus = DatasetStatus.IDLE
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    queued_job_id: str | None = None
    queued_at: float | None = None
    last_attempted_at: float | None = None
    last_successful_at: float | None = None
    last_full_sync_at: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    next_sync_at: float | None = None
    record_count: int = 0
    last_run_id: str | None = None
    last_run_status: RunStatus | None = None
    last_counts: SyncCounts | None = None
    checkpoint: Checkpoint | None = None
    watermark: str | None = None
    prior_run_id: str | None = None
    """The run that held the lease before this holder took it and never gave it back (its process died),
    as the lease write found it; ``None`` when the lease was let go properly."""
    job_attempts: int = 0
    """How many times a worker took the lease for the queued job (1 on its first delivery)."""
    run_tally: RunTally | None = None
    """The running sync's counts, stored with its record writes and checkpoints."""
    incarnation: str | None = None
    """Made new with the state item: a dataset purged and made again is another incarnation."""

    @classmethod
    def empty(cls, key: DatasetKey, provider: str) -> DatasetState:
        return cls(key=key, provider=provider)


@dataclass(frozen=True)
class StoredRecord:
    record_id: str
    data: Mapping[str, Any]
    upstream_updated_at: str | None
    synced_at: float

    def public(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "updated_at": self.upstream_updated_at,
            "synced_at": to_iso(self.synced_at),
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class SyncRun:
    key: DatasetKey
    run_id: str
    trigger: Trigger
    status: RunStatus
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    counts: SyncCounts = field(default_factory=SyncCounts)
    error: str | None = None
    resumed: str | None = None
    """The run whose pass this run went on with, from a saved checkpoint (its own id for a redelivered job)."""
    skipped_records: tuple[str, ...] = ()
    """The first few records left out, as ``"<reason>: <id>"`` (ids cut short)."""
    attempt: int = 1
    """Which delivery of the run this is: a job redelivered after its process died is attempt 2, and so on."""

    def public(self) -> dict[str, Any]:
        duration = None
        if self.started_at is not None and self.ended_at is not None:
            duration = round(self.ended_at - self.started_at, 3)
        return {
            "run_id": self.run_id,
            "connection_id": self.key.connection_id,
            "data_type": self.key.data_type,
            "trigger": self.trigger.value,
            "status": self.status.value.lower(),
            "created_at": to_iso(self.created_at),
            "started_at": to_iso(self.started_at),
            "ended_at": to_iso(self.ended_at),
            "duration_seconds": duration,
            **self.counts.as_dict(),
            "error": self.error,
            "resumed_from_checkpoint": self.resumed,
            "attempt": self.attempt,
            "skipped_records": list(self.skipped_records),
        }


def new_run_id(now: float) -> str:
    """Sortable by creation time: a newest-first listing is a reverse range scan."""
    return f"{int(now * 1000):013d}-{uuid.uuid4().hex[:10]}"


def new_owner(role: str) -> str:
    return f"{role}:{uuid.uuid4().hex[:16]}"
