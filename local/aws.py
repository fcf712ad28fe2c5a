"""The local AWS endpoint: an in-process moto server with the queue, the credentials key and the demo data."""

from __future__ import annotations

import os
from typing import Any

from local.environment import DEFAULT_AWS_PORT, DEMO_USER, HOST, LOCAL_KMS_ALIAS, REGION, port_is_free

VISIBILITY_TIMEOUT_SECONDS = 10
"""Redelivery delay for jobs the worker reports as failed (the cloud queue uses the Lambda timeout or more)."""


def start_moto(port: int | None) -> tuple[Any, int]:
    """Start moto in this process (so its patches apply). ``None``: 5005, else any free port.

    The patches (``local/moto_speed.py``): DynamoDB writes atomic per item as DynamoDB's are, and moto's
    own per-request costs cut, so that under load the service, not moto, is what takes the time.
    """
    from moto.server import ThreadedMotoServer

    from local.moto_speed import apply_all

    apply_all()
    if port is None:
        chosen = DEFAULT_AWS_PORT if port_is_free(DEFAULT_AWS_PORT) else 0
    elif port_is_free(port):
        chosen = port
    else:
        # ThreadedMotoServer.start() would wait forever for a server that failed to bind.
        raise SystemExit(f"--aws-port {port} is already in use")
    server = ThreadedMotoServer(ip_address=HOST, port=chosen, verbose=False)
    server.start()
    return server, int(server.get_host_and_port()[1])


def create_queue(endpoint: str, queue_name: str) -> str:
    import boto3

    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
    attributes = {"VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS)}
    return str(sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"])


def create_kms_key(endpoint: str, configured: str) -> str:
    """The credentials key on the moto server, under the alias the settings name; returns that alias.

    ``chalice local`` applies the stage's variables over ours, so the key must answer to the
    configured name: only an alias can be given to a key made here.
    """
    import boto3

    alias = configured or LOCAL_KMS_ALIAS
    if not alias.startswith("alias/"):
        raise SystemExit(f"SMART_SYNC_KMS_KEY_ID is {alias!r}; the local run needs an alias (alias/...) it can create")
    kms = boto3.client("kms", region_name=REGION, endpoint_url=endpoint)
    key_id = kms.create_key(Description="smart-sync local credentials key")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return alias


def seed_demo_data() -> None:
    """Tables plus ``demo-user`` with a healthy ``demo`` connection and a ``demo-flaky`` one."""
    from chalicelib.api.requests import connection_change
    from chalicelib.container import build_container
    from chalicelib.domain.config import settings_from_env
    from chalicelib.store.items import create_tables

    container = build_container(settings_from_env(os.environ))
    create_tables()
    demo_connections: dict[str, dict[str, Any]] = {
        "demo": {"latency_seconds": 1.5},
        # One page per sync, so each sync is a coin flip (the demo provider re-draws every minute).
        "demo-flaky": {"latency_seconds": 0.5, "failure_rate": 0.5, "page_size": 30},
    }
    for connection_id, connection_settings in demo_connections.items():
        # Through the same service as PUT /users/{u}/connections/{c}, so the demo data is created like real data.
        container.connections.put(
            DEMO_USER,
            connection_id,
            connection_change({"provider": "demo", "credentials": {"token": "demo"}, "settings": connection_settings}),
        )
