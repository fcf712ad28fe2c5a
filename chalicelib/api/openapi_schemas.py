"""The JSON Schemas of the API's bodies (OpenAPI 3.1 ``components.schemas``), written by hand.

Each mirrors the code that builds the JSON: ``chalicelib/api/requests.py`` (request bodies),
``Connection.public``, ``StoredRecord.public`` and ``SyncRun.public`` (``chalicelib/domain/model.py``),
``chalicelib/usecases/reads.py`` (a read's answer), ``status.py``, ``manual_sync.py``, ``operator.py``
and ``chalicelib/api/views.py`` (the error body). Enumerations are read from the domain's enums, so a
value added there (a run status, a trigger) is documented without an edit here.
``tests/functional/test_schemathesis.py`` checks every answer against these schemas.
"""

from __future__ import annotations

from typing import Any

from chalicelib.api.requests import (
    CONNECTION_FIELDS,
    MAX_BODY_BYTES,
    MAX_CONNECTION_FIELD_BYTES,
    SYNC_FIELDS,
)
from chalicelib.domain.model import ConnectionStatus, DatasetStatus, RunStatus, SyncCounts, Trigger
from chalicelib.domain.policy import Freshness
from chalicelib.sync.outcome import OutcomeKind

Schema = dict[str, Any]

