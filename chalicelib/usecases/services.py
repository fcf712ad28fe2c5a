"""Use cases behind the routes and the worker, other than the read path (``reads.py``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from chalicelib.domain.clock import Clock, to_iso
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import (
    ClaimNotWonError,
    ConnectionNotActiveError,
    DatasetNotFoundError,
    JobNotClaimableError,
    NotFoundError,
    QueueUnavailableError,
    StoreBusyError,
    ValidationError,
)
from chalicelib.domain.model import (
    Connection,
    ConnectionStatus,
    DatasetKey,
    DatasetState,
    DatasetStatus,
    RunStatus,
    Trigger,
    validate_id,
)
from chalicelib.domain.policy import lease_is_held, queue_claim_is_live
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.policies import PolicyResolver
from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.vault import CredentialsChangedError, CredentialsUnreadableError, CredentialVault
from chalicelib.sync.coordinator import SyncCoordinator
from chalicelib.sync.engine import OutcomeKind, SyncOutcome
from chalicelib.sync.jobs import Job, JobQueue
from chalicelib.usecases.fanout import FanOut
from chalicelib.usecases.reads import ApiResponse, enforce_manual_refresh_limit, parse_limit

logger = logging.getLogger(__name__)

_MAX_CONNECTION_FIELD_BYTES = 16_384
_PUT_ATTEMPTS = 3


def _provider_user_id(value: Any) -> str | None:
    """The account's id at the provider (webhooks name it): safe characters, or a whole number; null clears it."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValidationError("provider_user_id must be a string or a whole number")
    return validate_id("provider_user_id", value)


