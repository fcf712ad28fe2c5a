"""One decorator per route: authentication, JSON errors, and nothing else."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from chalice.app import BadRequestError, Blueprint, Request, Response

from chalicelib.api.auth import authenticate, authorize_user
from chalicelib.container import Container, get_container
from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import ForbiddenError, RateLimitedError, SmartSyncError, ValidationError
from chalicelib.domain.logs import log_crash
from chalicelib.usecases.reads import ApiResponse

logger = logging.getLogger(__name__)

JSON_HEADERS: dict[str, str | list[str]] = {"Content-Type": "application/json"}
AuthMode = Literal["user", "operator", "none"]


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body={"error": {"code": code, "message": message}},
        status_code=status,
        headers={**JSON_HEADERS, **(headers or {})},
    )


def to_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, ApiResponse):
        return Response(body=result.body, status_code=result.status_code, headers={**JSON_HEADERS, **result.headers})
    return Response(body=result, status_code=200, headers=JSON_HEADERS)


_MAX_BODY_BYTES = 65_536


def json_body(request: Request) -> Any:
    """The parsed body, or ``None`` when empty; malformed JSON is a 400, not a 500.

    Parsed from the raw bytes whatever the Content-Type says, so a client that
    forgets the header is not silently treated as having sent nothing.
    """
    raw = request.raw_body
    if not raw:
        return None
    if len(raw) > _MAX_BODY_BYTES:
        raise ValidationError(f"request body must be at most {_MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("request body is not valid JSON") from None


View = Callable[..., Any]


def endpoint(bp: Blueprint, *, auth: AuthMode = "user") -> Callable[[View], View]:
    """Wrap a view as ``view(container, request, **url_params)`` with auth and error mapping."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def handler(**url_params: str) -> Response:
            request = bp.current_request
            try:
                container = get_container()
                if auth != "none":
                    principal = authenticate(request.headers, container.settings, container.clock.now())
                    if auth == "operator" and not principal.operator:
                        raise ForbiddenError("this route needs an operator token")
                    if "user_id" in url_params:
                        authorize_user(principal, url_params["user_id"])
                return to_response(view(container, request, **url_params))
            except RateLimitedError as exc:
                return error_response(exc.status, exc.code, exc.message, {"Retry-After": str(exc.retry_after_seconds)})
            except ConfigurationError as exc:
                logger.error("configuration error: %s", exc.message)
                return error_response(500, exc.code, "the service is misconfigured; see its logs")
            except SmartSyncError as exc:
                return error_response(exc.status, exc.code, exc.message)
            except BadRequestError as exc:
                return error_response(400, "bad_request", str(exc) or "malformed request body")
            except Exception as exc:
                log_crash(logger, f"unhandled error in {view.__name__}", exc)
                return error_response(500, "internal_error", "internal error")

        return handler

    return decorate


__all__ = ["Container", "endpoint", "error_response", "json_body", "to_response"]
