"""Service configuration, read from the environment once, on first use (never at import)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.domain.errors import SmartSyncError
from chalicelib.domain.planner import TICK_INTERVAL_SECONDS


class ConfigurationError(SmartSyncError):
    """The service is misconfigured."""


DEFAULT_PROVIDERS_FILE = Path(__file__).resolve().parents[1] / "providers.json"


@dataclass(frozen=True)
class Settings:
    connections_table: str = "smart-sync-connections"
    datasets_table: str = "smart-sync-datasets"
    runs_table: str = "smart-sync-runs"
    limits_table: str = "smart-sync-limits"
    region: str = "us-east-1"
    dynamodb_host: str | None = None
    """Only for a local endpoint (moto server); unset on AWS and in tests."""
    queue_name: str = "smart-sync-jobs"
    queue_url: str | None = None
    sqs_endpoint: str | None = None
    kms_key_id: str = ""
    """The KMS key that seals connection credentials (key id, key ARN or alias such as ``alias/smart-sync``)."""
    kms_endpoint: str | None = None
    """Only for a local endpoint (moto server); unset on AWS and in tests."""

    jwt_secret: str = ""
    """A literal HS256 secret: the local run and the tests. AWS stages name ``jwt_secret_parameter`` instead."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    operator_scope: str = "operator"
    jwt_secret_parameter: str | None = None
    """SSM parameter name (SecureString), or a Secrets Manager ARN, holding the HS256 secret (docs/auth.md)."""
    jwt_secret_max_age_seconds: int = 300
    """How long a warm instance keeps the fetched HS256 secret before reading it again (a rotation's delay)."""
    jwks_url: str | None = None
    """The identity provider's JWKS (https; http only on loopback); then the issuer and audience are required."""
    jwt_algorithms: str = "RS256 ES256"
    """The asymmetric algorithms accepted from the JWKS, space- or comma-separated."""
    jwt_max_token_bytes: int = 8192
    jwt_max_lifetime_seconds: int = 86400
    """The longest ``exp`` may lie after ``iat`` (or after now, when a token has no ``iat``)."""
    runtime: str = "aws"
    """``aws`` or ``local`` (``python -m local.run``): only ``local`` accepts the repository's dev JWT secrets."""

    default_cooldown_seconds: int = 300
    default_max_staleness_seconds: int = 3600
    policy_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    providers_file: str = str(DEFAULT_PROVIDERS_FILE)

    read_budget_seconds: float = 10.0
    lease_ttl_seconds: int = 120
    queue_claim_ttl_seconds: int = 2100
    """Longer than the queue's visibility timeout (1800 s), so a crashed job's redelivery still holds the claim."""
    join_poll_interval_seconds: float = 0.25
    max_pages_per_run: int = 1000
    full_resync_seconds: int = 86400
    """How often an incremental dataset gets a full pass (the only way to see upstream deletions without tombstones)."""
    run_retention_days: int = 30
    force_refresh_limit: int = 5
    force_refresh_window_seconds: int = 60
    failure_backoff_base_seconds: int = 30
    failure_backoff_max_seconds: int = 900
    default_page_limit: int = 100
    max_page_limit: int = 1000

    needs_review_after_auth_failures: int = 3
    """Provider 401/403 answers in a row before a connection becomes NEEDS_REVIEW."""
    breaker_failure_threshold: int = 5
    breaker_cool_off_seconds: int = 60
    retry_max_attempts: int = 4
    """Upstream attempts per page (the first call and up to 3 retries) on 429, 5xx, timeouts, connection errors."""
    retry_base_seconds: float = 0.5
    retry_max_delay_seconds: float = 20.0
    provider_wait_max_seconds: float = 20.0
    """The longest a sync waits in place for a token, a slot or a Retry-After; beyond it, it goes on as a later job."""
    max_jobs_per_tick: int = 50_000
    watermark_lookback_seconds: int = 300
    """An incremental pass starts this long before the previous pass began (edits made during a pass are not missed)."""
    tick_interval_seconds: float = float(TICK_INTERVAL_SECONDS)
    """How often the schedule fires (the Rate in ``app.py``); the local runner sets it for ``--tick-seconds``."""
    token_refresh_lease_seconds: int = 30
    """How long one instance may hold a connection's OAuth2 refresh before another may take it over."""

    # --- tenants: what one user may take of the shared service (chalicelib/domain/tenants.py) ---
    user_max_slot_share: float = 0.5
    """Of a provider's ``max_concurrent_syncs``, what one user's syncs may hold at once: below 1 a fraction
    (rounded down, at least one slot), from 1 a whole count of slots."""
    user_max_rate_share: float = 0.5
    """Of each of a provider's shared rate windows, the fraction one user's calls may take within the window
    (at least one call; 1 = no per-user bound)."""
    max_connections_per_user: int = 50
    """A PUT creating a user's connection beyond this many answers 409 ``connection_limit_reached``."""
    demo_provider: bool = False
    """``SMART_SYNC_DEMO_PROVIDER=enabled`` offers the providers file's ``type: demo`` providers (local runs,
    tests, the dev stage); absent, they are left out of the registry (an unknown provider to a PUT)."""


