"""Bearer-token auth (v1: HS256 JWT). A user token reaches only its own ``user_id``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from chalicelib.domain.config import ConfigurationError, Settings
from chalicelib.domain.errors import AuthenticationError, ForbiddenError

_LEEWAY_SECONDS = 30
_MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Principal:
    subject: str
    operator: bool


def authenticate(headers: Mapping[str, str], settings: Settings, now: float) -> Principal:
    if len(settings.jwt_secret) < _MIN_SECRET_LENGTH:
        raise ConfigurationError(f"SMART_SYNC_JWT_SECRET must be set to at least {_MIN_SECRET_LENGTH} characters")
    header = headers.get("authorization") or headers.get("Authorization")
    if not header:
        raise AuthenticationError("missing Authorization: Bearer <token> header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization header must be 'Bearer <token>'")
    # Expiry is checked against the injected clock below, not PyJWT's own reading of time.
    options = {"require": ["sub", "exp"], "verify_aud": settings.jwt_audience is not None, "verify_exp": False}
    try:
        claims = jwt.decode(
            token.strip(),
            settings.jwt_secret,
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.InvalidTokenError:
        raise AuthenticationError("token is not valid") from None
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or expires + _LEEWAY_SECONDS < now:
        raise AuthenticationError("token has expired")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthenticationError("token has no subject")
    scopes = claims.get("scope", "")
    scope_list = scopes.split() if isinstance(scopes, str) else list(scopes or [])
    return Principal(subject=subject, operator=settings.operator_scope in scope_list)


def authorize_user(principal: Principal, user_id: str) -> None:
    if principal.operator or principal.subject == user_id:
        return
    raise ForbiddenError("this token may not access another user's data")


def issue_token(
    settings: Settings, subject: str, now: float, *, operator: bool = False, ttl_seconds: int = 86400
) -> str:
    """For the local run, the tests and the benchmark: production tokens come from your identity provider."""
    claims: dict[str, object] = {"sub": subject, "iat": int(now), "exp": int(now + ttl_seconds)}
    if operator:
        claims["scope"] = settings.operator_scope
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
