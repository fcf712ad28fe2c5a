"""What the local run's processes see: the addresses, the AWS identity and the environment variables.

``chalice local --stage`` applies the stage's ``environment_variables`` over the environment it inherits;
``prepare_environment`` does the same in the runner, so the worker in this process and the API process
agree on the JWT secret, the table names and the budgets.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_AWS_PORT = 5005
DEFAULT_STAGE = "dev"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
DEMO_USER = "demo-user"
OPERATOR_SUBJECT = "operator"
TOKEN_TTL_SECONDS = 7 * 86400
"""The demo tokens' life; the local run raises SMART_SYNC_JWT_MAX_LIFETIME_SECONDS (24 h on AWS) to match."""
# Used only when neither the shell nor the chalice stage names a JWT secret. It is public, so only a process
# with SMART_SYNC_RUNTIME=local accepts it (chalicelib/store/jwt_secret.py lists it).
LOCAL_JWT_SECRET = "smart-sync-local-run-secret-not-for-production"
LOCAL_RUNTIME = "local"
# Short demo tiers so fresh -> stale -> expired can be watched in two minutes (--provider-policies turns it off).
DEMO_COOLDOWN_SECONDS = 30
DEMO_MAX_STALENESS_SECONDS = 120
LOCAL_KMS_ALIAS = "alias/smart-sync"
"""Used when neither the shell nor the chalice stage names the credentials key."""

ENDPOINT_VARS = (
    "SMART_SYNC_DYNAMODB_HOST",
    "SMART_SYNC_SQS_ENDPOINT",
    "SMART_SYNC_QUEUE_URL",
    "SMART_SYNC_KMS_ENDPOINT",
)
"""Set by the runner only, once the moto server and its queue exist."""
RUNNER_VARS = (*ENDPOINT_VARS, "SMART_SYNC_RUNTIME")
"""What a chalice stage may not set for the local run (the runner sets them)."""


def stage_environment(stage: str) -> dict[str, str]:
    """The environment variables ``chalice local --stage`` applies over ours (config values win)."""
    from chalice.cli.factory import CLIFactory

    config = CLIFactory(str(PROJECT_DIR)).create_config_obj(chalice_stage_name=stage)
    return {str(k): str(v) for k, v in config.environment_variables.items()}


def lambda_timeout_seconds(stage: str, function_name: str) -> int:
    """The function's ``lambda_timeout`` in ``.chalice/config.json`` (300, Lambda's chalice default, if unset)."""
    from chalice.cli.factory import CLIFactory

    config = CLIFactory(str(PROJECT_DIR)).create_config_obj(chalice_stage_name=stage)
    timeout = config.scope(stage, function_name).lambda_timeout
    return int(timeout) if timeout else 300


def prepare_environment(stage: str, *, demo_policies: bool) -> None:
    """Dummy AWS credentials, then exactly what the chalice process will see (minus the endpoints)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", *ENDPOINT_VARS):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    # The API process (chalice local) inherits this: both it and the worker accept the dev JWT secrets.
    os.environ["SMART_SYNC_RUNTIME"] = LOCAL_RUNTIME
    os.environ.setdefault("SMART_SYNC_JWT_MAX_LIFETIME_SECONDS", str(TOKEN_TTL_SECONDS))
    if demo_policies:
        overrides = {
            "demo": {"cooldown_seconds": DEMO_COOLDOWN_SECONDS, "max_staleness_seconds": DEMO_MAX_STALENESS_SECONDS}
        }
        os.environ.setdefault("SMART_SYNC_POLICY_OVERRIDES", json.dumps(overrides))
    stage_env = stage_environment(stage)
    clashing = sorted(set(stage_env) & set(RUNNER_VARS))
    if clashing:
        raise SystemExit(
            f"stage {stage!r} sets {', '.join(clashing)} in .chalice/config.json; the local run owns those"
        )
    if stage_env.get("SMART_SYNC_JWT_SECRET_PARAMETER"):
        # The local run signs its demo tokens itself, and chalice local would apply the stage's parameter name
        # over anything set here, pointing at a Parameter Store the embedded moto does not hold.
        raise SystemExit(
            f"stage {stage!r} reads its JWT secret from SSM or Secrets Manager (SMART_SYNC_JWT_SECRET_PARAMETER); "
            "the local run needs a stage without it (--stage dev)"
        )
    os.environ.pop("SMART_SYNC_JWT_SECRET_PARAMETER", None)
    os.environ.update(stage_env)
    os.environ.setdefault("SMART_SYNC_JWT_SECRET", LOCAL_JWT_SECRET)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on right now (the load benchmark's API port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])
