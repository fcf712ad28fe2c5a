"""The bearer-style auth kinds: ``header`` (a template filled from credentials) and ``oauth2``.

Both put the credential in one header; ``oauth2`` also carries the token client the engine
refreshes through (``oauth2.py``). Neither can mend a refused call itself: ``recover`` says no.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import ProviderAuthError
from chalicelib.providers.auth import CredentialAuth, Credentials, OutgoingRequest, credential_text, with_auth
from chalicelib.providers.base import TokenClient
from chalicelib.providers.http import header_safe
from chalicelib.providers.oauth2 import OAuth2Config, OAuth2TokenClient, parse_expires_at

DEFAULT_AUTH_HEADER = "Authorization"


class HeaderAuth(CredentialAuth):
    """A header filled from the connection's credentials (``Bearer {access_token}``, ``{api_key}``...)."""

    def __init__(self, provider: str, header: str, template: str, fields: tuple[str, ...]) -> None:
        super().__init__(provider, Credentials(provider, fields, fields), managed_headers=(header,))
        self.header = header
        self.template = template
        self.fields = fields

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return with_auth(request, {self.header: self.template.format_map(values)})


class OAuth2Auth(CredentialAuth):
    """``Authorization: Bearer {access_token}``; the engine refreshes the token through ``token_client``.

    A refused token is renewed by the engine (single flight across instances), never by ``recover``."""

    def __init__(self, provider: str, config: OAuth2Config, *, session: requests.Session | None = None) -> None:
        super().__init__(
            provider,
            Credentials(provider, ("access_token", "refresh_token"), ("access_token",)),
            managed_headers=(DEFAULT_AUTH_HEADER,),
        )
        self.config = config
        self.client = OAuth2TokenClient(config, session=session)
        self.token_client: TokenClient | None = self.client

    def validate(self, credentials: Mapping[str, Any]) -> None:
        super().validate(credentials)
        expires_at = credentials.get("expires_at")
        if expires_at is not None and parse_expires_at(expires_at) is None:
            raise ValidationError(
                f"provider {self.provider!r}: credential expires_at must be epoch seconds or an ISO-8601 time"
            )

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        access_token = credential_text(credentials.get("access_token"))
        if access_token is None:
            raise ProviderAuthError(f"provider {self.provider!r}: connection has no access_token (refresh first)")
        if not header_safe(access_token):
            raise ProviderAuthError(f"provider {self.provider!r}: the access_token cannot be sent in an HTTP header")
        return with_auth(request, {DEFAULT_AUTH_HEADER: f"Bearer {access_token}"})
