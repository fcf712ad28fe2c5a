"""OAuth2 token refresh, single flight across instances (product invariant 10).

Providers rotate refresh tokens: once spent, the old one is refused. So exactly one instance
may spend it. They agree through a conditional write on the connection item, a lease like a
dataset's sync lease (the timeline is in ``store/conditions.py``): the winner calls the token endpoint,
stores the new credentials as the next ``credentials_version`` before anyone uses them, and
drops the lease; the others poll (consistent reads) until that version appears, or until
the winner's lease expires and one of them takes over.

Which of these to do is ``refresh_step``, a pure function of the stored snapshot and ``now``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import NotFoundError
from chalicelib.domain.model import Connection, ConnectionStatus
from chalicelib.domain.upstream import ProviderGrantError, ProviderTimeoutError
from chalicelib.providers.base import Provider, TokenClient, token_client_of
from chalicelib.store.vault import CredentialsChangedError, CredentialVault, RefreshNotWonError, StoredCredentials

logger = logging.getLogger(__name__)

REFUSED_REASON = "the provider refused the refresh token (invalid_grant); connect the account again with PUT"
_POLL_FIRST_SECONDS = 0.05
_POLL_MAX_SECONDS = 0.5
_STORE_MARGIN_SECONDS = 2.0
"""Lease time kept back after the token call, to store its answer before the lease can be taken over."""
_MIN_TOKEN_CALL_SECONDS = 0.5
_MAX_ROUNDS = 50
"""Decisions per call; each one follows a write by someone else, so this is never reached in practice."""


class RefreshStore(Protocol):
    """What a token refresh touches: the connection's sealed credentials and its refresh lease."""

    def finish_refresh(
        self, user_id: str, connection_id: str, owner: str, *, seen_version: int, sealed: str
    ) -> int: ...

    def refuse_refresh(self, user_id: str, connection_id: str, *, seen_version: int, reason: str) -> bool: ...

    def release_refresh_lease(self, user_id: str, connection_id: str, owner: str) -> None: ...

    def stored_credentials(self, user_id: str, connection_id: str) -> StoredCredentials | None: ...

    def take_refresh_lease(
        self, user_id: str, connection_id: str, owner: str, *, seen_version: int, now: float, ttl_seconds: float
    ) -> None: ...


class TokenRefreshPendingError(ProviderTimeoutError):
    """Another instance is refreshing the connection's token and did not finish within this caller's budget."""


class RefreshStep(StrEnum):
    USE = "use"
    """The stored credentials are good (or newer than the ones the provider rejected): use them."""
    TAKE = "take"
    """They need a refresh and nobody is doing it: take the lease and refresh."""
    WAIT = "wait"
    """Another instance holds a live lease: wait for the version it stores."""
    REFUSED = "refused"
    """They need a refresh, but the provider already refused this refresh token (NEEDS_REVIEW)."""


def refresh_step(stored: StoredCredentials, *, expired: bool, rejected_version: int | None, now: float) -> RefreshStep:
    """What to do with the stored credentials.

    ``expired``: the token client says the stored access token needs refreshing.
    ``rejected_version``: the credentials version the provider just answered 401 to (``None``
    if it did not); newer stored credentials are someone's refresh or PUT since, so they are
    tried rather than spending the refresh token again.
    """
    rejected = rejected_version is not None and rejected_version >= stored.version
    if not expired and not rejected:
        return RefreshStep.USE
    if stored.status is ConnectionStatus.NEEDS_REVIEW:
        return RefreshStep.REFUSED
    lease_live = stored.refresh_owner is not None and (stored.refresh_expires_at or 0.0) > now
    return RefreshStep.WAIT if lease_live else RefreshStep.TAKE


def token_call_timeout(now: float, *, deadline: float | None, lease_expires_at: float, longest: float) -> float | None:
    """How long the token call may take: within the caller's deadline, and ending well inside the lease
    (so its answer is stored before anyone may take over). ``None`` when too little time is left."""
    limit = min(longest, lease_expires_at - _STORE_MARGIN_SECONDS - now)
    if deadline is not None:
        limit = min(limit, deadline - now)
    return limit if limit >= _MIN_TOKEN_CALL_SECONDS else None


def poll_delay(polls_done: int, now: float, wait_until: float) -> float:
    """The next pause of a waiting instance: short at first, doubling to a bound, never past ``wait_until``."""
    delay = min(_POLL_FIRST_SECONDS * 2.0 ** min(polls_done, 10), _POLL_MAX_SECONDS)
    return max(min(delay, wait_until - now), 0.0)