def _object(body: Any, name: str) -> Mapping[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise ValidationError(f"{name} must be a JSON object")
    return body


class ConnectionService:
    def __init__(
        self,
        store: DynamoStore,
        registry: ProviderRegistry,
        policies: PolicyResolver,
        clock: Clock,
        vault: CredentialVault,
    ) -> None:
        self._store = store
        self._registry = registry
        self._policies = policies
        self._clock = clock
        self._vault = vault

    def put(self, user_id: str, connection_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Create or update a connection. Credentials are sealed (KMS envelope) before they are stored.

        Omitted credentials, settings or ``provider_user_id`` keep the stored ones while the
        provider stays the same, so a connection can be paused without its secrets; credentials
        sent again unchanged are kept as stored too (no new version, no reschedule). The write
        is fenced on the credentials version read: if a token refresh (or another PUT) stored
        credentials meanwhile, the PUT reads again and decides again.
        """
        validate_id("user_id", user_id)
        validate_id("connection_id", connection_id)
        payload = _object(body, "request body")
        provider_name = payload.get("provider")
        if not isinstance(provider_name, str) or not provider_name:
            raise ValidationError("provider is required")
        provider = self._registry.get(provider_name)
        status_raw = payload.get("status", ConnectionStatus.ACTIVE.value)
        if status_raw not in (ConnectionStatus.ACTIVE.value, ConnectionStatus.PAUSED.value):
            raise ValidationError("status may be ACTIVE or PAUSED")
        reset_data = payload.get("reset_data", False)
        if not isinstance(reset_data, bool):
            raise ValidationError("reset_data must be true or false")
        sent_credentials = _object(payload["credentials"], "credentials") if "credentials" in payload else None
        sent_settings = _object(payload["settings"], "settings") if "settings" in payload else None
        sent_provider_user_id = (
            _provider_user_id(payload["provider_user_id"]) if "provider_user_id" in payload else None
        )
        for name, value in (("credentials", sent_credentials), ("settings", sent_settings)):
            if value is not None and len(json.dumps(value, default=str)) > _MAX_CONNECTION_FIELD_BYTES:
                raise ValidationError(f"{name} must be at most {_MAX_CONNECTION_FIELD_BYTES} bytes of JSON")

        sealed_sent: str | None = None
        for _ in range(_PUT_ATTEMPTS):
            existing = self._store.get_connection(user_id, connection_id, consistent=True)
            same_provider = existing is not None and existing.provider == provider_name
            kept = existing if existing is not None and same_provider else None
            settings = sent_settings if sent_settings is not None else (kept.settings if kept else {})
            stored: dict[str, Any] | None = None
            if kept is not None:
                try:
                    stored = self._vault.open(kept.sealed_credentials, user_id, connection_id)
                except CredentialsUnreadableError:
                    if sent_credentials is None:
                        raise  # nothing usable to keep: the user must send credentials
            if sent_credentials is not None and dict(sent_credentials) != stored:
                provider.validate_connection(sent_credentials, settings)
                if sealed_sent is None:
                    sealed_sent = self._vault.seal(sent_credentials, user_id, connection_id)
                sealed, credentials_written = sealed_sent, True
            elif kept is not None and stored is not None:
                # The stored credentials stay (sent again unchanged, or omitted): not rewritten, so a token
                # refresh storing newer ones meanwhile is not undone; checked against the new settings.
                provider.validate_connection(stored, settings)
                sealed, credentials_written = kept.sealed_credentials, False
            else:
                provider.validate_connection({}, settings)
                sealed, credentials_written = "", True
            if "provider_user_id" in payload:
                provider_user_id = sent_provider_user_id
            else:
                provider_user_id = kept.provider_user_id if kept else None

            now = self._clock.now()
            if existing is not None and (not same_provider or reset_data):
                # Another provider's (or account's) records do not belong to this connection any more.
                self._store.delete_connection_datasets(
                    user_id, connection_id, self._registry_data_types(existing.provider)
                )
            previous_version = existing.credentials_version if existing is not None else 0
            connection = Connection(
                user_id=user_id,
                connection_id=connection_id,
                provider=provider_name,
                sealed_credentials=sealed,
                credentials_version=previous_version + 1 if credentials_written else previous_version,
                provider_user_id=provider_user_id,
                settings=settings,
                status=ConnectionStatus(status_raw),
                status_reason=None,
                created_at=existing.created_at if existing else now,
                updated_at=now,
            )
            try:
                self._store.save_connection(connection, previous=existing, credentials_written=credentials_written)
            except CredentialsChangedError:
                continue
            break
        else:
            raise StoreBusyError("the connection kept changing while it was being saved; try again")
        data_types = self._policies.data_types(provider_name)
        # New credentials, or a paused or broken connection coming back, are worth a sync at once
        # (credentials sent again unchanged are not new: each dataset keeps its place).
        renewed = credentials_written or (existing is not None and existing.status is not ConnectionStatus.ACTIVE)
        self._schedule(connection, data_types, existing, now, renewed=renewed)
        body_out = connection.public()
        body_out["data_types"] = data_types
        return (200 if existing else 201), body_out

    def _schedule(
        self, connection: Connection, data_types: list[str], previous: Connection | None, now: float, *, renewed: bool
    ) -> None:
        """Create the datasets up front (so reads never race to), and put them on or off the schedule.

        A new, reactivated or re-credentialed connection is due at once; a paused one leaves
        the schedule; otherwise each dataset keeps its place.
        """
        keys = {
            data_type: DatasetKey(connection.user_id, connection.connection_id, data_type) for data_type in data_types
        }
        scheduled = [
            key
            for data_type, key in keys.items()
            if self._policies.policy(connection.provider, data_type).schedule_every_seconds is not None
        ]
        active = connection.status is ConnectionStatus.ACTIVE
        for key in keys.values():
            self._store.ensure_dataset(key, connection.provider, now if active and key in scheduled else None)
        if previous is None:
            return
        if not active:
            self._store.set_schedule(keys.values(), None)
            return
        if renewed:
            self._store.set_schedule(scheduled, now)
        self._store.set_schedule([key for key in keys.values() if key not in scheduled], None)

    def _registry_data_types(self, provider: str) -> list[str]:
        """The provider's data types, or none if it was removed from the providers file."""
        try:
            return self._policies.data_types(provider)
        except ValidationError:
            return []

    def list(self, user_id: str) -> dict[str, Any]:
        validate_id("user_id", user_id)
        return {"connections": [c.public() for c in self._store.list_connections(user_id)]}

    def delete(self, user_id: str, connection_id: str) -> None:
        """Connection first: from then on no sync can create or renew its datasets (see ``ensure_dataset``)."""
        validate_id("user_id", user_id)
        validate_id("connection_id", connection_id)
        existing = self._store.get_connection(user_id, connection_id)
        existed = existing is not None
        self._store.delete_connection(user_id, connection_id)
        # Also when the connection is already gone: finishes a delete that timed out half way.
        data_types = self._registry_data_types(existing.provider) if existing is not None else []
        removed = self._store.delete_connection_datasets(user_id, connection_id, data_types)
        if not existed and removed == 0:
            raise NotFoundError(f"connection {connection_id!r} not found")


class ManualSyncService:
    """``POST .../sync``: queue (202) or wait for (200) a forced sync of one or all data types."""

    def __init__(
        self,
        store: DynamoStore,
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

    def sync(self, user_id: str, connection_id: str, body: Any) -> ApiResponse:
        validate_id("user_id", user_id)
        validate_id("connection_id", connection_id)
        payload = _object(body, "request body")
        wait = payload.get("wait", False)
        if not isinstance(wait, bool):
            raise ValidationError("wait must be true or false")
        connection = self._store.get_connection(user_id, connection_id)
        if connection is None:
            raise NotFoundError(f"connection {connection_id!r} not found")
        data_type = payload.get("data_type")
        if data_type is None:
            data_types = self._policies.data_types(connection.provider)
        elif isinstance(data_type, str):
            validate_id("data_type", data_type)
            self._policies.policy(connection.provider, data_type)
            data_types = [data_type]
        else:
            raise ValidationError("data_type must be a string")
        if connection.status is not ConnectionStatus.ACTIVE:
            raise ConnectionNotActiveError(f"the connection is {connection.inactive_reason()}; it is not synced")
        now = self._clock.now()
        enforce_manual_refresh_limit(self._store, user_id, now, self._settings)
        if wait:
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


class StatusService:
    def __init__(self, store: DynamoStore, policies: PolicyResolver, clock: Clock, settings: Settings) -> None:
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


class WorkerService:
    """Runs queued jobs. Returns normally when the message is done (synced, superseded, deferred
    or undeliverable); raises ``SyncInProgressError`` when SQS should redeliver it later."""

    def __init__(
        self,
        store: DynamoStore,
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
