"""An identity provider for the token tests: RSA and EC keys made in the test, a JWKS served on 127.0.0.1.

``JwksServer`` answers ``GET /jwks.json`` from a thread while in a ``with`` block and counts the
fetches; ``fail_with`` makes it answer an error status (or a body that is not JSON) instead.
``SigningKey.token`` signs claims the way Cognito or Auth0 would (``kid`` in the header).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool"
AUDIENCE = "smart-sync-test-client"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private_key: Any

    @classmethod
    def rsa(cls, kid: str = "rsa-1") -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str = "ec-1") -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.algorithm.startswith("RS") else ECAlgorithm
        public: dict[str, Any] = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def token(self, claims: dict[str, Any], *, kid: str | None = None, algorithm: str | None = None) -> str:
        headers = {"kid": self.kid if kid is None else kid}
        return jwt.encode(claims, self.private_key, algorithm=algorithm or self.algorithm, headers=headers)


def idp_claims(subject: str, now: float, *, ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    return {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": int(now) + ttl, **extra}


class JwksServer:
    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.fail_with: int | str | None = None
        """An HTTP status to answer with, or a raw body that is not a JWKS."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.fetches += 1
                failure = outer.fail_with
                if isinstance(failure, int):
                    self._send(failure, b"{}")
                elif isinstance(failure, str):
                    self._send(200, failure.encode())
                else:
                    self._send(200, json.dumps({"keys": [key.jwk() for key in outer.keys]}).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/jwks.json"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
