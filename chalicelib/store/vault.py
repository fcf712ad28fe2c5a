"""Connection credentials at rest: KMS envelope encryption.

Every write of a connection's credentials gets its own data key from KMS (GenerateDataKey,
AES_256). The credentials are encrypted here with AES-GCM under that key, and only the
KMS-encrypted copy of the key is stored next to the ciphertext. The AES-GCM associated data
and the KMS encryption context both name the user and the connection, so a blob copied onto
another connection cannot be opened there.

A warm Lambda keeps the data keys it has already unwrapped in a small LRU, keyed by the
encrypted key, so opening the same credentials again (every sync of the connection) costs no
KMS call. The KMS client is made on first use: importing this module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chalicelib.domain.errors import SmartSyncError
from chalicelib.domain.model import ConnectionStatus

ENVELOPE_VERSION = 1
_NONCE_BYTES = 12  # 96 bits, the size AES-GCM is specified for
_DATA_KEY_SPEC = "AES_256"
_DEFAULT_CACHE_SIZE = 128
_CONTEXT_PURPOSE = "connection-credentials"


class CredentialsError(SmartSyncError):
    """The connection's credentials could not be sealed or opened."""


class CredentialsUnavailableError(CredentialsError):
    """KMS did not answer, or refused to seal or open the credentials; trying later may work."""


class CredentialsUnreadableError(CredentialsError):
    """The stored credentials cannot be opened: altered, copied from another connection, or an unknown format."""


class CredentialsChangedError(SmartSyncError):
    """The connection's credentials changed meanwhile (a PUT, or another instance's token refresh)."""


class RefreshNotWonError(SmartSyncError):
    """Another instance holds the connection's token refresh, or the credentials changed since they were read."""


@dataclass(frozen=True)
class StoredCredentials:
    """The credential fields of one connection item as stored now (read consistently): a refresh's snapshot."""

    sealed: str = field(repr=False)
    version: int
    """Bumped by every credentials write (a PUT carrying credentials, a token refresh): the fence."""
    refresh_owner: str | None
    refresh_expires_at: float | None
    status: ConnectionStatus
    status_reason: str | None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _associated_data(user_id: str, connection_id: str) -> bytes:
    """What AES-GCM authenticates besides the ciphertext: the owner of the blob."""
    return json.dumps(
        {"v": ENVELOPE_VERSION, "user_id": user_id, "connection_id": connection_id}, separators=(",", ":")
    ).encode()


def _encryption_context(user_id: str, connection_id: str) -> dict[str, str]:
    """KMS binds the data key to the same owner (and CloudTrail shows whose key was unwrapped)."""
    return {"purpose": _CONTEXT_PURPOSE, "user_id": user_id, "connection_id": connection_id}


def _kms_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str) and code:
            return code
    return type(exc).__name__


@dataclass(frozen=True)
class Sealer:
    """One data key, fetched ahead of time: sealing with it needs no I/O.

    A token refresh gets its sealer before it spends the refresh token, so a KMS outage
    cannot lose the rotated token the provider hands back.
    """

    user_id: str
    connection_id: str
    key_arn: str
    encrypted_key: bytes = field(repr=False)
    plaintext_key: bytes = field(repr=False)

    def seal(self, credentials: Mapping[str, Any]) -> str:
        if not credentials:
            return ""
        try:
            plaintext = json.dumps(dict(credentials), separators=(",", ":"), sort_keys=True).encode()
        except (TypeError, ValueError):
            # The message would name the offending value's type only, but say nothing of the credentials.
            raise CredentialsError("credentials must be plain JSON values") from None
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(self.plaintext_key).encrypt(
            nonce, plaintext, _associated_data(self.user_id, self.connection_id)
        )
        envelope = {
            "v": ENVELOPE_VERSION,
            "key": self.key_arn,
            "dk": _b64(self.encrypted_key),
            "iv": _b64(nonce),
            "ct": _b64(ciphertext),
        }
        return json.dumps(envelope, separators=(",", ":"))


