"""What a user sees of their syncs: every dataset's sync status, and a connection's run history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from chalicelib.domain.clock import Clock, to_iso
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import NotFoundError
from chalicelib.domain.model import Connection, DatasetKey, DatasetState, DatasetStatus, SyncRun, validate_id
from chalicelib.domain.policy import lease_is_held, queue_claim_is_live
from chalicelib.providers.policies import PolicyResolver
from chalicelib.usecases.query_params import parse_limit


class StatusStore(Protocol):
    """What a status page reads."""

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None: ...

    def list_connections(self, user_id: str) -> list[Connection]: ...

    def list_runs(self, key: DatasetKey, limit: int, now: float) -> list[SyncRun]: ...

    def list_states(self, user_id: str) -> list[DatasetState]: ...


class StatusService:
    def __init__(self, store: StatusStore, policies: PolicyResolver, clock: Clock, settings: Settings) -> None:
        self._store = store
        self._policies = policies
        self._clock = clock
        self._settings = settings

    def sync_status(self, user_id: str) -> dict[str, Any]:
        """Seed 004's sync-status, for every dataset of every connection of the user."""
        validate_id("user_id", user_id)
        now = self._clock.now()
        states = {s.key.dataset_key: s for s in self._store.list_states(user_id)}
        connections = []
        for connection in self._store.list_connections(user_id):
            datasets: dict[str, Any] = {}
            for data_type in self._policies.data_types(connection.provider):
                key = DatasetKey(user_id, connection.connection_id, data_type)
                state = states.get(key.dataset_key) or DatasetState.empty(key, connection.provider)
                datasets[data_type] = self._dataset_status(state, connection, now)
            connections.append(
                {
                    "connection_id": connection.connection_id,
                    "provider": connection.provider,
                    "status": connection.status.value,
                    "status_reason": connection.status_reason,
                    "datasets": datasets,
                }
            )
        return {"user_id": user_id, "connections": connections, "check_timestamp": to_iso(now)}

    def _dataset_status(self, state: DatasetState, connection: Connection, now: float) -> dict[str, Any]:
        policy = self._policies.policy(connection.provider, state.key.data_type)
        last = state.last_successful_at
        age = None if last is None else max(0.0, now - last)
        running = lease_is_held(state.lease_expires_at, now)
        queued = bool(state.queued_job_id) and queue_claim_is_live(
            state.queued_at, now, self._settings.queue_claim_ttl_seconds
        )
        needs_sync = age is None or age >= policy.cooldown_seconds
        next_in = 0 if age is None else max(0, int(policy.cooldown_seconds - age))
        if running:
            status = "running"
        elif queued:
            status = "queued"
        elif state.status is DatasetStatus.RUNNING:
            status = "interrupted"  # the holder died; the next caller resumes from its checkpoint
        elif state.status is DatasetStatus.IDLE and last is None:
            status = "never_synced"
        else:
            status = state.status.value.lower()
        return {
            "last_sync_at": to_iso(last),
            "last_attempted_at": to_iso(state.last_attempted_at),
            "sync_status": status,
            "records_synced": state.record_count,
            "last_run": state.last_counts.as_dict() if state.last_counts else None,
            "time_since_sync_seconds": None if age is None else int(age),
            "cooldown_seconds": policy.cooldown_seconds,
            "max_staleness_seconds": policy.max_staleness_seconds,
            "schedule_every_seconds": policy.schedule_every_seconds,
            "needs_sync": needs_sync,
            "next_sync_in_seconds": next_in,
            "consecutive_failures": state.consecutive_failures,
            "last_error": state.last_error,
        }

    def runs(self, user_id: str, connection_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        validate_id("user_id", user_id)
        validate_id("connection_id", connection_id)
        limit = parse_limit(params.get("limit"), 20, 200)
        connection = self._store.get_connection(user_id, connection_id)
        if connection is None:
            raise NotFoundError(f"connection {connection_id!r} not found")
        data_type = params.get("data_type")
        if data_type:
            validate_id("data_type", data_type)
            self._policies.policy(connection.provider, data_type)
            data_types = [data_type]
        else:
            data_types = self._policies.data_types(connection.provider)
        now = self._clock.now()
        runs = []
        for dt in data_types:
            runs.extend(self._store.list_runs(DatasetKey(user_id, connection_id, dt), limit, now))
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return {"runs": [r.public() for r in runs[:limit]]}
