"""Response shaping: what the routes and the error map return becomes a JSON ``Response``."""

from __future__ import annotations

from typing import Any

from chalice.app import Response

from chalicelib.usecases.responses import ApiResponse

JSON_HEADERS: dict[str, str | list[str]] = {"Content-Type": "application/json"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The API's one error body: ``{"error": {"code", "message"}}``."""
    return Response(
        body={"error": {"code": code, "message": message}},
        status_code=status,
        headers={**JSON_HEADERS, **(headers or {})},
    )


def to_response(result: Any) -> Response:
    """A ``Response`` as it is, a use case's ``ApiResponse`` with its status, anything else as a 200 JSON body."""
    if isinstance(result, Response):
        return result
    if isinstance(result, ApiResponse):
        return Response(body=result.body, status_code=result.status_code, headers={**JSON_HEADERS, **result.headers})
    return Response(body=result, status_code=200, headers=JSON_HEADERS)