class CredentialVault:
    """Seals and opens connection credentials (KMS envelope encryption, AES-GCM)."""

    def __init__(
        self, kms_client_factory: Callable[[], Any], key_id: str, *, cache_size: int = _DEFAULT_CACHE_SIZE
    ) -> None:
        self._kms_client_factory = kms_client_factory
        self._key_id = key_id
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._cache_lock = threading.Lock()

    # --- sealing -----------------------------------------------------------------

    def sealer(self, user_id: str, connection_id: str) -> Sealer:
        """A fresh data key for one connection (one KMS GenerateDataKey)."""
        if not self._key_id:
            raise CredentialsUnavailableError("no KMS key is configured for credentials (SMART_SYNC_KMS_KEY_ID)")
        try:
            answer = self._kms().generate_data_key(
                KeyId=self._key_id,
                KeySpec=_DATA_KEY_SPEC,
                EncryptionContext=_encryption_context(user_id, connection_id),
            )
        except Exception as exc:  # botocore's errors: the code says enough, the message may name the key
            raise CredentialsUnavailableError(
                f"KMS could not make a data key for the credentials ({_kms_error_code(exc)})"
            ) from None
        encrypted = bytes(answer["CiphertextBlob"])
        plaintext = bytes(answer["Plaintext"])
        self._remember(encrypted, plaintext)  # the first open after a seal needs no KMS call either
        return Sealer(user_id, connection_id, str(answer["KeyId"]), encrypted, plaintext)

    def seal(self, credentials: Mapping[str, Any], user_id: str, connection_id: str) -> str:
        """The envelope to store for ``credentials`` (``""`` for none: no KMS call)."""
        if not credentials:
            return ""
        return self.sealer(user_id, connection_id).seal(credentials)

    # --- opening -----------------------------------------------------------------

    def open(self, sealed: str, user_id: str, connection_id: str) -> dict[str, Any]:
        """The credentials in ``sealed``; only the connection they were sealed for can open them."""
        if not sealed:
            return {}
        try:
            envelope = json.loads(sealed)
            if not isinstance(envelope, dict) or envelope.get("v") != ENVELOPE_VERSION:
                raise ValueError("unknown envelope version")
            key_arn = envelope["key"]
            encrypted_key = _unb64(envelope["dk"])
            nonce = _unb64(envelope["iv"])
            ciphertext = _unb64(envelope["ct"])
            if not isinstance(key_arn, str) or len(nonce) != _NONCE_BYTES:
                raise ValueError("malformed envelope")
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise CredentialsUnreadableError("the stored credentials are not in a known format") from None
        data_key = self._data_key(encrypted_key, key_arn, user_id, connection_id)
        try:
            plaintext = AESGCM(data_key).decrypt(nonce, ciphertext, _associated_data(user_id, connection_id))
        except InvalidTag:
            raise CredentialsUnreadableError(
                "the stored credentials were altered or belong to another connection"
            ) from None
        try:
            credentials = json.loads(plaintext)
        except ValueError:
            credentials = None
        if not isinstance(credentials, dict):
            raise CredentialsUnreadableError("the stored credentials are not a JSON object")
        return credentials

    def _data_key(self, encrypted_key: bytes, key_arn: str, user_id: str, connection_id: str) -> bytes:
        with self._cache_lock:
            cached = self._cache.get(encrypted_key)
            if cached is not None:
                self._cache.move_to_end(encrypted_key)
                return cached
        try:
            answer = self._kms().decrypt(
                CiphertextBlob=encrypted_key,
                KeyId=key_arn,  # only the key that sealed it may open it
                EncryptionContext=_encryption_context(user_id, connection_id),
            )
        except Exception as exc:
            code = _kms_error_code(exc)
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise CredentialsUnreadableError(
                    "the stored credentials were altered or belong to another connection"
                ) from None
            raise CredentialsUnavailableError(f"KMS could not open the credentials' data key ({code})") from None
        plaintext = bytes(answer["Plaintext"])
        self._remember(encrypted_key, plaintext)
        return plaintext

    def _remember(self, encrypted_key: bytes, plaintext_key: bytes) -> None:
        with self._cache_lock:
            self._cache[encrypted_key] = plaintext_key
            self._cache.move_to_end(encrypted_key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _kms(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._kms_client_factory()
        return self._client


__all__ = [
    "ENVELOPE_VERSION",
    "CredentialVault",
    "CredentialsChangedError",
    "CredentialsError",
    "CredentialsUnavailableError",
    "CredentialsUnreadableError",
    "RefreshNotWonError",
    "Sealer",
    "StoredCredentials",
]
