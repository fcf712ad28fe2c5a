"""The API's OpenAPI 3.1 document, served at ``GET /openapi.json``: every route, body, answer and error.

Built on first use and cached (nothing is built at import). The schemas are in
``chalicelib/api/openapi_schemas.py``; this module lays out the paths and the error answers.
``tests/functional/test_openapi.py`` checks the paths against the routes the app registers, both ways,
and ``tests/functional/test_schemathesis.py`` checks the app's answers against the document.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal

from chalicelib.api.openapi_schemas import ID_PATTERN, Schema, component_schemas, ref

OPENAPI_PATH = "/openapi.json"
API_VERSION = "1.0.0"

ERROR_STATUSES: dict[int, str] = {
    400: "`bad_request`: a malformed body, an unknown body field, a bad id or query value.",
    401: "`unauthorized`: no bearer token, or one that is forged, expired or otherwise not valid.",
    403: "`forbidden`: another user's data, or an operator route with a user token.",
    404: "`not_found`: no such connection, provider or data type.",
    409: "`conflict`, `connection_not_active` (paused or needs review), `scheduler_paused`, "
    "`connection_limit_reached` (the user has as many connections as one may have).",
    429: "`rate_limited`: too many forced refreshes (or another per-user limit); `Retry-After` says when to retry.",
    500: "`internal_error` (a bug), `configuration_error`, `credentials_error`, `credentials_unreadable`.",
    502: "`upstream_error`, `upstream_auth_error`, `upstream_grant_revoked`, `upstream_timeout`, "
    "`token_refresh_pending`: the provider failed and nothing is cached.",
    503: "`busy` (the store kept refusing a write; retry), `queue_unavailable`, `credentials_unavailable`, "
    "`auth_unavailable` (the token's keys could not be read; retry), "
    "`provider_unavailable` (the provider's circuit is open and nothing is cached); see `Retry-After`.",
}
"""Every status an error may answer with and the codes known today (chalicelib/api/errors.py is the map).
A new status goes here, then in the operations that can answer it. Codes are open: a client branches on
the ones it knows and treats the rest by status."""

_RETRY_AFTER: dict[str, Any] = {
    "description": "Seconds to wait before asking again.",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_RETRY_STATUSES = (429, 502, 503)

_USER = (400, 401, 403, 500, 503)
"""What any route under /users/{user_id} may answer: a bad id, no token, another user's, a bug, a busy store."""
_OPERATOR = (400, 401, 403, 500, 503)

Auth = Literal["user", "operator", "none"]


def _json(schema: Schema, description: str, *, retry_after: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if retry_after:
        answer["headers"] = {"Retry-After": _RETRY_AFTER}
    return answer


def _path_param(name: str, description: str, *, pattern: str | None = ID_PATTERN) -> dict[str, Any]:
    schema: Schema = {"type": "string"} if pattern is None else {"type": "string", "pattern": pattern}
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _query_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _operation(
    operation_id: str,
    summary: str,
    answers: dict[str, Any],
    errors: tuple[int, ...],
    *,
    auth: Auth = "user",
    tag: str = "users",
    body: str | None = None,
    body_required: bool = False,
    query: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    responses = dict(answers)
    for status in sorted(set(errors)):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    if body is not None:
        responses["415"] = {"$ref": "#/components/responses/UnsupportedMediaType"}
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": dict(sorted(responses.items())),
    }
    if auth == "none":
        operation["security"] = []
    elif auth == "operator":
        operation["description"] = "Needs a token whose `scope` names the operator scope (`operator`)."
    if query:
        operation["parameters"] = list(query)
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "description": "Read as JSON whatever it is labelled (application/json, text/plain or, but for "
            "webhooks, application/x-www-form-urlencoded); any other Content-Type is a 415.",
            "content": {"application/json": {"schema": ref(body)}},
        }
    return operation


