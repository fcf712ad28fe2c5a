"""The provider port: what the sync engine needs from an upstream API.

A provider knows its data types (with default policies) and can fetch one page
of one data type for one connection. It never touches storage, never reads the
clock on its own and never sleeps except through the ``FetchContext`` it is
handed, so the engine stays in charge of time, checkpoints and budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.errors import SmartSyncError


@dataclass(frozen=True)
class PolicyDefaults:
    """A data type's own policy; ``None`` means "use the service default"."""

    cooldown_seconds: int | None = None
    max_staleness_seconds: int | None = None
    schedule_every_seconds: int | None = None


@dataclass(frozen=True)
class DataTypeSpec:
    name: str
    policy: PolicyDefaults = field(default_factory=PolicyDefaults)


@dataclass(frozen=True)
class UpstreamRecord:
    """One record as the provider returned it.

    ``record_id`` is the upstream id records are upserted by; ``updated_at`` is
    the provider's modification stamp (used as the incremental watermark);
    ``deleted`` marks a provider tombstone.
    """

    record_id: str
    data: Mapping[str, Any]
    updated_at: str | None = None
    deleted: bool = False


@dataclass(frozen=True)
class Page:
    records: list[UpstreamRecord]
    next_page_token: str | None = None
    """Opaque token for the following page; ``None`` when this was the last page."""


@dataclass(frozen=True)
class FetchRequest:
    """Everything one page fetch needs. ``credentials`` must never be logged."""

    connection_id: str
    data_type: str
    credentials: Mapping[str, Any] = field(repr=False)
    settings: Mapping[str, Any]
    page_token: str | None
    since: str | None
    """Incremental watermark from the last complete run, or ``None`` for a full pull."""
    timeout_seconds: float
    """The most this fetch may take (the provider timeout, cut to the caller's budget)."""
    now_epoch: float
    sleep: Callable[[float], None]
    """Injected sleeper: the only way a provider may pass time."""


class ProviderError(SmartSyncError):
    """The upstream call failed (network, timeout, 5xx, malformed answer)."""

    status = 502
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        status_code: int | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.upstream_status = status_code
        self.retry_after_seconds = retry_after_seconds
        """How long the provider asked us to wait (``Retry-After`` or its reset header), if it said."""


class ProviderRateLimitError(ProviderError):
    """The provider answered 429 Too Many Requests.

    Always retryable. ``retry_after`` is the raw ``Retry-After`` header (seconds
    or an HTTP date, as the provider sent it) or ``None`` when there was none;
    ``retry_after_seconds`` is the wait it (or the provider's reset header) means.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: str | None = None,
        retry_after_seconds: float | None = None,
        status_code: int | None = 429,
    ) -> None:
        super().__init__(message, retryable=True, status_code=status_code, retry_after_seconds=retry_after_seconds)
        self.retry_after = retry_after


class ProviderAuthError(ProviderError):
    """The provider rejected the connection's credentials (401/403)."""

    code = "upstream_auth_error"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message, retryable=False, status_code=status_code)


class ProviderTimeoutError(ProviderError):
    """The fetch did not finish within ``FetchRequest.timeout_seconds``."""

    code = "upstream_timeout"


class Provider(Protocol):
    name: str

    def data_types(self) -> Mapping[str, DataTypeSpec]: ...

    def fetch_page(self, request: FetchRequest) -> Page: ...

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        """Raise ``ValidationError`` when credentials/settings can never work."""
        ...
