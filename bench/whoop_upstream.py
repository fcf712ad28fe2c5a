"""A WHOOP-shaped loopback upstream: WHOOP v2's API and its OAuth2 token endpoint, faked on 127.0.0.1.

The token endpoint rotates the refresh token on every refresh and answers ``400 invalid_grant`` to
one spent twice, so a second refresh anywhere shows up in its counters (benchmark 6,
``bench/oauth_storm.py``); with ``windows``, the API enforces WHOOP's sliding request windows itself
(benchmark 7, ``bench/whoop_fanout.py``).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.loopback import JsonHandler, LoopbackServer

API_PREFIX = "/developer/v2"
TOKEN_PATH = "/oauth/oauth2/token"
BENCH_CLIENT_ID = "bench-oauth-client"
BENCH_CLIENT_SECRET = "bench-oauth-client-secret"
ACCESS_TOKEN_SECONDS = 3600
"""WHOOP's access tokens live an hour (``expires_in: 3600``)."""
TOKEN_ENDPOINT_DELAY_SECONDS = 0.2
"""A refresh takes this long at the token endpoint: long enough that every storming sync overlaps it."""


@dataclass(frozen=True)
class Window:
    """At most ``requests`` admitted calls in any ``seconds``-long sliding window."""

    requests: int
    seconds: float


@dataclass
class UpstreamCounters:
    api_ok: int = 0
    api_unauthorized: int = 0
    api_rate_limited: int = 0
    refreshes: int = 0
    """Refresh grants given (each rotated the refresh token)."""
    invalid_grant: int = 0
    """Refresh tokens refused: spent before (a double refresh) or never issued."""
    reused_refresh_tokens: int = 0
    """Of those, refresh tokens that had been spent before."""
    token_errors: int = 0
    """Token requests refused for anything else (bad client, bad grant type, malformed)."""

    def minus(self, before: UpstreamCounters) -> UpstreamCounters:
        return UpstreamCounters(
            **{name: getattr(self, name) - getattr(before, name) for name in self.__dataclass_fields__}
        )


@dataclass(frozen=True)
class Arrival:
    at: float
    """The upstream's ``now()`` when the call arrived."""
    status: int
    data_type: str


