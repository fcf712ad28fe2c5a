"""The local runner's schedule: the loop's timing and the event it hands the chalice handler."""

from __future__ import annotations

import threading
import time
from typing import Any

from chalice.app import Chalice, CloudWatchEvent, Rate

from local.emulator import ScheduleTicker, describe_tick, schedule_loop


def test_the_loop_ticks_after_the_first_delay_then_every_interval_until_stopped() -> None:
    stop = threading.Event()
    fired: list[float] = []

    def tick() -> None:
        fired.append(time.monotonic())
        if len(fired) == 3:
            stop.set()

    started = time.monotonic()
    schedule_loop(stop, tick, interval_seconds=0.1, first_delay_seconds=0.02)

    assert len(fired) == 3
    assert 0.02 <= fired[0] - started < 0.09
    assert fired[1] - started >= 0.12 - 0.005
    assert fired[2] - started >= 0.22 - 0.005


def test_a_failing_tick_does_not_end_the_loop() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 2:
            stop.set()
        raise RuntimeError("boom")

    schedule_loop(stop, tick, interval_seconds=0.01, first_delay_seconds=0.0)

    assert len(calls) == 2


def test_stop_ends_a_long_wait_at_once() -> None:
    stop = threading.Event()
    fired: list[int] = []
    thread = threading.Thread(target=schedule_loop, args=(stop, lambda: fired.append(1), 3600.0, 3600.0))
    thread.start()
    time.sleep(0.05)

    started = time.monotonic()
    stop.set()
    thread.join(timeout=2)

    assert not thread.is_alive()
    assert time.monotonic() - started < 1
    assert fired == []


def _scheduled_handler(result: Any = None, error: Exception | None = None) -> tuple[Any, list[Any]]:
    """A chalice scheduled handler as ``app.schedule`` wraps it (``handler(event_dict, context)``)."""
    app = Chalice(app_name="t")
    seen: list[Any] = []

    @app.schedule(Rate(1, unit=Rate.MINUTES))
    def tick(event: CloudWatchEvent) -> Any:
        seen.append(event)
        if error is not None:
            raise error
        return result

    return tick, seen


def test_the_ticker_hands_chalice_a_scheduled_event_and_a_context() -> None:
    summary = {"trigger": "schedule", "due": 3, "queued": 2, "skipped": {"already_queued": 1}}
    handler, seen = _scheduled_handler(result=summary)
    rule = "arn:aws:events:us-east-1:123456789012:rule/t-dev-tick-event"
    ticker = ScheduleTicker(handler, "t-dev-tick", rule, timeout_seconds=60)

    assert ticker.fire() == summary

    (event,) = seen
    assert event.detail_type == "Scheduled Event"
    assert event.source == "aws.events"
    assert event.resources == [rule]
    assert event.detail == {}
    assert event.time.endswith("Z")
    assert event.context.function_name == "t-dev-tick"
    assert 55_000 < event.context.get_remaining_time_in_millis() <= 60_000
    assert ticker.summaries == [summary]


def test_a_raising_handler_is_logged_not_raised() -> None:
    handler, _ = _scheduled_handler(error=RuntimeError("table missing"))
    ticker = ScheduleTicker(handler, "t-dev-tick", "arn", timeout_seconds=60)

    assert ticker.fire() is None
    assert ticker.summaries == []


def test_one_line_per_tick() -> None:
    assert describe_tick({"due": 9, "queued": 9, "skipped": {}}) == "tick: 9 due, 9 queued"
    assert (
        describe_tick({"due": 6, "queued": 0, "skipped": {"already_queued": 5, "running": 1}})
        == "tick: 6 due, 0 queued; skipped already_queued 5, running 1"
    )
    assert describe_tick({"due": 0, "queued": 0, "skipped": {"service_paused": "all"}}).startswith(
        "tick: scheduler paused"
    )