class CredentialKeeper:
    """Hands the engine a connection's usable credentials, refreshing OAuth2 tokens once across instances."""

    def __init__(self, store: RefreshStore, vault: CredentialVault, clock: Clock, settings: Settings) -> None:
        self._store = store
        self._vault = vault
        self._clock = clock
        self._lease_seconds = float(settings.token_refresh_lease_seconds)

    @property
    def vault(self) -> CredentialVault:
        return self._vault

    def open(self, connection: Connection) -> dict[str, Any]:
        """The credentials as stored on ``connection``, without any refresh (one cached data key per version)."""
        return self._vault.open(connection.sealed_credentials, connection.user_id, connection.connection_id)

    def credentials_for(
        self, connection: Connection, provider: Provider, *, deadline: float | None, rejected: bool = False
    ) -> Mapping[str, Any]:
        """Credentials to call ``provider`` with, refreshed first when its token client says so.

        ``rejected``: the provider just answered 401 to the credentials of
        ``connection.credentials_version``; they are refreshed even if they look valid, unless
        newer ones were stored meanwhile (those are returned instead). Raises
        ``ProviderGrantError`` (the connection is NEEDS_REVIEW by then), the token endpoint's
        ``ProviderError``, or ``TokenRefreshPendingError`` when another instance's refresh did
        not finish before ``deadline``.
        """
        credentials = self.open(connection)
        client = token_client_of(provider)
        if client is None:
            return credentials
        if not rejected and not client.needs_refresh(credentials, self._clock.now()):
            return credentials  # the hot path: no DynamoDB read, no KMS call once the data key is cached
        rejected_version = connection.credentials_version if rejected else None
        return self._settle(connection, client, deadline, rejected_version)

    def _settle(
        self, connection: Connection, client: TokenClient, deadline: float | None, rejected_version: int | None
    ) -> Mapping[str, Any]:
        user_id, connection_id = connection.user_id, connection.connection_id
        started = self._clock.now()
        give_up_at = deadline if deadline is not None else started + 2 * self._lease_seconds
        opened: tuple[str, dict[str, Any]] | None = None
        polls = 0
        for _ in range(_MAX_ROUNDS):
            stored = self._store.stored_credentials(user_id, connection_id)
            if stored is None:
                raise NotFoundError(f"connection {connection_id!r} was deleted")
            if opened is None or opened[0] != stored.sealed:
                opened = (stored.sealed, self._vault.open(stored.sealed, user_id, connection_id))
            credentials = opened[1]
            now = self._clock.now()
            step = refresh_step(
                stored, expired=client.needs_refresh(credentials, now), rejected_version=rejected_version, now=now
            )
            if step is RefreshStep.USE:
                return credentials
            if step is RefreshStep.REFUSED:
                raise ProviderGrantError(stored.status_reason or REFUSED_REASON)
            if step is RefreshStep.TAKE:
                refreshed = self._refresh(connection, client, stored, credentials, deadline)
                if refreshed is not None:
                    return refreshed
                continue  # someone else's lease, or newer credentials: look again
            if now >= give_up_at:
                break
            wait_until = min(give_up_at, stored.refresh_expires_at or now)
            self._clock.sleep(poll_delay(polls, now, wait_until))
            polls += 1
        raise TokenRefreshPendingError(
            "another instance is refreshing this connection's token and did not finish in time"
        )

    def _refresh(
        self,
        connection: Connection,
        client: TokenClient,
        stored: StoredCredentials,
        credentials: Mapping[str, Any],
        deadline: float | None,
    ) -> dict[str, Any] | None:
        """Take the lease and refresh; ``None`` when the lease was not ours or our answer was fenced out."""
        user_id, connection_id = connection.user_id, connection.connection_id
        now = self._clock.now()
        timeout = token_call_timeout(
            now, deadline=deadline, lease_expires_at=now + self._lease_seconds, longest=self._lease_seconds / 2
        )
        if timeout is None:
            raise TokenRefreshPendingError("too little time is left to refresh this connection's token")
        owner = f"refresh:{uuid.uuid4().hex[:16]}"
        try:
            self._store.take_refresh_lease(
                user_id, connection_id, owner, seen_version=stored.version, now=now, ttl_seconds=self._lease_seconds
            )
        except RefreshNotWonError:
            return None
        try:
            # The data key comes first: once the refresh token is spent, storing its successor must not need KMS.
            sealer = self._vault.sealer(user_id, connection_id)
            grant = client.refresh(credentials, timeout_seconds=timeout, now=now)
        except ProviderGrantError:
            if self._store.refuse_refresh(user_id, connection_id, seen_version=stored.version, reason=REFUSED_REASON):
                logger.warning("connection %s/%s needs review: refresh token refused", user_id, connection_id)
                raise
            # The user connected again while we asked: their credentials are the ones to use.
            self._store.release_refresh_lease(user_id, connection_id, owner)
            return None
        except BaseException:
            with contextlib.suppress(Exception):  # the next caller may try at once, not after the lease TTL
                self._store.release_refresh_lease(user_id, connection_id, owner)
            raise
        refreshed = grant.merged_into(credentials)
        try:
            version = self._store.finish_refresh(
                user_id, connection_id, owner, seen_version=stored.version, sealed=sealer.seal(refreshed)
            )
        except CredentialsChangedError:
            logger.warning("token refresh of %s/%s was overtaken; using the stored credentials", user_id, connection_id)
            return None
        logger.info("token refreshed for %s/%s (credentials version %d)", user_id, connection_id, version)
        return refreshed


__all__ = [
    "REFUSED_REASON",
    "CredentialKeeper",
    "RefreshStep",
    "TokenRefreshPendingError",
    "poll_delay",
    "refresh_step",
    "token_call_timeout",
]