class WhoopLikeUpstream(LoopbackServer):
    """127.0.0.1 only; stopped on ``__exit__``. Shaped on WHOOP's v2 API and OAuth2 token endpoint.

    - ``GET /developer/v2/<collection>``: ``{"records": [...], "next_token": null}``; 401 for a
      missing, unknown, expired or revoked bearer token (``accept_any_bearer`` accepts any token
      starting with ``at-``, for many connections); with ``windows``, 429 + ``Retry-After`` when an
      admitted call would exceed one of them, and WHOOP's ``X-RateLimit-*`` headers on every answer.
    - ``POST /oauth/oauth2/token`` (``grant_type=refresh_token``, client id and secret in the form):
      a new access token (``expires_in`` 3600) and a new refresh token every time; the spent refresh
      token is answered ``400 {"error": "invalid_grant"}`` from then on.
    """

    def __init__(
        self,
        now: Callable[[], float],
        *,
        windows: Sequence[Window] = (),
        accept_any_bearer: bool = False,
        records_per_page: int = 2,
        api_delay_seconds: float = 0.0,
        token_delay_seconds: float = TOKEN_ENDPOINT_DELAY_SECONDS,
        access_token_seconds: int = ACCESS_TOKEN_SECONDS,
    ) -> None:
        self.now = now
        self.windows = tuple(windows)
        self.accept_any_bearer = accept_any_bearer
        self.records_per_page = records_per_page
        self.api_delay_seconds = api_delay_seconds
        self.token_delay_seconds = token_delay_seconds
        self.access_token_seconds = access_token_seconds
        self._lock = threading.Lock()
        self._counters = UpstreamCounters()
        self._access_tokens: dict[str, float] = {}
        """Valid access token -> its expiry."""
        self._refresh_token: str | None = None
        self._spent_refresh_tokens: set[str] = set()
        self._issued = 0
        self._admitted: list[float] = []
        """When each admitted API call arrived (for the sliding windows)."""
        self.arrivals: list[Arrival] = []
        upstream = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if not path.startswith(API_PREFIX + "/"):
                    self._answer(404, {"error": "not_found"})
                    return
                status, body, headers = upstream._api(path.removeprefix(API_PREFIX), self.headers.get("Authorization"))
                if upstream.api_delay_seconds:
                    time.sleep(upstream.api_delay_seconds)  # the upstream's own latency, not the service's
                self._answer(status, body, headers)

            def do_POST(self) -> None:
                if urlsplit(self.path).path != TOKEN_PATH:
                    self._answer(404, {"error": "not_found"})
                    return
                length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                if upstream.token_delay_seconds:
                    time.sleep(upstream.token_delay_seconds)
                status, body = upstream._token({name: values[0] for name, values in form.items() if values})
                self._answer(status, body, {"Cache-Control": "no-store"})

        super().__init__(Handler, "bench-whoop")

    @property
    def api_base_url(self) -> str:
        return self.origin + API_PREFIX

    @property
    def token_url(self) -> str:
        return self.origin + TOKEN_PATH

    # --- the account's tokens (strict mode) ----------------------------------------------------------

    def seed_tokens(self, access_token: str, expires_at: float, refresh_token: str) -> None:
        """The tokens the user's consent produced (the connection is PUT with the same ones)."""
        with self._lock:
            self._access_tokens = {access_token: expires_at}
            self._refresh_token = refresh_token

    def revoke_access_tokens(self) -> None:
        """The provider drops every access token before its expiry (a password change, a security event)."""
        with self._lock:
            self._access_tokens.clear()

    @property
    def current_refresh_token(self) -> str | None:
        with self._lock:
            return self._refresh_token

    def counters(self) -> UpstreamCounters:
        with self._lock:
            return replace(self._counters)

    # --- the API -------------------------------------------------------------------------------------

    def _api(self, collection: str, authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        data_type = collection.rsplit("/", 1)[-1]
        with self._lock:
            now = self.now()
            if not self._authorized(authorization, now):
                self._counters.api_unauthorized += 1
                self.arrivals.append(Arrival(now, 401, data_type))
                return 401, {"error": "unauthorized"}, {}
            wait = self._window_wait(now)
            if wait is not None:
                self._counters.api_rate_limited += 1
                self.arrivals.append(Arrival(now, 429, data_type))
                headers = {"Retry-After": str(max(1, math.ceil(wait))), **self._rate_headers(now)}
                return 429, {"error": "too_many_requests"}, headers
            self._admitted.append(now)
            self._counters.api_ok += 1
            serial = self._counters.api_ok
            self.arrivals.append(Arrival(now, 200, data_type))
            headers = self._rate_headers(now)
        records = [whoop_record(data_type, serial * 10 + k, now) for k in range(self.records_per_page)]
        return 200, {"records": records, "next_token": None}, headers

    def _authorized(self, authorization: str | None, now: float) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if self.accept_any_bearer:
            return token.startswith("at-")
        expiry = self._access_tokens.get(token)
        return expiry is not None and now < expiry

    def _in_window(self, window: Window, now: float) -> list[float]:
        return [moment for moment in self._admitted if now - moment < window.seconds]

    def _window_wait(self, now: float) -> float | None:
        """Seconds until one more call fits every window; ``None`` when it fits now."""
        waits = []
        for window in self.windows:
            inside = self._in_window(window, now)
            if len(inside) >= window.requests:
                # The call that frees a place is the one ``requests`` back from the newest.
                waits.append(inside[-window.requests] + window.seconds - now)
        return max(waits) if waits else None

    def _rate_headers(self, now: float) -> dict[str, str]:
        """WHOOP's: the limit closest to being hit first, what remains of it, seconds until it is whole again."""
        if not self.windows:
            return {}
        views = []
        for window in self.windows:
            inside = self._in_window(window, now)
            remaining = max(0, window.requests - len(inside))
            reset = (inside[-1] + window.seconds - now) if inside else 0.0
            views.append((remaining, window, reset))
        remaining, closest, reset = min(views, key=lambda view: view[0] / view[1].requests)
        listed = ", ".join(f"{w.requests};window={w.seconds:g}" for w in self.windows)
        return {
            "X-RateLimit-Limit": f"{closest.requests}, {listed}",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }

    # --- the token endpoint --------------------------------------------------------------------------

    def _token(self, form: Mapping[str, str]) -> tuple[int, Any]:
        with self._lock:
            if form.get("client_id") != BENCH_CLIENT_ID or form.get("client_secret") != BENCH_CLIENT_SECRET:
                self._counters.token_errors += 1
                return 401, {"error": "invalid_client"}
            if form.get("grant_type") != "refresh_token":
                self._counters.token_errors += 1
                return 400, {"error": "unsupported_grant_type"}
            presented = form.get("refresh_token", "")
            if not presented or presented != self._refresh_token:
                self._counters.invalid_grant += 1
                if presented in self._spent_refresh_tokens:
                    self._counters.reused_refresh_tokens += 1
                return 400, {"error": "invalid_grant", "error_description": "the refresh token is not valid"}
            self._issued += 1
            self._counters.refreshes += 1
            self._spent_refresh_tokens.add(presented)
            access_token = f"at-{self._issued}-{uuid.uuid4().hex[:8]}"
            self._refresh_token = f"rt-{self._issued}-{uuid.uuid4().hex[:8]}"
            self._access_tokens[access_token] = self.now() + self.access_token_seconds
            return 200, {
                "access_token": access_token,
                "expires_in": self.access_token_seconds,
                "refresh_token": self._refresh_token,
                "scope": form.get("scope", "offline"),
                "token_type": "bearer",
            }


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def whoop_record(data_type: str, serial: int, now: float) -> dict[str, Any]:
    """One record shaped like WHOOP v2's: a recovery is keyed by its ``cycle_id``, the rest by ``id``."""
    stamp = iso(now)
    if data_type == "recovery":
        return {
            "cycle_id": 93_845 + serial,
            "sleep_id": str(uuid.UUID(int=serial)),
            "user_id": 10_129,
            "created_at": stamp,
            "updated_at": stamp,
            "score_state": "SCORED",
            "score": {
                "user_calibrating": False,
                "recovery_score": 40 + serial % 50,
                "resting_heart_rate": 52,
                "hrv_rmssd_milli": 61.4,
                "spo2_percentage": 96.5,
                "skin_temp_celsius": 33.6,
            },
        }
    return {
        "id": str(uuid.UUID(int=serial)),
        "user_id": 10_129,
        "created_at": stamp,
        "updated_at": stamp,
        "start": stamp,
        "end": stamp,
        "timezone_offset": "+00:00",
        "score_state": "SCORED",
        "score": {"strain": 8.2 + serial % 7, "average_heart_rate": 68, "max_heart_rate": 141},
    }
