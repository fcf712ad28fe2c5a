"""An identity provider's public keys (JWKS, Cognito or Auth0 style), fetched with PyJWT's ``PyJWKClient``.

The key set is fetched on the first token that needs it and kept ``JWKS_LIFESPAN_SECONDS``; a token
naming a key id the set does not hold makes at most one refetch per ``JWKS_REFRESH_COOLDOWN_SECONDS``
(a new signing key is picked up, and a stream of made-up key ids cannot make every request fetch).
Only signing keys whose algorithm is one of ``Settings.jwt_algorithms`` (asymmetric only) are used.
Building ``JwksKeySource`` does no I/O.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK, PyJWKClient

from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import AuthenticationError, AuthUnavailableError

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
JWKS_LIFESPAN_SECONDS = 300
JWKS_REFRESH_COOLDOWN_SECONDS = 30
JWKS_TIMEOUT_SECONDS = 5.0
"""A fetch happens inside an API request; API Gateway stops waiting at 29 s."""

JwksClientFactory = Callable[[str], PyJWKClient]


def parse_algorithms(raw: str) -> frozenset[str]:
    """``Settings.jwt_algorithms``: names separated by spaces or commas, asymmetric ones only."""
    names = frozenset(raw.replace(",", " ").split())
    if not names:
        raise ConfigurationError("SMART_SYNC_JWT_ALGORITHMS must name at least one algorithm")
    unknown = sorted(names - ASYMMETRIC_ALGORITHMS)
    if unknown:
        allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
        raise ConfigurationError(f"SMART_SYNC_JWT_ALGORITHMS: {', '.join(unknown)} not accepted (one of {allowed})")
    return names


def check_jwks_url(url: str) -> None:
    """https, or http on a loopback address (the tests' and a local identity provider's)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigurationError("SMART_SYNC_JWKS_URL is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError("SMART_SYNC_JWKS_URL must not embed credentials")
    if not host:
        raise ConfigurationError("SMART_SYNC_JWKS_URL must be an absolute https URL")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return
    raise ConfigurationError("SMART_SYNC_JWKS_URL must use https (http is accepted only on a loopback address)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_client(url: str) -> PyJWKClient:
    return PyJWKClient(
        url,
        cache_jwk_set=True,
        lifespan=JWKS_LIFESPAN_SECONDS,
        timeout=JWKS_TIMEOUT_SECONDS,
        cooldown_duration=JWKS_REFRESH_COOLDOWN_SECONDS,
    )


class JwksKeySource:
    def __init__(self, url: str, algorithms: frozenset[str], client: JwksClientFactory | None = None) -> None:
        self._url = url
        self._algorithms = algorithms
        self._make_client = client or _default_client
        self._client: PyJWKClient | None = None
        self._lock = threading.Lock()

    @property
    def algorithms(self) -> frozenset[str]:
        return self._algorithms

    def key_for(self, kid: object, alg: str) -> PyJWK:
        """The published key ``kid``, usable with ``alg``; an unknown or unusable key is the token's fault (401)."""
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("token header has no key id (kid)")
        if alg not in self._algorithms:
            raise AuthenticationError("token algorithm is not accepted")
        client = self._pyjwk_client()
        unavailable = "the identity provider's keys could not be read right now; retry"
        try:
            # The set first, so a broken endpoint is told apart from a key id it does not publish.
            client.get_signing_keys()
        except (jwt.PyJWTError, ValueError):  # ValueError: an answer that is not JSON
            raise AuthUnavailableError(unavailable) from None
        try:
            key = client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise AuthUnavailableError(unavailable) from None
        except jwt.PyJWKClientError:
            raise AuthenticationError("token key id is not one of the identity provider's keys") from None
        except (jwt.PyJWTError, ValueError):  # the set changed under a refetch and is no longer usable
            raise AuthUnavailableError(unavailable) from None
        if key.algorithm_name not in self._algorithms or key.algorithm_name != alg:
            raise AuthenticationError("token algorithm does not match its key")
        return key

    def _pyjwk_client(self) -> PyJWKClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client(self._url)
        return self._client
