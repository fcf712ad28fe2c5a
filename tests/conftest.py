"""Shared fixtures. AWS is always moto; time is always a FakeClock unless a test says otherwise."""

from __future__ import annotations

import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
for _var in ("SMART_SYNC_DYNAMODB_HOST", "SMART_SYNC_SQS_ENDPOINT", "SMART_SYNC_QUEUE_URL"):
    os.environ.pop(_var, None)
