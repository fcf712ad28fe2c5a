"""The auth port of a ``rest`` provider: the request to sign, the ``RequestAuth`` protocol, and
what every auth kind shares (credential checks, header replacement).

``rest.py`` builds an ``OutgoingRequest`` for every call, asks ``RequestAuth.apply`` for the
signed copy, and sends exactly that (the query string is ``urlencode(request.query)``, in
order, so a signature over it stays valid). After a refused call it asks ``recover`` whether
one more attempt is worth it (a clock-skew refusal mended by learning the server's time).

The kinds live in ``auth_header.py`` (``header``, ``oauth2``) and ``auth_hmac.py`` (``hmac``
styles, signing with the pure functions of ``hmac_signing.py``); ``auth_config.py`` reads the
providers file's ``auth`` entry into one of them. Nothing here logs, and no error quotes a
credential, a signature, a token or a URL: errors name the provider and the credential or
configuration key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import ProviderAuthError
from chalicelib.providers.base import TokenClient
from chalicelib.providers.http import header_safe


@dataclass(frozen=True)
class OutgoingRequest:
    method: str
    """``GET``, ``POST``..."""
    origin: str
    """``scheme://host[:port]`` of the provider's ``base_url``."""
    path: str
    """The path from the host on, base_url's own prefix included (``/developer/v2/recovery``)."""
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


class RequestAuth(Protocol):
    token_client: TokenClient | None
    """Set for ``oauth2`` (the engine refreshes through it); ``None`` for every other kind."""

    def validate(self, credentials: Mapping[str, Any]) -> None:
        """``ValidationError`` naming what is missing or unusable (never quoting a value)."""
        ...

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        """The request as it must be sent: auth headers added, query signed."""
        ...

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        """After a refused call: fix what can be fixed locally (e.g. Binance -1021 clock skew) and say
        whether one more attempt is worth it. ``fetch_json(path)`` GETs an unauthenticated path of
        the provider (its server time)."""
        ...


def credential_text(value: Any) -> str | None:
    """A credential as text: a non-blank string or a number; ``None`` otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    return None


def with_auth(
    request: OutgoingRequest,
    headers: Mapping[str, str],
    query: Iterable[tuple[str, str]] | None = None,
) -> OutgoingRequest:
    """``request`` with ``headers`` set (replacing any same-named header, whatever its case)."""
    replaced = {name.lower() for name in headers}
    merged = {name: value for name, value in request.headers.items() if name.lower() not in replaced}
    merged.update(headers)
    return dataclasses.replace(request, headers=merged, query=request.query if query is None else tuple(query))


class Credentials:
    """Checks one auth kind's credential fields; messages name fields, never values."""

    def __init__(self, provider: str, required: tuple[str, ...], in_headers: tuple[str, ...]) -> None:
        self.provider = provider
        self.required = required
        self.in_headers = in_headers
        """Fields sent as header values, which must be printable Latin-1 without line breaks."""

    def validate(self, credentials: Mapping[str, Any]) -> None:
        if not isinstance(credentials, Mapping):
            raise ValidationError("credentials must be a JSON object")
        missing = [name for name in self.required if credential_text(credentials.get(name)) is None]
        if missing:
            raise ValidationError(
                f"provider {self.provider!r} needs credential(s) {', '.join(missing)} (non-empty string or number)"
            )
        broken = [name for name in self.in_headers if not header_safe(str(credential_text(credentials.get(name))))]
        if broken:
            raise ValidationError(
                f"provider {self.provider!r}: credential(s) {', '.join(broken)} must be printable Latin-1 text "
                "without line breaks (HTTP headers cannot carry anything else)"
            )

    def values(self, credentials: Mapping[str, Any]) -> dict[str, str]:
        """The fields as text, or ``ProviderAuthError`` naming the unusable ones (the connection is broken)."""
        values = {name: credential_text(credentials.get(name)) for name in self.required}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise ProviderAuthError(f"provider {self.provider!r}: connection lacks credential(s) {', '.join(missing)}")
        texts = {name: value for name, value in values.items() if value is not None}
        broken = [name for name in self.in_headers if not header_safe(texts[name])]
        if broken:
            raise ProviderAuthError(
                f"provider {self.provider!r}: credential(s) {', '.join(broken)} cannot be sent in an HTTP header"
            )
        return texts


class CredentialAuth:
    """What every auth kind shares: its provider, the credential fields it checks, and the headers
    and query parameters it owns (``rest_config.py`` refuses a default header or a query parameter
    that would shadow them)."""

    token_client: TokenClient | None = None

    def __init__(
        self,
        provider: str,
        credentials: Credentials,
        *,
        managed_headers: tuple[str, ...],
        reserved_query_params: tuple[str, ...] = (),
    ) -> None:
        self.provider = provider
        self.managed_headers = managed_headers
        self.reserved_query_params = reserved_query_params
        self._credentials = credentials

    def validate(self, credentials: Mapping[str, Any]) -> None:
        self._credentials.validate(credentials)

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        return False
