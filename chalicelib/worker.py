"""SQS batch handling: one failed job never fails the others of its batch."""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.container import get_container
from chalicelib.errors import SyncInProgressError

logger = logging.getLogger(__name__)

# Leave the worker this much of its Lambda time to hand the rest of a long sync off.
_HANDOFF_MARGIN_SECONDS = 15.0


def handle_sqs_batch(records: list[Any], context: Any) -> dict[str, Any]:
    """Run each job; return SQS partial-batch failures (``ReportBatchItemFailures``)."""
    container = get_container()
    failures: list[dict[str, str]] = []
    for record in records:
        deadline = None
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining_ms):
            remaining = remaining_ms() / 1000.0
            # A function this short could not hand off usefully; let it run to its own timeout.
            if remaining > 2 * _HANDOFF_MARGIN_SECONDS:
                deadline = container.clock.now() + remaining - _HANDOFF_MARGIN_SECONDS
        try:
            result = container.worker.handle(record.body, deadline)
            logger.info("job handled: %s", result)
        except SyncInProgressError:
            # Someone else holds the lease right now; SQS redelivers after the visibility timeout.
            failures.append({"itemIdentifier": record.to_dict()["messageId"]})
        except Exception:
            logger.exception("job failed")
            failures.append({"itemIdentifier": record.to_dict()["messageId"]})
    return {"batchItemFailures": failures}
