"""Which key checks a bearer token: the one place that turns a token's ``alg`` into a key.

- ``HS256``: the secret of ``jwt_secret.py``, and only when one is configured.
- an asymmetric algorithm of ``Settings.jwt_algorithms``: the JWKS key named by the token's ``kid``
  (``jwks.py``), and only when ``SMART_SYNC_JWKS_URL`` is set.
- anything else (``none``, ``HS384``, an HS256 token while only a JWKS is configured): refused.

An HS256 token is never checked against a JWKS key, so a token signed with a provider's public key
as an HMAC secret (the classic algorithm confusion) fails. Building ``TokenKeys`` does no I/O; the
settings are checked on every use (cheap), so a misconfiguration answers every request, /health aside.
"""

from __future__ import annotations

import threading
from typing import Any

from jwt import PyJWK

from chalicelib.domain.config import ConfigurationError, Settings
from chalicelib.domain.errors import AuthenticationError
from chalicelib.store.jwks import JwksClientFactory, JwksKeySource, check_jwks_url, parse_algorithms
from chalicelib.store.jwt_secret import ClientFactory, JwtSecretSource

HMAC_ALGORITHM = "HS256"
RUNTIMES = ("aws", "local")


class TokenKeys:
    def __init__(
        self,
        settings: Settings,
        *,
        ssm_client: ClientFactory | None = None,
        secrets_client: ClientFactory | None = None,
        jwks_client: JwksClientFactory | None = None,
    ) -> None:
        self._settings = settings
        self._secret = JwtSecretSource(settings, ssm_client=ssm_client, secrets_client=secrets_client)
        self._jwks_client = jwks_client
        self._jwks: JwksKeySource | None = None
        self._checked = False
        self._lock = threading.Lock()

    def check_settings(self) -> None:
        """Raises ``ConfigurationError`` naming the setting; remembers success (the settings never change)."""
        if self._checked:
            return
        with self._lock:  # the local runner's threads may all ask first
            if not self._checked:
                self._check()
                self._checked = True

    def _check(self) -> None:
        settings = self._settings
        if settings.runtime not in RUNTIMES:
            raise ConfigurationError(f"SMART_SYNC_RUNTIME must be one of {', '.join(RUNTIMES)}")
        self._secret.check_settings()
        if settings.jwks_url:
            check_jwks_url(settings.jwks_url)
            if not settings.jwt_issuer or not settings.jwt_audience:
                raise ConfigurationError(
                    "SMART_SYNC_JWKS_URL needs SMART_SYNC_JWT_ISSUER and SMART_SYNC_JWT_AUDIENCE to be set"
                )
            self._jwks = JwksKeySource(settings.jwks_url, parse_algorithms(settings.jwt_algorithms), self._jwks_client)
        elif not self._secret.configured:
            raise ConfigurationError(
                "no token key configured: set SMART_SYNC_JWT_SECRET_PARAMETER (HS256 from SSM or Secrets Manager), "
                "SMART_SYNC_JWKS_URL (RS256/ES256), or for the local run SMART_SYNC_JWT_SECRET"
            )
        if settings.jwt_max_token_bytes < 1 or settings.jwt_max_lifetime_seconds < 1:
            raise ConfigurationError(
                "SMART_SYNC_JWT_MAX_TOKEN_BYTES and SMART_SYNC_JWT_MAX_LIFETIME_SECONDS must be at least 1"
            )

    def key_for(self, header: dict[str, Any]) -> tuple[str | PyJWK, str]:
        """The key and the one algorithm to check a token with this (unverified) header."""
        self.check_settings()
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthenticationError("token header has no algorithm")
        if alg == HMAC_ALGORITHM and self._secret.configured:
            secret = self._secret.secret()
            if secret is not None:
                return secret, alg
        if self._jwks is not None and alg in self._jwks.algorithms:
            return self._jwks.key_for(header.get("kid"), alg), alg
        raise AuthenticationError("token algorithm is not accepted")
