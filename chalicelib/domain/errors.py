"""Domain errors: what went wrong, in the domain's words.

They know nothing of HTTP: the API's one map from error type to status and code is
``chalicelib/api/errors.py``. Some are internal signals between the store, the sync and
the use cases (``ClaimNotWonError``, ``LeaseLostError``, ``JobNotClaimableError``,
``SyncInProgressError``): they are always caught below the API and have no status there.
"""

from __future__ import annotations


class SmartSyncError(Exception):
    """Base of every domain error; ``message`` is safe to show to the caller."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or self.__class__.__name__


class ValidationError(SmartSyncError):
    """The request is malformed."""


class AuthenticationError(SmartSyncError):
    """Missing, expired or invalid bearer token."""


class AuthUnavailableError(SmartSyncError):
    """The token's keys could not be read right now (the JWKS or the secret store did not answer); retry."""


class ForbiddenError(SmartSyncError):
    """The token may not act on this resource."""


class NotFoundError(SmartSyncError):
    """The resource does not exist."""


class DatasetNotFoundError(NotFoundError):
    """The dataset (or its connection) was deleted."""


class QueueUnavailableError(SmartSyncError):
    """The job queue did not accept the message."""


class StoreBusyError(SmartSyncError):
    """DynamoDB kept refusing a write because of concurrent writers."""


class ConflictError(SmartSyncError):
    """The request conflicts with the resource's current state."""


class ConnectionNotActiveError(ConflictError):
    """The connection is paused or needs review."""


class ConnectionLimitError(ConflictError):
    """The user already has as many connections as one user may have."""


class RateLimitedError(SmartSyncError):
    """Too many manual refreshes."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class SyncInProgressError(SmartSyncError):
    """Another caller holds this dataset's sync lease (internal: the caller joins, or SQS redelivers the job)."""

    def __init__(self, message: str = "A sync of this dataset is already running", owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class LeaseLostError(SmartSyncError):
    """This worker's lease expired and another caller took the dataset over (internal: the sync stops writing)."""


class JobNotClaimableError(SmartSyncError):
    """The queued job was already done, superseded or taken over (internal: the worker drops it)."""


class ClaimNotWonError(SmartSyncError):
    """Another caller already queued or is running this dataset's sync (internal: nothing more to queue)."""
