"""The HS256 secret from SSM Parameter Store (SecureString) or Secrets Manager, through Powertools, under moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.api.auth import authenticate
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import ConfigurationError, Settings
from chalicelib.domain.errors import AuthenticationError, AuthUnavailableError
from chalicelib.store.jwt_secret import REPOSITORY_DEV_SECRETS
from chalicelib.store.token_keys import TokenKeys

REGION = "us-east-1"
PARAMETER = "/smart-sync/prod/jwt-secret"
SECRET = "secret-from-the-parameter-store-long-enough"
NOW = FakeClock().now()


class Calls:
    """Counts one operation on the clients handed out (a botocore hook, so moto still answers)."""

    def __init__(self, service: str, operation: str) -> None:
        self.service = service
        self.operation = operation
        self.count = 0
        self.regions: list[str] = []

    def factory(self, region: str) -> Any:
        self.regions.append(region)
        client = boto3.client(self.service, region_name=region)
        client.meta.events.register(f"before-call.{self.service}.{self.operation}", self._count)
        return client

    def _count(self, **_: Any) -> None:
        self.count += 1


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def _token(secret: str = SECRET, subject: str = "u1") -> dict[str, str]:
    token = jwt.encode({"sub": subject, "iat": int(NOW), "exp": int(NOW) + 600}, secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def _put_parameter(value: str = SECRET, name: str = PARAMETER) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def _ssm_keys(settings: Settings, calls: Calls) -> TokenKeys:
    return TokenKeys(settings, ssm_client=calls.factory)


@pytest.mark.usefixtures("aws")
def test_the_secret_is_read_from_ssm_once_on_first_use_and_then_cached() -> None:
    # Given a SecureString parameter and a service naming it
    _put_parameter()
    settings = Settings(jwt_secret_parameter=PARAMETER)
    calls = Calls("ssm", "GetParameter")
    keys = _ssm_keys(settings, calls)

    # When the keys are built / Then nothing is read yet
    keys.check_settings()
    assert calls.count == 0 and calls.regions == []

    # When 20 requests are authenticated
    subjects = {authenticate(_token(subject=f"u{n}"), settings, NOW, keys).subject for n in range(20)}

    # Then each passed and the parameter was read once
    assert subjects == {f"u{n}" for n in range(20)}
    assert calls.count == 1
    assert calls.regions == [REGION]


@pytest.mark.usefixtures("aws")
def test_a_token_signed_with_another_secret_is_401_against_the_ssm_secret() -> None:
    _put_parameter()
    settings = Settings(jwt_secret_parameter=PARAMETER)
    keys = _ssm_keys(settings, Calls("ssm", "GetParameter"))
    with pytest.raises(AuthenticationError, match="not valid"):
        authenticate(_token("another-secret-entirely-long-enough-xx"), settings, NOW, keys)


@pytest.mark.usefixtures("aws")
def test_a_rotated_secret_is_picked_up_once_the_cached_one_is_older_than_max_age() -> None:
    # Given a service that keeps the secret 0 s (every request reads it again)
    _put_parameter()
    settings = Settings(jwt_secret_parameter=PARAMETER, jwt_secret_max_age_seconds=0)
    calls = Calls("ssm", "GetParameter")
    keys = _ssm_keys(settings, calls)
    assert authenticate(_token(), settings, NOW, keys).subject == "u1"

    # When the secret is rotated
    rotated = "a-rotated-secret-from-the-parameter-store-0"
    _put_parameter(rotated)

    # Then tokens signed with the new secret pass and the old ones no longer do
    assert authenticate(_token(rotated), settings, NOW, keys).subject == "u1"
    with pytest.raises(AuthenticationError, match="not valid"):
        authenticate(_token(), settings, NOW, keys)
    assert calls.count == 3


@pytest.mark.usefixtures("aws")
def test_the_secret_is_read_from_secrets_manager_when_the_setting_is_an_arn() -> None:
    # Given a Secrets Manager secret in another region than the service's
    arn = boto3.client("secretsmanager", region_name="eu-west-1").create_secret(
        Name="smart-sync/prod/jwt", SecretString=SECRET
    )["ARN"]
    assert arn.startswith("arn:aws:secretsmanager:eu-west-1:")
    settings = Settings(jwt_secret_parameter=arn)
    calls = Calls("secretsmanager", "GetSecretValue")
    keys = TokenKeys(settings, secrets_client=calls.factory)

    # When 5 requests are authenticated
    for _ in range(5):
        assert authenticate(_token(), settings, NOW, keys).subject == "u1"

    # Then the secret was read once, from the ARN's region
    assert calls.count == 1
    assert calls.regions == ["eu-west-1"]


@pytest.mark.usefixtures("aws")
def test_a_missing_parameter_is_a_configuration_error_naming_it() -> None:
    settings = Settings(jwt_secret_parameter="/smart-sync/prod/missing")
    keys = _ssm_keys(settings, Calls("ssm", "GetParameter"))
    with pytest.raises(ConfigurationError) as caught:
        authenticate(_token(), settings, NOW, keys)
    assert "/smart-sync/prod/missing" in caught.value.message
    assert "ParameterNotFound" in caught.value.message


@pytest.mark.usefixtures("aws")
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("value", ["too-short", *sorted(REPOSITORY_DEV_SECRETS)])
def test_a_short_or_published_secret_in_ssm_is_refused_without_being_quoted(value: str) -> None:
    # Given a parameter holding a short secret, or one of the repository's dev secrets
    _put_parameter(value)
    settings = Settings(jwt_secret_parameter=PARAMETER)
    keys = _ssm_keys(settings, Calls("ssm", "GetParameter"))
    # When a request is authenticated / Then the service refuses it as misconfigured, quoting no secret
    with pytest.raises(ConfigurationError) as caught:
        authenticate(_token(value), settings, NOW, keys)
    assert value not in caught.value.message


@pytest.mark.usefixtures("aws")
def test_a_binary_secret_is_a_configuration_error() -> None:
    arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="smart-sync/bin", SecretBinary=SECRET.encode()
    )["ARN"]
    settings = Settings(jwt_secret_parameter=arn)
    with pytest.raises(ConfigurationError, match="SecretString"):
        authenticate(_token(), settings, NOW, TokenKeys(settings))


class _ThrottledSsm:
    def get_parameter(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "GetParameter")


def test_a_throttled_or_unreachable_store_is_a_503_to_retry_not_a_configuration_error() -> None:
    # Given SSM answering ThrottlingException
    settings = Settings(jwt_secret_parameter=PARAMETER)
    keys = TokenKeys(settings, ssm_client=lambda region: _ThrottledSsm())
    # When a request is authenticated / Then the caller is told to retry
    with pytest.raises(AuthUnavailableError, match="ThrottlingException"):
        authenticate(_token(), settings, NOW, keys)
