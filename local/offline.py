"""Point boto at nothing real: fake credentials, a fixed region, no local endpoints."""

from __future__ import annotations

import os

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_LOCAL_ENDPOINTS = (
    "SMART_SYNC_DYNAMODB_HOST",
    "SMART_SYNC_SQS_ENDPOINT",
    "SMART_SYNC_QUEUE_URL",
    "SMART_SYNC_KMS_ENDPOINT",
)


def use_in_process_aws() -> None:
    """For moto's ``mock_aws``: never reach real AWS, whatever the shell exports."""
    os.environ.update(_FAKE_AWS)
    for name in _LOCAL_ENDPOINTS:
        os.environ.pop(name, None)
