"""Bearer-token auth: HS256 (a secret) and RS256/ES256 (a JWKS). A user token reaches only its own ``user_id``.

Where the keys come from, and which algorithm may use which key, is ``chalicelib/store/token_keys.py``;
the claims' rules (times against the injected clock, audience, subject, scope) are ``claims.py``.
docs/auth.md says how to configure each. A token never appears in an answer, an error or a log line.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from chalicelib.api.claims import check_audience, check_times, scopes_of, subject_of
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import AuthenticationError, ForbiddenError
from chalicelib.store.token_keys import TokenKeys

DEFAULT_TTL_SECONDS = 86400


@dataclass(frozen=True)
class Principal:
    subject: str
    operator: bool


def authenticate(
    headers: Mapping[str, str], settings: Settings, now: float, keys: TokenKeys | None = None
) -> Principal:
    """``keys``: the container's ``token_keys``; without it, one shared per key configuration (bench, old callers)."""
    keys = keys if keys is not None else shared_token_keys(settings)
    keys.check_settings()
    token = _bearer_token(headers, settings.jwt_max_token_bytes)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise AuthenticationError("token is not valid") from None
    key, algorithm = keys.key_for(header)
    # Every time check is in check_times, against the injected clock: PyJWT reads no time here.
    options = {
        "require": ["sub", "exp"],
        "verify_aud": False,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
    }
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=settings.jwt_issuer,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.InvalidTokenError:
        raise AuthenticationError("token is not valid") from None
    check_times(claims, now, settings.jwt_max_lifetime_seconds)
    check_audience(claims, settings.jwt_audience)
    subject = subject_of(claims)
    return Principal(subject=subject, operator=settings.operator_scope in scopes_of(claims))


def _bearer_token(headers: Mapping[str, str], max_bytes: int) -> str:
    header = headers.get("authorization") or headers.get("Authorization")
    if not header:
        raise AuthenticationError("missing Authorization: Bearer <token> header")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Authorization header must be 'Bearer <token>'")
    if len(token.encode("utf-8", "surrogatepass")) > max_bytes:
        raise AuthenticationError(f"token is longer than {max_bytes} bytes")
    return token


def authorize_user(principal: Principal, user_id: str) -> None:
    if principal.operator or principal.subject == user_id:
        return
    raise ForbiddenError("this token may not access another user's data")


def issue_token(
    settings: Settings, subject: str, now: float, *, operator: bool = False, ttl_seconds: int = DEFAULT_TTL_SECONDS
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


_shared: dict[tuple[object, ...], TokenKeys] = {}
_shared_lock = threading.Lock()


def shared_token_keys(settings: Settings) -> TokenKeys:
    """One ``TokenKeys`` per key configuration in this process, so its secret and JWKS caches outlive a request."""
    identity = (
        settings.jwt_secret,
        settings.jwt_secret_parameter,
        settings.jwt_secret_max_age_seconds,
        settings.jwks_url,
        settings.jwt_algorithms,
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.runtime,
        settings.region,
        settings.jwt_max_token_bytes,
        settings.jwt_max_lifetime_seconds,
    )
    with _shared_lock:
        keys = _shared.get(identity)
        if keys is None:
            keys = _shared[identity] = TokenKeys(settings)
        return keys


def forget_shared_token_keys() -> None:
    """Tests: drop the per-process keys (a later test may get a loopback JWKS on a port an earlier one used)."""
    with _shared_lock:
        _shared.clear()
