"""The HMAC request signatures of Binance, OKX and SnapTrade, as pure functions.

Each takes the request, the credential values and a timestamp, and returns the request as it
must be sent; no clock, no environment, no I/O (``auth_hmac.py`` supplies all three). Signing an
already signed request again replaces what the signature owns, so it is idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from chalicelib.domain.upstream import ProviderError
from chalicelib.providers.auth import OutgoingRequest, with_auth
from chalicelib.providers.instants import ISO8601, format_instant

DEFAULT_BINANCE_KEY_HEADER = "X-MBX-APIKEY"
DEFAULT_BINANCE_RECV_WINDOW_MS = 5000
MAX_BINANCE_RECV_WINDOW_MS = 60000
"""Binance refuses a larger recvWindow."""
BINANCE_SIGNED_PARAMS = ("recvWindow", "timestamp", "signature")
"""The query parameters a Binance signature adds (an earlier value of each is replaced)."""
OKX_HEADERS = ("OK-ACCESS-KEY", "OK-ACCESS-SIGN", "OK-ACCESS-TIMESTAMP", "OK-ACCESS-PASSPHRASE")
SNAPTRADE_SIGNED_PARAMS = ("clientId", "timestamp", "userId", "userSecret")
"""The query parameters a SnapTrade signature adds (an earlier value of each is replaced)."""


def _hmac_sha256(key: str, message: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()


def _without_params(query: Iterable[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    """The query without the parameters auth owns, so signing an already signed request is idempotent."""
    owned = set(names)
    return [(name, value) for name, value in query if name not in owned]


def okx_timestamp(epoch_ms: int) -> str:
    """OKX's ``OK-ACCESS-TIMESTAMP``: ISO-8601 UTC with milliseconds and ``Z`` (``2020-12-08T09:08:57.715Z``)."""
    return format_instant(epoch_ms, ISO8601)


def binance_signed(
    request: OutgoingRequest,
    *,
    api_key: str,
    api_secret: str,
    timestamp_ms: int,
    recv_window_ms: int = DEFAULT_BINANCE_RECV_WINDOW_MS,
    key_header: str = DEFAULT_BINANCE_KEY_HEADER,
) -> OutgoingRequest:
    """Binance SIGNED: ``recvWindow`` and ``timestamp`` added, then ``signature`` =
    hex HMAC-SHA256 of the query string (followed by a form body, if any) appended last."""
    query = _without_params(request.query, BINANCE_SIGNED_PARAMS)
    query += [("recvWindow", str(recv_window_ms)), ("timestamp", str(timestamp_ms))]
    # Binance signs the query string followed directly by the request body ("totalParams").
    payload = urlencode(query).encode("ascii") + (request.body or b"")
    query.append(("signature", hmac.new(api_secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()))
    return with_auth(request, {key_header: api_key}, query)


def okx_signed(
    request: OutgoingRequest, *, api_key: str, api_secret: str, passphrase: str, timestamp_ms: int
) -> OutgoingRequest:
    """OKX v5: ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256 of timestamp + METHOD + path(?query) + body."""
    timestamp = okx_timestamp(timestamp_ms)
    request_path = request.path + (f"?{urlencode(request.query)}" if request.query else "")
    prehash = (timestamp + request.method.upper() + request_path).encode("utf-8") + (request.body or b"")
    signature = base64.b64encode(_hmac_sha256(api_secret, prehash)).decode("ascii")
    return with_auth(
        request,
        {
            "OK-ACCESS-KEY": api_key,
            "OK-ACCESS-SIGN": signature,
            "OK-ACCESS-TIMESTAMP": timestamp,
            "OK-ACCESS-PASSPHRASE": passphrase,
        },
    )


def snaptrade_signed(
    request: OutgoingRequest,
    *,
    client_id: str,
    consumer_key: str,
    user_id: str,
    user_secret: str,
    timestamp_s: int,
) -> OutgoingRequest:
    """SnapTrade: ``clientId``, ``timestamp``, ``userId``, ``userSecret`` added to the query; header
    ``Signature`` = base64 HMAC-SHA256 (consumer key) of the canonical JSON
    ``{"content": body or null, "path": path, "query": query string}`` (sorted keys, no spaces),
    as SnapTrade's request-signature docs and its Python SDK compute it."""
    query = _without_params(request.query, SNAPTRADE_SIGNED_PARAMS)
    query += [
        ("clientId", client_id),
        ("timestamp", str(timestamp_s)),
        ("userId", user_id),
        ("userSecret", user_secret),
    ]
    content: Any = None
    if request.body is not None and request.body.strip():
        try:
            content = json.loads(request.body)
        except ValueError:
            raise ProviderError("SnapTrade signs JSON request bodies only", retryable=False) from None
        if content == {}:
            content = None  # the SDK signs an empty object as null
    signed_content = json.dumps(
        {"content": content, "path": request.path, "query": urlencode(query)}, sort_keys=True, separators=(",", ":")
    )
    signature = base64.b64encode(_hmac_sha256(consumer_key, signed_content.encode("utf-8"))).decode("ascii")
    return with_auth(request, {"Signature": signature}, query)
