"""The ``hmac`` auth kind's styles: Binance, OKX and SnapTrade.

Each style checks its credentials, signs every call with ``hmac_signing.py`` at ``now`` plus the
clock offset it has learned from the provider (per provider, per process), and after a
clock-skew refusal learns the provider's server time once so the retried call is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.domain.upstream import ProviderError
from chalicelib.providers.auth import CredentialAuth, Credentials, OutgoingRequest
from chalicelib.providers.hmac_signing import (
    BINANCE_SIGNED_PARAMS,
    DEFAULT_BINANCE_KEY_HEADER,
    DEFAULT_BINANCE_RECV_WINDOW_MS,
    OKX_HEADERS,
    SNAPTRADE_SIGNED_PARAMS,
    binance_signed,
    okx_signed,
    snaptrade_signed,
)
from chalicelib.providers.oauth2 import app_setting

DEFAULT_BINANCE_SERVER_TIME_PATH = "/api/v3/time"
DEFAULT_OKX_SERVER_TIME_PATH = "/api/v5/public/time"
BINANCE_TIMESTAMP_REFUSED = -1021
"""Binance: "Timestamp for this request is outside of the recvWindow" (or ahead of the server's time)."""
OKX_TIMESTAMP_EXPIRED = "50102"
"""OKX: "Timestamp request expired"."""
MAX_CLOCK_OFFSET_MS = 24 * 3600 * 1000
"""A server time further off than this is not a clock to trust: the offset is not learned."""


def _timestamp_ms(now: float, offset_ms: int) -> int:
    return round(now * 1000) + offset_ms


class _ClockOffsetAuth(CredentialAuth):
    """The provider's clock minus ours, in milliseconds, as last learned from its server time."""

    clock_offset_ms: int = 0
    """Set on the instance when learned: one int per provider per process. A plain attribute store
    is atomic under the GIL, and two threads learning at once both write a fresh measurement, so no
    lock is needed."""

    def _learn(self, server_ms: Any, now: float) -> bool:
        if isinstance(server_ms, str) and server_ms.strip().isdigit():
            server_ms = int(server_ms.strip())
        if isinstance(server_ms, bool) or not isinstance(server_ms, int) or server_ms <= 0:
            return False
        offset = server_ms - round(now * 1000)
        if abs(offset) > MAX_CLOCK_OFFSET_MS:
            return False
        self.clock_offset_ms = offset
        return True

    @staticmethod
    def _fetch(fetch_json: Callable[[str], Any], path: str) -> Any:
        try:
            return fetch_json(path)
        except ProviderError:
            # The original refusal is the error worth reporting; a retry with the old clock would fail too.
            return None


class BinanceAuth(_ClockOffsetAuth):
    """Binance SIGNED endpoints (HMAC-SHA256 over the query, key in ``X-MBX-APIKEY``)."""

    def __init__(
        self,
        provider: str,
        *,
        recv_window_ms: int = DEFAULT_BINANCE_RECV_WINDOW_MS,
        key_header: str = DEFAULT_BINANCE_KEY_HEADER,
        server_time_path: str = DEFAULT_BINANCE_SERVER_TIME_PATH,
    ) -> None:
        super().__init__(
            provider,
            Credentials(provider, ("api_key", "api_secret"), ("api_key",)),
            managed_headers=(key_header,),
            reserved_query_params=BINANCE_SIGNED_PARAMS,
        )
        self.recv_window_ms = recv_window_ms
        self.key_header = key_header
        self.server_time_path = server_time_path

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return binance_signed(
            request,
            api_key=values["api_key"],
            api_secret=values["api_secret"],
            timestamp_ms=_timestamp_ms(now, self.clock_offset_ms),
            recv_window_ms=self.recv_window_ms,
            key_header=self.key_header,
        )

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        if status != 400 or not isinstance(body, Mapping):
            return False
        code = body.get("code")
        if isinstance(code, bool) or code != BINANCE_TIMESTAMP_REFUSED:
            return False
        server = self._fetch(fetch_json, self.server_time_path)
        return isinstance(server, Mapping) and self._learn(server.get("serverTime"), now)


class OkxAuth(_ClockOffsetAuth):
    """OKX v5 private REST endpoints (four ``OK-ACCESS-*`` headers)."""

    def __init__(self, provider: str, *, server_time_path: str = DEFAULT_OKX_SERVER_TIME_PATH) -> None:
        super().__init__(
            provider,
            Credentials(provider, ("api_key", "api_secret", "passphrase"), ("api_key", "passphrase")),
            managed_headers=OKX_HEADERS,
        )
        self.server_time_path = server_time_path

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return okx_signed(
            request,
            api_key=values["api_key"],
            api_secret=values["api_secret"],
            passphrase=values["passphrase"],
            timestamp_ms=_timestamp_ms(now, self.clock_offset_ms),
        )

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        if not 400 <= status < 500 or not isinstance(body, Mapping) or str(body.get("code")) != OKX_TIMESTAMP_EXPIRED:
            return False
        server = self._fetch(fetch_json, self.server_time_path)
        if not isinstance(server, Mapping):
            return False
        data = server.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
            return False
        return self._learn(data[0].get("ts"), now)


class SnapTradeAuth(CredentialAuth):
    """SnapTrade: the app's client id and consumer key (deployment settings) sign each user's calls.

    No clock offset: SnapTrade documents no clock-skew error to learn one from."""

    def __init__(self, provider: str, *, client_id_env: str, consumer_key_env: str) -> None:
        super().__init__(
            provider,
            Credentials(provider, ("user_id", "user_secret"), ()),
            managed_headers=("Signature",),
            reserved_query_params=SNAPTRADE_SIGNED_PARAMS,
        )
        self.client_id_env = client_id_env
        self.consumer_key_env = consumer_key_env

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        values = self._credentials.values(credentials)
        return snaptrade_signed(
            request,
            client_id=app_setting(self.provider, self.client_id_env),
            consumer_key=app_setting(self.provider, self.consumer_key_env),
            user_id=values["user_id"],
            user_secret=values["user_secret"],
            timestamp_s=_timestamp_ms(now, 0) // 1000,
        )
