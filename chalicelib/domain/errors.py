"""Domain errors. Each carries the HTTP status and the stable code it maps to."""

from __future__ import annotations


class SmartSyncError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or self.code


class ValidationError(SmartSyncError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class AuthenticationError(SmartSyncError):
    """Missing, expired or invalid bearer token."""

    status = 401
    code = "unauthorized"


class ForbiddenError(SmartSyncError):
    """The token may not act on this resource."""

    status = 403
    code = "forbidden"


class NotFoundError(SmartSyncError):
    """The resource does not exist."""

    status = 404
    code = "not_found"


class DatasetNotFoundError(NotFoundError):
    """The dataset (or its connection) was deleted."""


class QueueUnavailableError(SmartSyncError):
    """The job queue did not accept the message."""

    status = 503
    code = "queue_unavailable"


class StoreBusyError(SmartSyncError):
    """DynamoDB kept refusing a write because of concurrent writers."""

    status = 503
    code = "busy"


class ConflictError(SmartSyncError):
    status = 409
    code = "conflict"


class ConnectionNotActiveError(ConflictError):
    """The connection is paused or needs review."""

    code = "connection_not_active"


class RateLimitedError(SmartSyncError):
    """Too many manual refreshes."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class SyncInProgressError(SmartSyncError):
    """Another caller holds this dataset's sync lease."""

    status = 409
    code = "sync_in_progress"

    def __init__(self, message: str = "A sync of this dataset is already running", owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class LeaseLostError(SmartSyncError):
    """This worker's lease expired and another caller took the dataset over."""

    status = 409
    code = "lease_lost"


class JobNotClaimableError(SmartSyncError):
    """The queued job was already done, superseded or taken over."""

    status = 409
    code = "job_not_claimable"


class ClaimNotWonError(SmartSyncError):
    """Another caller already queued or is running this dataset's sync."""

    status = 409
    code = "claim_not_won"
