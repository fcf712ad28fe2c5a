"""What an upstream gives back and how it fails: the values the provider port trades in.

They live below the providers so the pure rules (policies, record checks) and the sync can use
them without depending on any provider.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.errors import SmartSyncError


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
    weight: int = 1
    """What one call for this data type costs against the provider's rate windows (Binance request weight)."""
    incremental: bool = True
    """The provider honours ``FetchRequest.since``. ``False``: every pass lists everything, so every pass
    is a full one (upstream deletions are seen at once instead of at the periodic full pass)."""
    complete_listing: bool = True
    """A full pass lists every record, so records it did not see were deleted upstream. ``False`` for
    listings that only reach back so far (time windows): their full pass never sweeps."""


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
class SkippedRecord:
    """One upstream record that was left out, so the rest of the page could be kept.

    ``record_id`` is ``None`` when the record had no usable id; it is cut to 128
    characters (an oversized id is one of the reasons a record is skipped).
    """

    reason: str
    """A stable code: ``not_an_object``, ``missing_id``, ``id_too_long``, ``record_too_large``."""
    record_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Page:
    records: list[UpstreamRecord]
    next_page_token: str | None = None
    """Opaque token for the following page; ``None`` when this was the last page."""
    skipped: list[SkippedRecord] = field(default_factory=list)
    """Records the provider could not use (counted in the run and shown in the read's metadata)."""
    response_headers: Mapping[str, str] = field(default_factory=dict)
    """The answer's headers, lower-cased names (rate-limit feedback such as ``x-ratelimit-remaining``)."""
    covered_until: str | None = None
    """On a pass's last page: the listing is complete up to this stamp (in ``updated_at``'s format), records
    or not. A time-window pass sets it to its last window's end, so the next pass starts there rather than
    walking its whole look-back again when nothing happened."""


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
        self.response_headers: Mapping[str, str] = {}
        """The failed answer's headers, lower-cased names (rate-limit feedback); empty without an answer."""


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

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message, retryable=False, status_code=status_code)


class ProviderGrantError(ProviderAuthError):
    """The provider's token endpoint refused the refresh token (OAuth2 ``invalid_grant``).

    Retrying cannot help: the user must connect again. The connection becomes
    NEEDS_REVIEW at once, with this error's message (which never quotes a token) as reason.
    """


class ProviderTimeoutError(ProviderError):
    """The fetch did not finish within ``FetchRequest.timeout_seconds``."""


@dataclass(frozen=True)
class TokenGrant:
    """What a token endpoint gave back. ``refresh_token`` is ``None`` when the provider kept the old one."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None
    """Epoch seconds; ``None`` when the provider did not say (``expires_in`` absent)."""

    def merged_into(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        """The connection's credentials after this grant (other fields, e.g. a user id, are kept)."""
        merged = dict(credentials)
        merged["access_token"] = self.access_token
        if self.refresh_token is not None:
            merged["refresh_token"] = self.refresh_token
        if self.expires_at is None:
            merged.pop("expires_at", None)
        else:
            merged["expires_at"] = self.expires_at
        return merged
