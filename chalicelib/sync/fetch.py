"""Fetching one page for a sync: a token per attempt, retries with backoff, OAuth2 refresh, the provider's waits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from chalicelib.domain.breaker import BreakerState
from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.model import Connection
from chalicelib.domain.upstream import (
    FetchRequest,
    Page,
    ProviderAuthError,
    ProviderError,
    ProviderGrantError,
    ProviderRateLimitError,
)
from chalicelib.providers.base import Provider, token_client_of
from chalicelib.sync.pacing import ProviderGuard
from chalicelib.sync.progress import SyncProgress
from chalicelib.sync.waits import MIN_USEFUL_FETCH_SECONDS, ProviderWaits, WaitRequired

_NO_DEADLINE_TIMEOUT_SECONDS = 60.0


class CredentialSource(Protocol):
    """Where a sync gets the connection's credentials in plain text (they are sealed at rest)."""

    def credentials_for(
        self, connection: Connection, provider: Provider, *, deadline: float | None, rejected: bool = False
    ) -> Mapping[str, Any]:
        """Open the credentials; for an OAuth2 provider, refresh them first when the access token is
        expiring, or when ``rejected`` (the provider just answered 401 to them). A refresh is single
        flight across Lambdas. Raises ``ProviderGrantError`` when the refresh token was refused."""
        ...


class PageFetcher:
    def __init__(
        self,
        clock: Clock,
        settings: Settings,
        guard: ProviderGuard,
        waits: ProviderWaits,
        credentials: CredentialSource,
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._guard = guard
        self._waits = waits
        self._credentials = credentials

    def open_credentials(
        self, connection: Connection, provider: Provider, progress: SyncProgress, *, rejected: bool
    ) -> Mapping[str, Any]:
        return self._credentials.credentials_for(connection, provider, deadline=progress.deadline, rejected=rejected)

    def fetch(
        self,
        connection: Connection,
        provider: Provider,
        request: FetchRequest,
        progress: SyncProgress,
        breaker_seen: BreakerState,
    ) -> tuple[Page, Mapping[str, Any]]:
        """One page: a token per attempt, retries with full-jitter backoff, the provider's own waits honoured.

        For an OAuth2 provider the access token is refreshed before it expires, and once after a 401;
        the (possibly new) credentials come back with the page for the pages after it.
        """
        attempt = 0
        token_client = token_client_of(provider)
        while True:
            if token_client is not None and token_client.needs_refresh(request.credentials, self._clock.now()):
                request = replace(
                    request, credentials=self.open_credentials(connection, provider, progress, rejected=False)
                )
            self._waits.take_token(progress)
            self._waits.keep_alive(progress)
            timeout = self._fetch_timeout(progress.deadline)
            if timeout is None:
                raise WaitRequired(0.0, "the caller's time budget ran out")
            progress.upstream_calls += 1
            try:
                page = provider.fetch_page(replace(request, timeout_seconds=timeout, now_epoch=self._clock.now()))
            except ProviderError as exc:
                progress.feedback = exc.response_headers or None
                if isinstance(exc, ProviderRateLimitError) and exc.retry_after_seconds:
                    # Every worker waits, not only this one (also when this was our last attempt).
                    self._guard.hold(
                        progress.provider,
                        self._clock.now() + exc.retry_after_seconds,
                        connection_scope=progress.connection_scope,
                    )
                    progress.feedback = None  # the hold already says it; applied again later it would wait twice
                if (
                    isinstance(exc, ProviderAuthError)
                    and not isinstance(exc, ProviderGrantError)
                    and exc.upstream_status == 401
                    and token_client is not None
                    and not progress.refreshed
                ):
                    # The access token may have been revoked early or rotated elsewhere: refresh once.
                    progress.refreshed = True
                    self._waits.provider_answered(progress, breaker_seen)
                    request = replace(
                        request, credentials=self.open_credentials(connection, provider, progress, rejected=True)
                    )
                    continue
                if not exc.retryable:
                    if exc.upstream_status is not None:  # an answer; a locally raised error proves nothing
                        self._waits.provider_answered(progress, breaker_seen)
                    raise
                attempt += 1
                if attempt >= self._settings.retry_max_attempts:
                    raise
                self._waits.back_off(exc, attempt, progress)
                continue
            self._waits.provider_answered(progress, breaker_seen)
            progress.feedback = page.response_headers or None
            return page, request.credentials

    def _fetch_timeout(self, deadline: float | None) -> float | None:
        # One fetch may never outlive the lease it runs under (renewed before each page is stored).
        longest = min(_NO_DEADLINE_TIMEOUT_SECONDS, self._settings.lease_ttl_seconds / 2)
        if deadline is None:
            return longest
        remaining = deadline - self._clock.now()
        return min(remaining, longest) if remaining >= MIN_USEFUL_FETCH_SECONDS else None
