"""The shared SQS -> Lambda emulator (local/emulator.py): concurrent batches, partial failures, acknowledgements."""

from __future__ import annotations

import json
import threading
from typing import Any

from local.emulator import QueueWorker


class FakeQueue:
    """Just enough of an SQS client: hands out prepared batches, records deletes, stops the run once empty."""

    def __init__(self, batches: list[list[dict[str, Any]]], stop: threading.Event) -> None:
        self._batches = batches
        self._stop = stop
        self._lock = threading.Lock()
        self.deleted: list[str] = []

    def receive_message(self, **_: Any) -> dict[str, Any]:
        with self._lock:
            if self._batches:
                return {"Messages": self._batches.pop(0)}
        self._stop.set()  # the pollers finish the batches they hold, then end
        return {}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        with self._lock:
            self.deleted.extend(entry["ReceiptHandle"] for entry in Entries)
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}


def _message(name: str) -> dict[str, Any]:
    body = json.dumps({"user_id": "u", "connection_id": "c", "data_type": name, "trigger": "schedule", "run_id": name})
    return {"MessageId": f"id-{name}", "ReceiptHandle": f"rh-{name}", "Body": body}


def test_the_pollers_run_their_batches_at_the_same_time_like_concurrent_lambdas() -> None:
    # Given three batches and a handler that only returns once three invocations are running together
    stop = threading.Event()
    queue = FakeQueue([[_message("a")], [_message("b")], [_message("c"), _message("d")]], stop)
    together = threading.Barrier(3, timeout=10)
    events: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        together.wait()  # raises BrokenBarrierError (a failed batch) if the batches ran one at a time
        failed = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["messageId"] == "id-d"]
        return {"batchItemFailures": failed}

    worker = QueueWorker(lambda: queue, "url", "arn:queue", handler, "fn", 60, stop, concurrency=3)

    # When the worker runs until the queue is empty
    worker.start()
    assert worker.join(10) == 0

    # Then all three ran at once, each as a Lambda-shaped SQS event, and all but the reported failure were deleted
    assert worker.stats.handler_errors == []
    assert worker.stats.batches == 3
    assert worker.stats.messages == 4
    assert worker.stats.batch_item_failures == 1
    assert sorted(queue.deleted) == ["rh-a", "rh-b", "rh-c"]
    assert len(worker.acknowledged) == 3
    record = next(r for e in events for r in e["Records"] if r["messageId"] == "id-a")
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:queue"


def test_a_raising_handler_fails_its_whole_batch_and_deletes_nothing() -> None:
    # Given a batch whose handler raises
    stop = threading.Event()
    queue = FakeQueue([[_message("a"), _message("b")]], stop)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    worker = QueueWorker(lambda: queue, "url", "arn:queue", handler, "fn", 60, stop)

    # When it is delivered
    worker.run(queue)

    # Then nothing was acknowledged: SQS gives both back after the visibility timeout
    assert queue.deleted == []
    assert worker.stats.handler_errors == ["RuntimeError: boom"]
    assert worker.acknowledged == []
