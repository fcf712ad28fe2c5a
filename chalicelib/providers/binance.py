"""Binance spot (``type: "binance"``): the account's balances, and its trades symbol by symbol.

The entry is a ``rest`` entry with per-data-type paging and ``for_each`` (see ``snaptrade.py``,
which holds the fan-out both types share): ``GET /api/v3/myTrades`` requires ``symbol`` and
at most 24 h between ``startTime`` and ``endTime``, so the trades data type walks 24 h windows
once per symbol of the connection's ``symbols`` setting, while ``GET /api/v3/account`` is one call.

Calls are signed by the ``hmac`` style ``binance`` (``X-MBX-APIKEY``, ``recvWindow``,
``timestamp``, hex HMAC-SHA256 ``signature``); a -1021 clock refusal is mended once by learning
Binance's server time (``/api/v3/time``).

What this type adds to ``rest``: Binance answers a bad signature (-1022), a malformed key
(-2014) or an unauthorised request (-1002) with HTTP 400, and a key refused for this IP or
permission (-2015) with 400 or 401. Each of them means the connection's credentials do not
work, not that the request was malformed, so they are ``ProviderAuthError``: counted against
the connection (``NEEDS_REVIEW`` after a few in a row), never retried.
"""

from __future__ import annotations

from chalicelib.domain.upstream import ProviderAuthError, ProviderError
from chalicelib.providers.http import HttpAnswer
from chalicelib.providers.rest import RestProvider
from chalicelib.providers.snaptrade import FanOutRestProvider

CREDENTIAL_REFUSALS = frozenset({-1002, -1022, -2014, -2015})
"""Binance error codes that refuse the API key or its signature (UNAUTHORIZED, INVALID_SIGNATURE,
BAD_API_KEY_FMT, REJECTED_MBX_KEY)."""


def binance_error_code(answer: HttpAnswer) -> int | None:
    """The ``code`` of a Binance error body (``{"code": -1022, "msg": "..."}``), if it has one."""
    body = answer.json_or_none()
    if not isinstance(body, dict):
        return None
    code = body.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


class BinanceRest(RestProvider):
    """Binance's answers classified by their error code where the HTTP status says too little."""

    def _error_for(self, answer: HttpAnswer, where: str, now: float) -> ProviderError | None:
        if 400 <= answer.status < 500 and answer.status not in (418, 429):
            code = binance_error_code(answer)
            if code in CREDENTIAL_REFUSALS:
                # The code is Binance's own public constant, never a credential: safe to name.
                error = ProviderAuthError(
                    f"{where}: HTTP {answer.status}, Binance refused the API key or its signature (code {code})",
                    status_code=answer.status,
                )
                return self._with_headers(error, answer)
        return super()._error_for(answer, where, now)


class BinanceProvider(FanOutRestProvider):
    """``type: "binance"``: balances (one signed call) and trades (24 h windows per symbol)."""

    type_name = "binance"
    rest_class = BinanceRest
