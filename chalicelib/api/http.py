"""One decorator per route: authentication, JSON errors, and nothing else."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal

from chalice.app import BadRequestError, Blueprint, Response

from chalicelib.api.auth import authenticate, authorize_user
from chalicelib.api.errors import INTERNAL_ERROR, error_view
from chalicelib.api.views import error_response, to_response
from chalicelib.container import Container, get_container
from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import ForbiddenError, RateLimitedError, SmartSyncError
from chalicelib.domain.logs import log_crash

logger = logging.getLogger(__name__)

AuthMode = Literal["user", "operator", "none"]

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
                    principal = authenticate(
                        request.headers, container.settings, container.clock.now(), container.token_keys
                    )
                    if auth == "operator" and not principal.operator:
                        raise ForbiddenError("this route needs an operator token")
                    if "user_id" in url_params:
                        authorize_user(principal, url_params["user_id"])
                return to_response(view(container, request, **url_params))
            except BadRequestError as exc:
                return error_response(400, "bad_request", str(exc) or "malformed request body")
            except Exception as exc:
                return _error(view, exc)

        return handler

    return decorate


def _error(view: View, exc: Exception) -> Response:
    """The error's status and code from the one map (``chalicelib/api/errors.py``); an unmapped error is a bug."""
    known = error_view(exc)
    if known is None or not isinstance(exc, SmartSyncError):
        log_crash(logger, f"unhandled error in {view.__name__}", exc)
        return error_response(INTERNAL_ERROR.status, INTERNAL_ERROR.code, "internal error")
    if isinstance(exc, ConfigurationError):
        logger.error("configuration error: %s", exc.message)
        return error_response(known.status, known.code, "the service is misconfigured; see its logs")
    if isinstance(exc, RateLimitedError):
        return error_response(known.status, known.code, exc.message, {"Retry-After": str(exc.retry_after_seconds)})
    return error_response(known.status, known.code, exc.message)


__all__ = ["Container", "endpoint"]
