"""The HS256 secret bearer tokens are checked with: a literal setting, or SSM Parameter Store / Secrets Manager.

On AWS the secret is never an environment variable of the template: ``SMART_SYNC_JWT_SECRET_PARAMETER``
names an SSM parameter (a SecureString, decrypted on read) or, when it starts with
``arn:aws:secretsmanager:``, a Secrets Manager secret. Powertools Parameters reads it on the first
authenticated request and keeps it ``jwt_secret_max_age_seconds`` (a rotation is seen within that time).
Importing this module, and building ``JwtSecretSource``, does no I/O.

The dev secrets published in this repository (``.chalice/config.json``'s dev stage, the local run's
default in ``local/environment.py``) are refused unless ``Settings.runtime`` is ``local``, wherever the
secret came from. Messages name settings, never a secret's value.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chalicelib.domain.config import ConfigurationError, Settings
from chalicelib.domain.errors import AuthUnavailableError

MIN_SECRET_LENGTH = 32
SECRETS_MANAGER_ARN_PREFIX = "arn:aws:secretsmanager:"
REPOSITORY_DEV_SECRETS = frozenset(
    {
        "change-me-dev-secret-at-least-32-bytes-long",  # .chalice/config.json, stage dev
        "smart-sync-local-run-secret-not-for-production",  # local/environment.py, LOCAL_JWT_SECRET
    }
)
"""Anyone can read these; a process that is not the local run must not accept tokens signed with them."""

# Answers that mean the setting or the IAM policy is wrong (a 500 configuration_error, logged);
# anything else (throttling, a timeout, an endpoint down) is a 503 the caller may retry.
_CONFIGURATION_CODES = frozenset(
    {
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedOperation",
        "InvalidKeyId",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "DecryptionFailure",
        "InvalidParameterException",
        "InvalidRequestException",
        "ValidationException",
    }
)

ClientFactory = Callable[[str], Any]
"""``factory(region)`` -> a boto3 client (tests pass moto-backed ones)."""


class JwtSecretSource:
    """The HS256 secret, or ``None`` when this service accepts no HS256 tokens."""

    def __init__(
        self,
        settings: Settings,
        *,
        ssm_client: ClientFactory | None = None,
        secrets_client: ClientFactory | None = None,
    ) -> None:
        self._settings = settings
        self._ssm_client = ssm_client or _client_factory("ssm")
        self._secrets_client = secrets_client or _client_factory("secretsmanager")
        self._provider: Any = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._settings.jwt_secret or self._settings.jwt_secret_parameter)

    def check_settings(self) -> None:
        """What can be judged without reading the secret store (cheap: run on every request)."""
        settings = self._settings
        if settings.jwt_secret and settings.jwt_secret_parameter:
            raise ConfigurationError("set SMART_SYNC_JWT_SECRET or SMART_SYNC_JWT_SECRET_PARAMETER, not both")
        if settings.jwt_secret:
            self._check_value(settings.jwt_secret, "SMART_SYNC_JWT_SECRET")
        if settings.jwt_secret_max_age_seconds < 0:
            raise ConfigurationError("SMART_SYNC_JWT_SECRET_MAX_AGE_SECONDS must not be negative")

    def secret(self) -> str | None:
        settings = self._settings
        if not settings.jwt_secret_parameter:
            return settings.jwt_secret or None
        value = self._fetch(settings.jwt_secret_parameter)
        self._check_value(value, "the secret named by SMART_SYNC_JWT_SECRET_PARAMETER")
        return value

    def _check_value(self, value: str, where: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigurationError(f"{where} must be at least {MIN_SECRET_LENGTH} characters")
        if value in REPOSITORY_DEV_SECRETS and self._settings.runtime != "local":
            raise ConfigurationError(
                f"{where} is a development secret published in the repository; it is accepted only by the "
                "local run (SMART_SYNC_RUNTIME=local). Store a secret of your own (docs/auth.md)"
            )

    def _fetch(self, name: str) -> str:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        max_age = self._settings.jwt_secret_max_age_seconds
        try:
            provider = self._parameters()
            if name.startswith(SECRETS_MANAGER_ARN_PREFIX):
                value = provider.get(name, max_age=max_age)
            else:
                value = provider.get(name, max_age=max_age, decrypt=True)
        except GetParameterError as exc:
            raise _read_failure(name, exc) from None
        if not isinstance(value, str):
            raise ConfigurationError(f"{name} must hold the secret as a string (SecretString or SecureString)")
        return value

    def _parameters(self) -> Any:
        """The Powertools provider, made on first use; it holds the max_age cache, so it lives as long as we do."""
        if self._provider is None:
            with self._lock:
                if self._provider is None:
                    self._provider = self._make_provider(self._settings.jwt_secret_parameter or "")
        return self._provider

    def _make_provider(self, name: str) -> Any:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider

        if name.startswith(SECRETS_MANAGER_ARN_PREFIX):
            # arn:aws:secretsmanager:<region>:<account>:secret:<name>: the secret may live in another region.
            region = name.split(":")[3] or self._settings.region
            return SecretsProvider(boto3_client=self._secrets_client(region))
        return SSMProvider(boto3_client=self._ssm_client(self._settings.region))


def _read_failure(name: str, exc: Exception) -> Exception:
    """Powertools wraps every failure in GetParameterError; the AWS error code is on the original."""
    from botocore.exceptions import ClientError

    cause = exc.__context__
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", ""))
        if code in _CONFIGURATION_CODES:
            return ConfigurationError(f"the JWT secret {name} could not be read: {code}")
        return AuthUnavailableError(f"the token's signing secret could not be read right now ({code}); retry")
    reason = type(cause).__name__ if cause is not None else "unknown error"
    return AuthUnavailableError(f"the token's signing secret could not be read right now ({reason}); retry")


def _client_factory(service: str) -> ClientFactory:
    def make(region: str) -> Any:
        import boto3
        from botocore.config import Config

        # Short timeouts and few retries: the read happens inside an API request (API Gateway stops at 29 s).
        config = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
        # Its own session: boto3's default one is not safe to build clients from in parallel.
        return boto3.session.Session().client(service, region_name=region, config=config)

    return make
