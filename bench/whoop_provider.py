"""The service's side of the WHOOP-shaped upstream (``bench/whoop_upstream.py``): a ``rest`` providers-file
entry shaped like WHOOP v2 with OAuth2 auth, pointed at the loopback upstream, and the app's OAuth2 client
id and secret in the environment, as a deployment sets them. Shared by ``bench/oauth_storm.py`` and
``bench/whoop_fanout.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bench.whoop_upstream import BENCH_CLIENT_ID, BENCH_CLIENT_SECRET, WhoopLikeUpstream

CLIENT_ID_ENV = "BENCH_CLIENT_ID"
CLIENT_SECRET_ENV = "BENCH_CLIENT_SECRET"
REFRESH_SKEW_SECONDS = 300


def oauth2_auth(token_url: str) -> dict[str, Any]:
    return {
        "kind": "oauth2",
        "token_url": token_url,
        "client_id_env": CLIENT_ID_ENV,
        "client_secret_env": CLIENT_SECRET_ENV,
        "scopes": ["offline"],
        "refresh_skew_seconds": REFRESH_SKEW_SECONDS,
    }


def whoop_data_type(data_type: str, path: str, policy: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "path": path,
        "records_path": "records",
        "id_field": "cycle_id" if data_type == "recovery" else "id",
        "updated_at_field": "updated_at",
        "policy": dict(policy),
    }


def whoop_provider_config(
    upstream: WhoopLikeUpstream, data_types: Mapping[str, str], limits: Mapping[str, Any], policy: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``rest`` providers-file entry shaped like WHOOP v2, pointed at the loopback upstream."""
    return {
        "type": "rest",
        "base_url": upstream.api_base_url,
        "auth": oauth2_auth(upstream.token_url),
        "pagination": {"kind": "body_cursor", "response_field": "next_token", "request_param": "nextToken"},
        "limits": dict(limits),
        "data_types": {name: whoop_data_type(name, path, policy) for name, path in data_types.items()},
    }


@contextmanager
def oauth_app_settings() -> Iterator[None]:
    """The app's OAuth2 client id and secret, as a deployment sets them (restored afterwards)."""
    saved = {name: os.environ.get(name) for name in (CLIENT_ID_ENV, CLIENT_SECRET_ENV)}
    os.environ[CLIENT_ID_ENV] = BENCH_CLIENT_ID
    os.environ[CLIENT_SECRET_ENV] = BENCH_CLIENT_SECRET
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
