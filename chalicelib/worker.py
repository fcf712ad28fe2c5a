"""SQS batch handling: one failed job never fails the others of its batch."""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.container import get_container
from chalicelib.errors import SyncInProgressError
from chalicelib.logs import log_crash

logger = logging.getLogger(__name__)

# Leave the worker this much of its Lambda time to hand the rest of a long sync off.
_HANDOFF_MARGIN_SECONDS = 15.0


def job_deadline(remaining_seconds: float | None, function_seconds: float | None, now: float) -> float | None:
    """When a job must hand off, or ``None`` for no deadline. Raises nothing; pure.

    A function configured with less than two margins (tests, ``chalice local``)
    gets no deadline: it could not hand off usefully anyway.
    """
    if remaining_seconds is None or function_seconds is None or function_seconds <= 2 * _HANDOFF_MARGIN_SECONDS:
        return None
    return now + remaining_seconds - _HANDOFF_MARGIN_SECONDS


def handle_sqs_batch(records: list[Any], context: Any) -> dict[str, Any]:
    """Run each job; return SQS partial-batch failures (``ReportBatchItemFailures``)."""
    container = get_container()
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)

    def remaining() -> float | None:
        return remaining_ms() / 1000.0 if callable(remaining_ms) else None

    function_seconds = remaining()
    failures: list[dict[str, str]] = []
    for record in records:
        message_id = record.to_dict()["messageId"]
        left = remaining()
        deadline = job_deadline(left, function_seconds, container.clock.now())
        if deadline is not None and left is not None and left < 2 * _HANDOFF_MARGIN_SECONDS:
            # Too little time to start another job: give it back to SQS rather than be killed mid-sync.
            failures.append({"itemIdentifier": message_id})
            continue
        try:
            result = container.worker.handle(record.body, deadline)
            logger.info("job %s handled: %s", message_id, result)
        except SyncInProgressError:
            # Someone else holds the lease right now; SQS redelivers after the visibility timeout.
            failures.append({"itemIdentifier": message_id})
        except Exception as exc:
            log_crash(logger, f"job {message_id} failed", exc)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


def handle_tick() -> dict[str, Any]:
    """The schedule's tick: plan and send this minute's jobs."""
    return get_container().fanout.tick()
