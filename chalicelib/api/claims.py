"""A verified token's claims, judged against the injected clock: times, audience, subject and scopes.

PyJWT checks only the signature and the issuer here; it never reads the time itself (every
time check below takes ``now`` from the caller's ``Clock``). A claim of the wrong type is the
token's fault, a 401, never a 500.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from chalicelib.domain.errors import AuthenticationError

LEEWAY_SECONDS = 30
"""Clock skew allowed between the token's issuer and this service, on ``exp``, ``nbf`` and ``iat``."""


def check_times(claims: Mapping[str, Any], now: float, max_lifetime_seconds: int) -> None:
    """``exp`` required and not past; ``nbf`` and ``iat`` not in the future; no token valid for too long."""
    expires = _time(claims, "exp")
    if expires is None:
        raise AuthenticationError("token has no expiry (exp)")
    if expires + LEEWAY_SECONDS < now:
        raise AuthenticationError("token has expired")
    not_before = _time(claims, "nbf")
    if not_before is not None and not_before > now + LEEWAY_SECONDS:
        raise AuthenticationError("token is not valid yet (nbf)")
    issued = _time(claims, "iat")
    if issued is not None and issued > now + LEEWAY_SECONDS:
        raise AuthenticationError("token was issued in the future (iat)")
    # Bounded from iat when there is one (its whole life), else from now (what is left of it).
    if expires - (issued if issued is not None else now) > max_lifetime_seconds:
        raise AuthenticationError(f"token is valid for longer than the {max_lifetime_seconds} s this service accepts")


def _time(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    # bool is an int to Python; NaN and infinity are JSON to Python's parser (and NaN never compares as past).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthenticationError(f"token claim {name} must be a number of seconds")
    return float(value)


def check_audience(claims: Mapping[str, Any], audience: str | None) -> None:
    """``aud`` names ``audience`` (a string, or a list holding it). Unset ``audience``: not checked.

    A Cognito access token has no ``aud``: it names its app client in ``client_id`` (with
    ``token_use`` ``access``), which then must equal ``audience``.
    """
    if audience is None:
        return
    if "aud" in claims:
        aud = claims["aud"]
        if isinstance(aud, str) and aud == audience:
            return
        if isinstance(aud, list) and all(isinstance(item, str) for item in aud) and audience in aud:
            return
    elif claims.get("token_use") == "access" and claims.get("client_id") == audience:
        return
    raise AuthenticationError("token is not meant for this service (aud)")


def subject_of(claims: Mapping[str, Any]) -> str:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthenticationError("token has no subject")
    return subject


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """``scope``: absent, a space-separated string (RFC 8693, Cognito, Auth0) or a list of strings."""
    if "scope" not in claims:
        return frozenset()
    scope = claims["scope"]
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list) and all(isinstance(item, str) for item in scope):
        return frozenset(scope)
    raise AuthenticationError("token scope must be a space-separated string or a list of strings")
