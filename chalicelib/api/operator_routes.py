"""Operator routes (operator token): the fan-out now, pause, resume, status."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Request

from chalicelib.api.http import endpoint
from chalicelib.api.requests import json_body, no_fields
from chalicelib.container import Container

operator_api = Blueprint(__name__)
# These routes take no body (any field in one is a 400); accept whatever a plain ``curl -X POST`` /
# ``curl -d ''`` labels it.
_ANY_BODY = ["application/json", "text/plain", "application/x-www-form-urlencoded"]


@operator_api.route("/sync/run", methods=["POST"], content_types=_ANY_BODY)
@endpoint(operator_api, auth="operator")
def run_fanout(container: Container, request: Request) -> dict[str, Any]:
    no_fields(json_body(request))
    return container.operator.run_now()


@operator_api.route("/sync/pause", methods=["POST"], content_types=_ANY_BODY)
@endpoint(operator_api, auth="operator")
def pause_schedule(container: Container, request: Request) -> dict[str, Any]:
    no_fields(json_body(request))
    return container.operator.pause()


@operator_api.route("/sync/resume", methods=["POST"], content_types=_ANY_BODY)
@endpoint(operator_api, auth="operator")
def resume_schedule(container: Container, request: Request) -> dict[str, Any]:
    no_fields(json_body(request))
    return container.operator.resume()


@operator_api.route("/sync/status", methods=["GET"])
@endpoint(operator_api, auth="operator")
def service_status(container: Container, request: Request) -> dict[str, Any]:
    return container.operator.status()
