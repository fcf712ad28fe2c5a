"""The one map from error type to the HTTP status and stable code clients see.

Domain errors (``chalicelib/domain/errors.py``, the provider errors of ``chalicelib/domain/upstream.py``,
the credential errors of ``chalicelib/store/vault.py``) say what went wrong; only this map says how it
looks over HTTP. An error takes the entry of the nearest class in its MRO, so a subclass with no entry of
its own answers as its parent does (``DatasetNotFoundError`` is a 404 ``not_found``).

Internal signals (a lease lost, a claim not won, a job no longer claimable, a sync in progress) have no
entry: they are caught below the API, and one that escaped is a bug, answered as a 500 ``internal_error``.
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import (
    AuthenticationError,
    AuthUnavailableError,
    ConflictError,
    ConnectionLimitError,
    ConnectionNotActiveError,
    ForbiddenError,
    NotFoundError,
    QueueUnavailableError,
    RateLimitedError,
    StoreBusyError,
    ValidationError,
)
from chalicelib.domain.upstream import ProviderAuthError, ProviderError, ProviderGrantError, ProviderTimeoutError
from chalicelib.store.vault import CredentialsError, CredentialsUnavailableError, CredentialsUnreadableError
from chalicelib.sync.token_refresh import TokenRefreshPendingError
from chalicelib.usecases.operator import SchedulerPausedError


@dataclass(frozen=True)
class ErrorView:
    status: int
    code: str
    """Stable and machine-readable: clients branch on it, so it never changes once published."""


INTERNAL_ERROR = ErrorView(500, "internal_error")

ERROR_VIEWS: dict[type, ErrorView] = {
    ValidationError: ErrorView(400, "bad_request"),
    AuthenticationError: ErrorView(401, "unauthorized"),
    ForbiddenError: ErrorView(403, "forbidden"),
    NotFoundError: ErrorView(404, "not_found"),
    ConflictError: ErrorView(409, "conflict"),
    ConnectionNotActiveError: ErrorView(409, "connection_not_active"),
    # 409, not 429: waiting does not help; the user must delete a connection first.
    ConnectionLimitError: ErrorView(409, "connection_limit_reached"),
    SchedulerPausedError: ErrorView(409, "scheduler_paused"),
    RateLimitedError: ErrorView(429, "rate_limited"),
    ProviderError: ErrorView(502, "upstream_error"),
    ProviderAuthError: ErrorView(502, "upstream_auth_error"),
    ProviderGrantError: ErrorView(502, "upstream_grant_revoked"),
    ProviderTimeoutError: ErrorView(502, "upstream_timeout"),
    TokenRefreshPendingError: ErrorView(502, "token_refresh_pending"),
    QueueUnavailableError: ErrorView(503, "queue_unavailable"),
    StoreBusyError: ErrorView(503, "busy"),
    AuthUnavailableError: ErrorView(503, "auth_unavailable"),
    CredentialsError: ErrorView(500, "credentials_error"),
    CredentialsUnreadableError: ErrorView(500, "credentials_unreadable"),
    CredentialsUnavailableError: ErrorView(503, "credentials_unavailable"),
    ConfigurationError: ErrorView(500, "configuration_error"),
}


def error_view(exc: BaseException) -> ErrorView | None:
    """The status and code ``exc`` answers with, or ``None`` when it has no place in the API (a bug if raised)."""
    for cls in type(exc).__mro__:
        view = ERROR_VIEWS.get(cls)
        if view is not None:
            return view
    return None