def _user_paths() -> dict[str, Any]:
    user = _path_param("user_id", "The user's id; a user token reaches only its own.")
    connection = _path_param("connection_id", "The connection's id, chosen by the client.")
    data_type = _path_param("data_type", "One of the provider's data types.")
    limit = {"type": "string", "pattern": "^[0-9]+$"}
    base = "/users/{user_id}/connections/{connection_id}"
    read_answer = ref("ReadAnswer")
    return {
        "/users/{user_id}/connections": {
            "parameters": [user],
            "get": _operation(
                "listConnections", "The user's connections", {"200": _json(ref("ConnectionList"), "The list")}, _USER
            ),
        },
        base: {
            "parameters": [user, connection],
            "put": _operation(
                "putConnection",
                "Create (201) or update (200) a connection; credentials are sealed, never returned",
                {
                    "200": _json(ref("ConnectionSaved"), "Updated"),
                    "201": _json(ref("ConnectionSaved"), "Created"),
                },
                (*_USER, 404, 409, 429, 502),
                body="ConnectionChange",
                body_required=True,
            ),
            "delete": _operation(
                "deleteConnection",
                "Delete the connection, then every dataset it had",
                {"204": {"description": "Deleted (no body)"}},
                (*_USER, 404),
            ),
        },
        base + "/data/{data_type}": {
            "parameters": [user, connection, data_type],
            "get": _operation(
                "readData",
                "Read a dataset: from the cache at once, or after a sync within the read budget",
                {
                    "200": _json(read_answer, "Records with their metadata", retry_after=True),
                    "202": _json(read_answer, "No data yet: the first sync is still running", retry_after=True),
                },
                (*_USER, 404, 409, 429, 502),
                query=(
                    _query_param("force_refresh", {"type": "string"}, "true/1/yes or false/0/no (default false)"),
                    _query_param("limit", limit, "Records per page, ASCII digits, 1 to the page maximum (1000)"),
                    _query_param("next_token", {"type": "string"}, "The previous page's `next_token`"),
                ),
            ),
        },
        base + "/sync": {
            "parameters": [user, connection],
            "post": _operation(
                "forceSync",
                "Force a sync of one or every data type: queued (202), or waited for (200/202 with wait)",
                {
                    "200": _json(ref("SyncAnswer"), "Every sync finished"),
                    "202": _json(ref("SyncAnswer"), "Queued, or still running in the background"),
                },
                (*_USER, 404, 409, 429, 502),
                body="SyncRequest",
            ),
        },
        "/users/{user_id}/sync-status": {
            "parameters": [user],
            "get": _operation(
                "syncStatus",
                "Every dataset's sync status, for every connection of the user",
                {"200": _json(ref("SyncStatus"), "The status")},
                _USER,
            ),
        },
        base + "/runs": {
            "parameters": [user, connection],
            "get": _operation(
                "listRuns",
                "The connection's sync history, newest first",
                {"200": _json(ref("RunList"), "The runs")},
                (*_USER, 404),
                query=(
                    _query_param("data_type", {"type": "string"}, "One data type (default: all)"),
                    _query_param("limit", limit, "Runs to list, ASCII digits, 1 to 200 (default 20)"),
                ),
            ),
        },
    }


def _service_paths() -> dict[str, Any]:
    status = {"200": _json(ref("OperatorStatus"), "The service's status")}
    return {
        "/health": {
            "get": _operation(
                "health",
                "Liveness (no AWS call)",
                {"200": _json(ref("Health"), "Alive")},
                (500,),
                auth="none",
                tag="service",
            )
        },
        OPENAPI_PATH: {
            "get": _operation(
                "openapi",
                "This document",
                {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                (500,),
                auth="none",
                tag="service",
            )
        },
        "/webhooks/{provider}": {
            "parameters": [_path_param("provider", "The provider's name, as in the providers file", pattern=None)],
            "post": _operation(
                "receiveWebhook",
                "A provider's signed webhook; its signature authenticates it, its payload is the provider's own",
                {"202": _json(ref("WebhookAccepted"), "Verified (whether or not a user matched)")},
                (400, 401, 404, 429, 500, 503),
                auth="none",
                tag="webhooks",
                body="WebhookPayload",
            ),
        },
        "/sync/run": {
            "post": _operation(
                "runFanout",
                "Run the scheduled fan-out now (one tick)",
                {"200": _json(ref("TickAnswer"), "What the tick queued")},
                (*_OPERATOR, 409),
                auth="operator",
                tag="operator",
                body="NoBody",
            )
        },
        "/sync/pause": {
            "post": _operation(
                "pauseSchedule",
                "Pause the scheduled fan-out",
                status,
                _OPERATOR,
                auth="operator",
                tag="operator",
                body="NoBody",
            )
        },
        "/sync/resume": {
            "post": _operation(
                "resumeSchedule",
                "Resume the scheduled fan-out",
                status,
                _OPERATOR,
                auth="operator",
                tag="operator",
                body="NoBody",
            )
        },
        "/sync/status": {
            "get": _operation(
                "serviceStatus",
                "The scheduler's and the providers' status",
                status,
                _OPERATOR,
                auth="operator",
                tag="operator",
            )
        },
    }


def _error_responses() -> dict[str, Any]:
    responses = {
        f"Error{status}": _json(ref("Error"), description, retry_after=status in _RETRY_STATUSES)
        for status, description in ERROR_STATUSES.items()
    }
    responses["UnsupportedMediaType"] = _json(
        ref("ChaliceError"), "A Content-Type other than JSON, text/plain or form-urlencoded (answered by Chalice)"
    )
    return responses


@functools.cache
def _document() -> dict[str, Any]:
    schemas = component_schemas()
    schemas["WebhookPayload"] = {
        "description": "The provider's own JSON, verified byte for byte; any fields.",
        "type": "object",
    }
    schemas["NoBody"] = {
        "description": "These routes take no body: nothing, null or {}.",
        "anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}],
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smart-sync",
            "version": API_VERSION,
            "description": "Cached, rate-limit-aware sync of users' provider data. See docs/api.md.",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "security": [{"bearerAuth": []}],
        "paths": {**_user_paths(), **_service_paths()},
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "HS256 JWT: `sub` is the user id, `exp` required; a `scope` naming `operator` "
                    "reaches every user and the operator routes.",
                }
            },
            "schemas": schemas,
            "responses": _error_responses(),
        },
    }


def openapi_document() -> dict[str, Any]:
    """The document, built once; each caller gets its own copy to change as it likes."""
    return copy.deepcopy(_document())
