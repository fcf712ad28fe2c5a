"""User-facing routes. Each is a few lines: parse, call a service, return."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Request, Response

from chalicelib.api.http import endpoint
from chalicelib.api.openapi import OPENAPI_PATH, openapi_document
from chalicelib.api.requests import connection_change, json_body, sync_request
from chalicelib.container import Container
from chalicelib.usecases.responses import ApiResponse

api = Blueprint(__name__)

_CONNECTION = "/users/{user_id}/connections/{connection_id}"
# Bodies are parsed as JSON whatever they are labelled (``curl -d`` says form-urlencoded).
_BODY_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded"]


def _query(request: Request) -> dict[str, str]:
    return dict(request.query_params or {})


@api.route("/health", methods=["GET"])
@endpoint(api, auth="none")
def health(container: Container, request: Request) -> dict[str, Any]:
    return {"status": "ok"}


@api.route(OPENAPI_PATH, methods=["GET"])
@endpoint(api, auth="none")
def openapi(container: Container, request: Request) -> dict[str, Any]:
    return openapi_document()


@api.route(_CONNECTION, methods=["PUT"], content_types=_BODY_TYPES)
@endpoint(api)
def put_connection(container: Container, request: Request, user_id: str, connection_id: str) -> ApiResponse:
    return container.connections.put(user_id, connection_id, connection_change(json_body(request)))


@api.route("/users/{user_id}/connections", methods=["GET"])
@endpoint(api)
def list_connections(container: Container, request: Request, user_id: str) -> dict[str, Any]:
    return container.connections.list(user_id)


@api.route(_CONNECTION, methods=["DELETE"])
@endpoint(api)
def delete_connection(container: Container, request: Request, user_id: str, connection_id: str) -> Response:
    container.connections.delete(user_id, connection_id)
    return Response(body="", status_code=204)


@api.route(_CONNECTION + "/data/{data_type}", methods=["GET"])
@endpoint(api)
def read_data(container: Container, request: Request, user_id: str, connection_id: str, data_type: str) -> ApiResponse:
    return container.reader.read(user_id, connection_id, data_type, _query(request))


@api.route(_CONNECTION + "/sync", methods=["POST"], content_types=_BODY_TYPES)
@endpoint(api)
def force_sync(container: Container, request: Request, user_id: str, connection_id: str) -> ApiResponse:
    return container.manual_sync.sync(user_id, connection_id, sync_request(json_body(request)))


@api.route("/users/{user_id}/sync-status", methods=["GET"])
@endpoint(api)
def sync_status(container: Container, request: Request, user_id: str) -> dict[str, Any]:
    return container.status.sync_status(user_id)


@api.route(_CONNECTION + "/runs", methods=["GET"])
@endpoint(api)
def list_runs(container: Container, request: Request, user_id: str, connection_id: str) -> dict[str, Any]:
    return container.status.runs(user_id, connection_id, _query(request))
