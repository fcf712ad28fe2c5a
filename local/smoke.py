"""``--smoke``: the running service checked end to end through its HTTP API, the worker and one tick."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from local.console import say
from local.emulator import FIRST_TICK_DELAY_SECONDS, QueueWorker, ScheduleTicker, describe_tick
from local.environment import DEMO_USER


def _get_json(url: str, token: str, timeout: float = 30) -> tuple[int, Any]:
    import requests

    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text.strip()


def _synced_at(sync_status: Any, connection_id: str) -> dict[str, str | None]:
    """``{data_type: last_sync_at}`` of one connection's scheduled data types in a sync-status answer."""
    if not isinstance(sync_status, dict):
        return {}
    for connection in sync_status.get("connections", []):
        if connection.get("connection_id") == connection_id:
            return {
                data_type: dataset.get("last_sync_at")
                for data_type, dataset in connection.get("datasets", {}).items()
                if dataset.get("schedule_every_seconds") is not None
            }
    return {}


def smoke_check(
    base_url: str,
    user_token: str,
    operator_token: str,
    worker: QueueWorker,
    ticker: ScheduleTicker,
    start_schedule: Callable[[], None],
) -> bool:
    """An inline read, a queued job through SQS and the worker, the operator status, then one scheduled tick.

    The schedule starts only after the first two checks, so they never race a tick; its first tick then
    must get a scheduled dataset of the demo user that nothing else touched synced by the worker.
    """
    import requests

    headers = {"Authorization": f"Bearer {user_token}"}
    read = requests.get(f"{base_url}/users/{DEMO_USER}/connections/demo/data/recovery", headers=headers, timeout=60)
    try:
        body: Any = read.json()
    except ValueError:
        body = {}
    metadata = body.get("metadata", {}) if isinstance(body, dict) else {}
    say(f"smoke: GET recovery -> {read.status_code}: {metadata.get('message') or body}")
    read_ok = read.status_code == 200 and bool(metadata.get("message"))

    queued = requests.post(
        f"{base_url}/users/{DEMO_USER}/connections/demo/sync",
        headers=headers,
        json={"data_type": "sleep"},
        timeout=30,
    )
    say(f"smoke: POST sync sleep -> {queued.status_code}: {queued.text.strip()}")
    worker_ok = False
    if queued.status_code == 202:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not worker_ok:
            worker_ok = any('"data_type":"sleep"' in b for b in worker.acknowledged)
            time.sleep(0.2)
    say(f"smoke: worker handled the queued job: {'yes' if worker_ok else 'NO'}")

    code, status = _get_json(f"{base_url}/sync/status", operator_token)
    running = status.get("status") if isinstance(status, dict) else None
    say(f"smoke: GET /sync/status (operator) -> {code}: status {running or status}")
    status_ok = code == 200 and running == "running"
    code, denied = _get_json(f"{base_url}/sync/status", user_token)
    say(f"smoke: GET /sync/status (user) -> {code}: {denied}")
    status_ok = status_ok and code == 403

    return read_ok and worker_ok and status_ok and _smoke_tick(base_url, user_token, ticker, start_schedule)


def _smoke_tick(base_url: str, user_token: str, ticker: ScheduleTicker, start_schedule: Callable[[], None]) -> bool:
    status_url = f"{base_url}/users/{DEMO_USER}/sync-status"
    code, before = _get_json(status_url, user_token)
    waiting = sorted(data_type for data_type, at in _synced_at(before, "demo").items() if at is None)
    if code != 200 or not waiting:
        say(f"smoke: no never-synced scheduled dataset of {DEMO_USER}/demo to watch ({code}: {before})")
        return False
    start_schedule()
    deadline = time.monotonic() + FIRST_TICK_DELAY_SECONDS + 15
    while time.monotonic() < deadline and not ticker.summaries:
        time.sleep(0.2)
    summary = ticker.summaries[0] if ticker.summaries else None
    say(f"smoke: schedule fired: {describe_tick(summary) if summary is not None else 'NO'}")
    if not isinstance(summary, dict) or not summary.get("queued"):
        return False
    synced: dict[str, str | None] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, after = _get_json(status_url, user_token)
        synced = {data_type: at for data_type, at in _synced_at(after, "demo").items() if data_type in waiting and at}
        if synced:
            break
        time.sleep(1.0)
    shown = ", ".join(f"demo/{data_type} at {at}" for data_type, at in sorted(synced.items())) or "NO"
    say(f"smoke: scheduled sync of {DEMO_USER} ({', '.join(waiting)} never synced before): {shown}")
    return bool(synced)
