"""SQS batch handling: one failed job never fails the others of its batch."""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.container import get_container
from chalicelib.domain.errors import SyncInProgressError
from chalicelib.domain.logs import log_crash

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


class NotEnoughTimeError(Exception):
    """Too little of the Lambda's time is left to start another job: SQS gives it back later."""


def handle_sqs_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run each job; return SQS partial-batch failures (``ReportBatchItemFailures``).

    Powertools' ``BatchProcessor`` reports a failed record by its messageId and lets the
    others of the batch be acknowledged; a batch where every record failed is reported
    the same way instead of raising (SQS retries it the same either way).
    """
    if not event.get("Records"):
        return {"batchItemFailures": []}  # (Lambda never sends an empty batch; Powertools would reject one)
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    container = get_container()
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)

    def remaining() -> float | None:
        return remaining_ms() / 1000.0 if callable(remaining_ms) else None

    function_seconds = remaining()

    def run_job(record: Any) -> str:
        message_id = record.message_id
        left = remaining()
        deadline = job_deadline(left, function_seconds, container.clock.now())
        if deadline is not None and left is not None and left < 2 * _HANDOFF_MARGIN_SECONDS:
            # Rather than be killed mid-sync, give it back to SQS.
            raise NotEnoughTimeError()
        try:
            result = container.worker.handle(record.body, deadline)
        except SyncInProgressError:
            # Someone else holds the lease right now; SQS redelivers after the visibility timeout.
            logger.info("job %s: dataset busy, redelivered later", message_id)
            raise
        except Exception as exc:
            log_crash(logger, f"job {message_id} failed", exc)
            raise
        logger.info("job %s handled: %s", message_id, result)
        return result

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    response: dict[str, Any] = dict(
        process_partial_response(event=event, record_handler=run_job, processor=processor, context=context)
    )
    return response


def handle_tick() -> dict[str, Any]:
    """The schedule's tick: plan and send this minute's jobs."""
    return get_container().fanout.tick()
