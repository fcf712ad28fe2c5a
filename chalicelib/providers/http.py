"""One guarded HTTP call to a provider: no redirects, a timeout, a bounded body.

Every upstream is treated as hostile. ``requests`` follows redirects by
default and strips only ``Authorization`` when the host changes, so a credential header
such as ``X-Api-Key`` would follow a 3xx to any host: redirects are never followed here,
and a 3xx answer is an upstream error. The body is read in chunks and abandoned past
``max_bytes``, so a provider cannot make a Lambda buffer an endless answer.

Errors never quote the URL (it may carry a signature, a page token or a watermark) and
are raised ``from None`` so the ``requests`` exception, whose text does, is not chained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from chalicelib.domain.upstream import ProviderError, ProviderTimeoutError

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024
_MAX_HEADERS = 64
MAX_HEADER_VALUE = 8192
"""Long enough for a ``Link`` header with several relations (GitHub's run to ~1 KB)."""
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An RFC 9110 token: what a header name (and a Link parameter name or bare value) may be."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    """Lower-cased names; at most 64 headers, each value cut to ``MAX_HEADER_VALUE`` characters."""
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.body.decode("utf-8"))

    def json_or_none(self) -> Any:
        """The body as JSON, or ``None`` when it is not (an error answer's body is only a hint)."""
        try:
            return self.json()
        except ValueError:  # UnicodeDecodeError included
            return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def header_safe(value: str) -> bool:
    """Can this text go in an HTTP header as it is: Latin-1, no line break, no NUL (no header injection)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(character in value for character in "\r\n\x00")


def _bounded_headers(raw: Mapping[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if len(headers) >= _MAX_HEADERS:
            break
        headers[name.lower()] = str(value)[:MAX_HEADER_VALUE]
    return headers


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    where: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    data: bytes | str | Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> HttpAnswer:
    """Send one request exactly as given (the URL already carries its query string).

    ``where`` names the call in error messages ("provider 'whoop' data type 'sleep'").
    Raises ``ProviderTimeoutError``, or ``ProviderError`` for connection failures (retryable),
    redirects (not followed, not retryable) and bodies over ``max_bytes`` (not retryable).
    """
    if timeout <= 0:
        raise ProviderTimeoutError(f"{where}: no time left for the request")
    try:
        response = session.request(
            method,
            url,
            headers=dict(headers or {}),
            data=data,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout:
        raise ProviderTimeoutError(f"{where}: no answer within {timeout:g}s") from None
    except requests.ConnectionError:
        raise ProviderError(f"{where}: could not connect", retryable=True) from None
    except requests.RequestException as exc:
        raise ProviderError(f"{where}: request failed ({type(exc).__name__})", retryable=False) from None
    try:
        status = response.status_code
        answer_headers = _bounded_headers(response.headers)
        if 300 <= status < 400:
            # Never followed: a credential header would go wherever the provider points.
            error = ProviderError(
                f"{where}: HTTP {status} redirect not followed (provider calls stay on the configured origin)",
                retryable=False,
                status_code=status,
            )
            error.response_headers = answer_headers
            raise error
        body = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                body += chunk
                if len(body) > max_bytes:
                    error = ProviderError(
                        f"{where}: HTTP {status} answer is larger than {max_bytes} bytes", retryable=False
                    )
                    error.response_headers = answer_headers
                    raise error
        except requests.Timeout:
            raise ProviderTimeoutError(f"{where}: the answer did not arrive within {timeout:g}s") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise ProviderError(f"{where}: broken response ({type(exc).__name__})", retryable=True) from None
        except requests.ConnectionError:
            raise ProviderError(f"{where}: the connection broke while reading the answer", retryable=True) from None
        return HttpAnswer(status=status, headers=answer_headers, body=bytes(body))
    finally:
        response.close()