_ENV_PREFIX = "SMART_SYNC_"
_INT_FIELDS = {
    "default_cooldown_seconds",
    "default_max_staleness_seconds",
    "lease_ttl_seconds",
    "queue_claim_ttl_seconds",
    "max_pages_per_run",
    "full_resync_seconds",
    "run_retention_days",
    "force_refresh_limit",
    "force_refresh_window_seconds",
    "failure_backoff_base_seconds",
    "failure_backoff_max_seconds",
    "default_page_limit",
    "max_page_limit",
    "needs_review_after_auth_failures",
    "breaker_failure_threshold",
    "breaker_cool_off_seconds",
    "retry_max_attempts",
    "max_jobs_per_tick",
    "watermark_lookback_seconds",
    "max_connections_per_user",
    "jwt_secret_max_age_seconds",
    "jwt_max_token_bytes",
    "jwt_max_lifetime_seconds",
}
_FLOAT_FIELDS = {
    "read_budget_seconds",
    "join_poll_interval_seconds",
    "retry_base_seconds",
    "retry_max_delay_seconds",
    "provider_wait_max_seconds",
    "tick_interval_seconds",
    "user_max_slot_share",
    "user_max_rate_share",
}
_STR_FIELDS = {
    "connections_table",
    "datasets_table",
    "runs_table",
    "limits_table",
    "dynamodb_host",
    "queue_name",
    "queue_url",
    "sqs_endpoint",
    "kms_key_id",
    "kms_endpoint",
    "jwt_secret",
    "jwt_issuer",
    "jwt_audience",
    "operator_scope",
    "jwt_secret_parameter",
    "jwks_url",
    "jwt_algorithms",
    "runtime",
    "providers_file",
}


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    """Build settings from ``SMART_SYNC_*`` variables; unknown values fail loudly."""
    values: dict[str, Any] = {}
    for name in _STR_FIELDS | _INT_FIELDS | _FLOAT_FIELDS:
        raw = environ.get(_ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        try:
            if name in _INT_FIELDS:
                values[name] = int(raw)
            elif name in _FLOAT_FIELDS:
                values[name] = float(raw)
            else:
                values[name] = raw
        except ValueError as exc:
            raise ConfigurationError(f"{_ENV_PREFIX}{name.upper()} must be a number, got {raw!r}") from exc
    overrides = environ.get(_ENV_PREFIX + "POLICY_OVERRIDES")
    if overrides:
        try:
            parsed = json.loads(overrides)
        except ValueError as exc:
            raise ConfigurationError(f"{_ENV_PREFIX}POLICY_OVERRIDES is not valid JSON: {exc}") from exc
        values["policy_overrides"] = _validated_overrides(parsed)
    values.update(_tenant_switches(environ))
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        values["region"] = region
    settings = Settings(**values)
    if settings.join_poll_interval_seconds <= 0:
        raise ConfigurationError("SMART_SYNC_JOIN_POLL_INTERVAL_SECONDS must be above 0")
    if settings.read_budget_seconds <= 0 or settings.read_budget_seconds >= 29:
        raise ConfigurationError("SMART_SYNC_READ_BUDGET_SECONDS must be between 0 and 29 (API Gateway's limit)")
    for name in (
        "needs_review_after_auth_failures",
        "breaker_failure_threshold",
        "retry_max_attempts",
        "max_jobs_per_tick",
        "token_refresh_lease_seconds",
    ):
        if getattr(settings, name) < 1:
            raise ConfigurationError(f"{_ENV_PREFIX}{name.upper()} must be at least 1")
    if settings.runtime == "local" and environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        # A copied environment must not turn a deployed function into one that accepts the dev JWT secrets.
        raise ConfigurationError(f"{_ENV_PREFIX}RUNTIME=local is refused inside AWS Lambda")
    if settings.tick_interval_seconds <= 0:
        raise ConfigurationError(f"{_ENV_PREFIX}TICK_INTERVAL_SECONDS must be above 0")
    _check_tenant_settings(settings)
    for name in (
        "breaker_cool_off_seconds",
        "retry_base_seconds",
        "retry_max_delay_seconds",
        "provider_wait_max_seconds",
    ):
        if getattr(settings, name) < 0:
            raise ConfigurationError(f"{_ENV_PREFIX}{name.upper()} must not be negative")
    return settings


def _tenant_switches(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SMART_SYNC_DEMO_PROVIDER``: ``enabled`` or ``disabled`` (absent: disabled); anything else fails."""
    raw = environ.get(_ENV_PREFIX + "DEMO_PROVIDER", "")
    if raw not in ("", "enabled", "disabled"):
        raise ConfigurationError(f"{_ENV_PREFIX}DEMO_PROVIDER must be 'enabled' or 'disabled', got {raw!r}")
    return {"demo_provider": raw == "enabled"}


def _check_tenant_settings(settings: Settings) -> None:
    slots = settings.user_max_slot_share
    if not slots > 0 or (slots >= 1 and slots != int(slots)):
        raise ConfigurationError(
            f"{_ENV_PREFIX}USER_MAX_SLOT_SHARE must be a fraction above 0 and below 1, or a whole count from 1"
        )
    if not 0 < settings.user_max_rate_share <= 1:
        raise ConfigurationError(f"{_ENV_PREFIX}USER_MAX_RATE_SHARE must be above 0 and at most 1")
    if settings.max_connections_per_user < 1:
        raise ConfigurationError(f"{_ENV_PREFIX}MAX_CONNECTIONS_PER_USER must be at least 1")


_POLICY_FIELDS = ("cooldown_seconds", "max_staleness_seconds", "schedule_every_seconds")


def _validated_overrides(parsed: Any) -> dict[str, dict[str, int | None]]:
    """``{"*" | "provider" | "provider/type": {policy field: seconds}}``; anything else fails at start-up."""
    name = f"{_ENV_PREFIX}POLICY_OVERRIDES"
    if not isinstance(parsed, dict):
        raise ConfigurationError(f"{name} must be a JSON object")
    for scope, fields in parsed.items():
        if not isinstance(fields, dict):
            raise ConfigurationError(f"{name}[{scope!r}] must be an object of policy fields")
        for key, value in fields.items():
            if key not in _POLICY_FIELDS:
                raise ConfigurationError(
                    f"{name}[{scope!r}]: unknown field {key!r} (known: {', '.join(_POLICY_FIELDS)})"
                )
            nullable = key == "schedule_every_seconds"
            if (value is None and not nullable) or (
                value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0)
            ):
                raise ConfigurationError(f"{name}[{scope!r}].{key} must be a whole number of seconds")
    return parsed


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return settings_from_env(os.environ)