ID_PATTERN = "^[A-Za-z0-9._:@-]{1,128}$"

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601 with a Z"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), extra: bool = False) -> Schema:
    """An object with these properties, all required but ``optional``; no others unless ``extra``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": extra,
    }


def _counts() -> dict[str, Schema]:
    return {name: {"type": "integer", "minimum": 0} for name in SyncCounts().as_dict()}


def _values(enum: Any, *, lower: bool = False) -> list[str]:
    return [member.value.lower() if lower else member.value for member in enum]


def _error() -> Schema:
    return {
        "type": "object",
        "description": "The API's one error body (chalicelib/api/views.py); `code` is stable, clients branch on it.",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "examples": ["bad_request"]},
                    "message": STRING,
                },
                "required": ["code", "message"],
                # Room for details a later error may carry; code and message are always there.
                "additionalProperties": True,
            }
        },
        "required": ["error"],
        "additionalProperties": False,
    }


def _connection_change() -> Schema:
    field_object: Schema = nullable(
        {"type": "object", "description": f"At most {MAX_CONNECTION_FIELD_BYTES} bytes of JSON; null sends {{}}."}
    )
    properties: dict[str, Schema] = {
        "provider": {"type": "string", "minLength": 1},
        "status": {"enum": [ConnectionStatus.ACTIVE.value, ConnectionStatus.PAUSED.value]},
        "reset_data": BOOLEAN,
        "credentials": field_object,
        "settings": field_object,
        "provider_user_id": {
            "anyOf": [{"type": "string", "pattern": ID_PATTERN}, {"type": "integer"}, {"type": "null"}],
            "description": "The account's id at the provider (its webhooks name it); null clears it.",
        },
    }
    schema = obj(properties, optional=CONNECTION_FIELDS[1:])
    schema["description"] = f"A field left out keeps what is stored. At most {MAX_BODY_BYTES} bytes."
    return schema


def _sync_request() -> Schema:
    properties: dict[str, Schema] = {"wait": BOOLEAN, "data_type": nullable({"type": "string", "pattern": ID_PATTERN})}
    return obj(properties, optional=SYNC_FIELDS)


def _connection(*, with_data_types: bool = False) -> Schema:
    properties: dict[str, Schema] = {
        "user_id": STRING,
        "connection_id": STRING,
        "provider": STRING,
        "provider_user_id": nullable(STRING),
        "settings": {"type": "object"},
        "status": {"enum": _values(ConnectionStatus)},
        "status_reason": nullable(STRING),
        "has_credentials": BOOLEAN,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    }
    if with_data_types:
        properties["data_types"] = {"type": "array", "items": STRING}
    return obj(properties)


def _record() -> Schema:
    return obj(
        {"id": STRING, "updated_at": nullable(STRING), "synced_at": nullable(TIMESTAMP), "data": {"type": "object"}}
    )


def _read_answer() -> Schema:
    sync = obj(
        {
            "run_id": nullable(STRING),
            "joined_running_sync": BOOLEAN,
            "continuation_run_id": nullable(STRING),
            **_counts(),
        }
    )
    metadata = obj(
        {
            "source": {"enum": ["cache", "upstream", "stale_cache"]},
            "freshness": {"enum": _values(Freshness)},
            "cached": BOOLEAN,
            "background_sync": BOOLEAN,
            "sync_in_progress": BOOLEAN,
            "last_synced_at": nullable(TIMESTAMP),
            "staleness_seconds": nullable(INTEGER),
            "cooldown_seconds": NUMBER,
            "max_staleness_seconds": NUMBER,
            "record_count": INTEGER,
            "skipped_records": INTEGER,
            "message": STRING,
            "warning": STRING,
            "error": STRING,
            "sync": sync,
        },
        optional=("warning", "error", "sync"),
    )
    return obj(
        {
            "status": {"enum": ["success", "success_with_warning", "pending"]},
            "data": {"type": "array", "items": ref("Record")},
            "next_token": nullable(STRING),
            "metadata": metadata,
        }
    )


def _sync_answer() -> Schema:
    queued = obj(
        {
            "data_type": STRING,
            "status": {"enum": ["queued", "already_queued", "already_running", "queue_unavailable"]},
            "run_id": nullable(STRING),
            "error": STRING,
        },
        optional=("error",),
    )
    waited = obj(
        {
            "data_type": STRING,
            "status": {"enum": _values(OutcomeKind)},
            "run_id": nullable(STRING),
            "joined_running_sync": BOOLEAN,
            **_counts(),
            "error": STRING,
            "continuation_run_id": STRING,
        },
        optional=("error", "continuation_run_id"),
    )
    return obj(
        {
            "status": {"enum": ["queued", "completed", "running", "failed"]},
            "syncs": {"type": "array", "items": {"anyOf": [queued, waited]}},
        }
    )


def _dataset_status() -> Schema:
    statuses = ["never_synced", "queued", "running", "interrupted", *_values(DatasetStatus, lower=True)]
    return obj(
        {
            "last_sync_at": nullable(TIMESTAMP),
            "last_attempted_at": nullable(TIMESTAMP),
            "sync_status": {"enum": sorted(set(statuses))},
            "records_synced": INTEGER,
            "last_run": nullable(obj(_counts())),
            "time_since_sync_seconds": nullable(INTEGER),
            "cooldown_seconds": NUMBER,
            "max_staleness_seconds": NUMBER,
            "schedule_every_seconds": nullable(NUMBER),
            "needs_sync": BOOLEAN,
            "next_sync_in_seconds": INTEGER,
            "consecutive_failures": INTEGER,
            "last_error": nullable(STRING),
        }
    )


def _sync_status() -> Schema:
    connection = obj(
        {
            "connection_id": STRING,
            "provider": STRING,
            "status": {"enum": _values(ConnectionStatus)},
            "status_reason": nullable(STRING),
            "datasets": {"type": "object", "additionalProperties": ref("DatasetStatus")},
        }
    )
    return obj({"user_id": STRING, "connections": {"type": "array", "items": connection}, "check_timestamp": TIMESTAMP})


def _run() -> Schema:
    return obj(
        {
            "run_id": STRING,
            "connection_id": STRING,
            "data_type": STRING,
            "trigger": {"enum": _values(Trigger)},
            "status": {"enum": _values(RunStatus, lower=True)},
            "created_at": TIMESTAMP,
            "started_at": nullable(TIMESTAMP),
            "ended_at": nullable(TIMESTAMP),
            "duration_seconds": nullable(NUMBER),
            **_counts(),
            "error": nullable(STRING),
            "resumed_from_checkpoint": nullable(STRING),
            "attempt": {"type": "integer", "minimum": 1, "description": "Which delivery of the run's job this is."},
            "skipped_records": {"type": "array", "items": STRING},
        },
        optional=("attempt",),
    )


def _statistics(*, service: bool) -> Schema:
    properties: dict[str, Schema] = {
        "total_syncs": INTEGER,
        "successful_syncs": INTEGER,
        "failed_syncs": INTEGER,
        "success_rate_percent": nullable(NUMBER),
        "last_sync_time": nullable(TIMESTAMP),
        "last_sync_duration_seconds": nullable(NUMBER),
        "average_sync_duration_seconds": nullable(NUMBER),
        "consecutive_failures": INTEGER,
        "last_error": nullable(STRING),
        "last_error_time": nullable(TIMESTAMP),
    }
    if service:
        properties["health_status"] = {"enum": ["healthy", "warning", "degraded", "unhealthy"]}
        properties["health_reasons"] = {"type": "array", "items": STRING}
    return obj(properties)


def _tick() -> Schema:
    return obj(
        {
            "trigger": STRING,
            "due": INTEGER,
            "queued": INTEGER,
            "skipped": {"type": "object", "additionalProperties": {"type": ["integer", "string"]}},
            "duration_seconds": NUMBER,
        },
        optional=("duration_seconds",),
    )


def _operator_status() -> Schema:
    # A provider's limits view (chalicelib/sync/limits_view.py) grows with its windows: its core is typed,
    # the rest (rate windows, bucket, quota) is open.
    provider = obj(
        {
            "breaker": obj(
                {
                    "state": {"enum": ["closed", "open", "half_open"]},
                    "consecutive_failures": INTEGER,
                    "opened_at": nullable(TIMESTAMP),
                    "next_probe_at": nullable(TIMESTAMP),
                    "last_failure": nullable(STRING),
                    "last_failure_at": nullable(TIMESTAMP),
                }
            ),
            "concurrency": obj({"running_syncs": INTEGER, "max_concurrent_syncs": nullable(INTEGER)}),
            "quota": nullable({"type": "object"}),
            "statistics": _statistics(service=False),
        },
        extra=True,
    )
    return obj(
        {
            "is_running": BOOLEAN,
            "status": {"enum": ["running", "paused"]},
            "paused_since": nullable(TIMESTAMP),
            "last_tick_at": nullable(TIMESTAMP),
            "last_tick": nullable(ref("Tick")),
            "next_tick_at": nullable(TIMESTAMP),
            "next_tick_in_seconds": nullable(INTEGER),
            "config": {"type": "object"},
            "statistics": _statistics(service=True),
            "providers": {"type": "object", "additionalProperties": provider},
            "check_timestamp": TIMESTAMP,
        }
    )


def component_schemas() -> dict[str, Schema]:
    return {
        "Error": _error(),
        "ChaliceError": {
            "type": "object",
            "description": "Chalice's own answer, before the route runs (an unsupported Content-Type).",
            "properties": {"Code": STRING, "Message": STRING},
            "required": ["Code", "Message"],
        },
        "ConnectionChange": _connection_change(),
        "SyncRequest": _sync_request(),
        "Connection": _connection(),
        "ConnectionSaved": _connection(with_data_types=True),
        "ConnectionList": obj({"connections": {"type": "array", "items": ref("Connection")}}),
        "Record": _record(),
        "ReadAnswer": _read_answer(),
        "SyncAnswer": _sync_answer(),
        "DatasetStatus": _dataset_status(),
        "SyncStatus": _sync_status(),
        "Run": _run(),
        "RunList": obj({"runs": {"type": "array", "items": ref("Run")}}),
        "Tick": _tick(),
        "TickAnswer": obj({"status": {"const": "ran"}, "tick": ref("Tick")}),
        "OperatorStatus": _operator_status(),
        "Health": obj({"status": {"const": "ok"}}),
        "WebhookAccepted": obj({"status": {"const": "accepted"}}),
    }
