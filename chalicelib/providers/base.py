"""The provider port: what the sync engine needs from an upstream API.

A provider knows its data types (with default policies) and can fetch one page
of one data type for one connection. It never touches storage, never reads the
clock on its own and never sleeps except through the ``FetchContext`` it is
handed, so the engine stays in charge of time, checkpoints and budgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from chalicelib.domain.upstream import DataTypeSpec, FetchRequest, Page, TokenGrant


class TokenClient(Protocol):
    """An OAuth2 refresh-token grant against one provider's token endpoint (HTTP only, no storage)."""

    def needs_refresh(self, credentials: Mapping[str, Any], now: float) -> bool:
        """``True`` when the access token is missing or expires within the refresh skew."""
        ...

    def refresh(self, credentials: Mapping[str, Any], *, timeout_seconds: float, now: float) -> TokenGrant:
        """Spend the refresh token once. ``ProviderGrantError`` on ``invalid_grant``, ``ProviderError`` otherwise."""
        ...


def token_client_of(provider: Provider) -> TokenClient | None:
    """The provider's OAuth2 client, if its auth kind is ``oauth2`` (an optional ``token_client`` attribute)."""
    client: TokenClient | None = getattr(provider, "token_client", None)
    return client


class Provider(Protocol):
    name: str

    def data_types(self) -> Mapping[str, DataTypeSpec]: ...

    def fetch_page(self, request: FetchRequest) -> Page: ...

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        """Raise ``ValidationError`` when credentials/settings can never work."""
        ...
