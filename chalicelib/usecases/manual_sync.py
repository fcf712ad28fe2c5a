"""``POST .../sync``: queue (202) or wait for (200) a forced sync of one or all data types; and the user's
manual-refresh budget, which forced reads, these syncs and the PUTs that start a connection's data over
(``chalicelib/usecases/connections.py``) all take from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import ClaimNotWonError, ConnectionNotActiveError, NotFoundError, QueueUnavailableError
from chalicelib.domain.limits import Bucket
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey, DatasetState, Trigger, validate_id
from chalicelib.domain.policy import lease_is_held
from chalicelib.providers.policies import PolicyResolver
from chalicelib.store.shared import SharedStore
from chalicelib.sync.coordinator import SyncCoordinator
from chalicelib.sync.engine import OutcomeKind
from chalicelib.usecases.reads import enforce_manual_refresh_limit
from chalicelib.usecases.responses import ApiResponse


def manual_refresh_wait(shared: SharedStore, user_id: str, now: float, settings: Settings) -> float | None:
    """Take one of the user's manual refreshes: ``None`` when taken, else the seconds until one is free.

    The same bucket ``enforce_manual_refresh_limit`` (``chalicelib/usecases/reads.py``) answers 429 from:
    ``force_refresh_limit`` per ``force_refresh_window_seconds`` for each user.
    """
    bucket = Bucket.per_window(settings.force_refresh_limit, settings.force_refresh_window_seconds)
    return shared.take_token(f"force#{user_id}", bucket, now)


class ManualSyncStore(Protocol):
    """What a manual sync touches besides the coordinator."""

    @property
    def shared(self) -> SharedStore: ...

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None: ...

    def get_state(self, key: DatasetKey, consistent: bool = True) -> DatasetState | None: ...


@dataclass(frozen=True)
class SyncRequest:
    """What a manual sync asks for, parsed (``chalicelib/api/requests.py`` reads the body)."""

    wait: bool = False
    """Wait for the syncs within the read budget (200) instead of queueing them (202)."""
    data_type: str | None = None
    """One data type, or ``None`` for every data type of the connection's provider."""


class ManualSyncService:
    def __init__(
        self,
        store: ManualSyncStore,
        policies: PolicyResolver,
        coordinator: SyncCoordinator,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._policies = policies
        self._coordinator = coordinator
        self._clock = clock
        self._settings = settings

    def sync(self, user_id: str, connection_id: str, request: SyncRequest) -> ApiResponse:
        validate_id("user_id", user_id)
        validate_id("connection_id", connection_id)
        connection = self._store.get_connection(user_id, connection_id)
        if connection is None:
            raise NotFoundError(f"connection {connection_id!r} not found")
        if request.data_type is None:
            data_types = self._policies.data_types(connection.provider)
        else:
            validate_id("data_type", request.data_type)
            self._policies.policy(connection.provider, request.data_type)
            data_types = [request.data_type]
        if connection.status is not ConnectionStatus.ACTIVE:
            raise ConnectionNotActiveError(f"the connection is {connection.inactive_reason()}; it is not synced")
        now = self._clock.now()
        enforce_manual_refresh_limit(self._store.shared, user_id, now, self._settings)
        if request.wait:
            return self._sync_and_wait(connection, data_types, now + self._settings.read_budget_seconds)
        results = [self._queue_one(connection, dt) for dt in data_types]
        return ApiResponse(202, {"status": "queued", "syncs": results})

    def _queue_one(self, connection: Connection, data_type: str) -> dict[str, Any]:
        key = DatasetKey(connection.user_id, connection.connection_id, data_type)
        policy = self._policies.policy(connection.provider, data_type)
        try:
            run_id = self._coordinator.queue_background(
                key, connection.provider, policy, trigger=Trigger.FORCE, respect_cooldown=False
            )
            return {"data_type": data_type, "status": "queued", "run_id": run_id}
        except QueueUnavailableError as exc:
            return {"data_type": data_type, "status": "queue_unavailable", "run_id": None, "error": exc.message}
        except ClaimNotWonError:
            state = self._store.get_state(key)
            now = self._clock.now()
            if state is not None and lease_is_held(state.lease_expires_at, now):
                return {"data_type": data_type, "status": "already_running", "run_id": state.queued_job_id}
            return {
                "data_type": data_type,
                "status": "already_queued",
                "run_id": state.queued_job_id if state else None,
            }

    def _sync_and_wait(self, connection: Connection, data_types: list[str], deadline: float) -> ApiResponse:
        results: list[dict[str, Any]] = []
        all_done = True
        for data_type in data_types:
            key = DatasetKey(connection.user_id, connection.connection_id, data_type)
            policy = self._policies.policy(connection.provider, data_type)
            if self._clock.now() >= deadline:
                results.append(self._queue_one(connection, data_type))
                all_done = False
                continue
            seen = self._store.get_state(key) or DatasetState.empty(key, connection.provider)
            outcome = self._coordinator.sync_or_join(connection, seen, policy, trigger=Trigger.FORCE, deadline=deadline)
            entry: dict[str, Any] = {
                "data_type": data_type,
                "status": outcome.kind.value,
                "run_id": outcome.run_id,
                "joined_running_sync": outcome.joined,
                **outcome.counts.as_dict(),
            }
            if outcome.error:
                entry["error"] = outcome.error
            if outcome.continuation_run_id:
                entry["continuation_run_id"] = outcome.continuation_run_id
            if outcome.kind in (OutcomeKind.HANDED_OFF, OutcomeKind.TIMED_OUT):
                all_done = False
            results.append(entry)
        failed = any(r["status"] == OutcomeKind.FAILED.value for r in results)
        status = "failed" if failed else ("completed" if all_done else "running")
        return ApiResponse(200 if all_done else 202, {"status": status, "syncs": results})
