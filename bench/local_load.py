"""8. The local run under load (``python -m bench.run --only local-load``). A script's part, not a test.

Starts the local service exactly as ``make run`` does (``python -m local.run`` in its own process: moto,
the worker and the schedule in one process, ``chalice local`` in another), on free ports, with one more
provider in its providers file: ``load``, a ``rest`` provider whose upstream is a loopback server in this
process that takes ``LOAD_FETCH_SECONDS`` per page and counts every request. Then ``readers`` threads of
this process read the same never-synced dataset at the same instant over HTTP.

Reported: answers with data (target at least 90 of 100), the slowest answer (target within the read
budget plus 2 s), and the upstream calls (target exactly 1: one sync, the others joined it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests

from bench.loopback import JsonHandler, LoopbackServer
from bench.report import Table, percentile
from local.environment import DEMO_USER, HOST, PROJECT_DIR, free_port, stage_environment

LOAD_READERS = 100
LOAD_FETCH_SECONDS = 1.5
"""One page, one upstream call: the sync the readers wait for takes about this long."""
LOAD_RECORDS = 30
LOAD_PROVIDER = "load"
LOAD_DATA_TYPE = "items"
READ_BUDGET_SECONDS = 10.0
"""``SMART_SYNC_READ_BUDGET_SECONDS`` in ``.chalice/config.json`` (read from there when it is set)."""
_START_TIMEOUT_SECONDS = 120.0
_READ_TIMEOUT_SECONDS = 60.0
_TOKEN_LINE = re.compile(r"^eyJ[\w-]+\.[\w-]+\.[\w-]+$")


class SlowUpstream(LoopbackServer):
    """``GET /items`` on 127.0.0.1: one page of ``records`` items after ``delay`` seconds; counts requests."""

    def __init__(self, delay: float, records: int = LOAD_RECORDS) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        upstream = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                with upstream._lock:
                    upstream.calls += 1
                time.sleep(delay)
                items = [{"id": f"item-{k}", "updated_at": "2026-11-01T00:00:00Z", "value": k} for k in range(records)]
                self._answer(200, {"items": items, "next": None})

        super().__init__(Handler, "load-upstream")

    @property
    def base_url(self) -> str:
        return self.origin


def providers_file(directory: Path, upstream_url: str) -> Path:
    """The default providers file plus ``load`` (on demand only: the schedule never touches it)."""
    default = PROJECT_DIR / "chalicelib" / "providers.json"
    config = json.loads(default.read_text())
    config[LOAD_PROVIDER] = {
        "type": "rest",
        "base_url": upstream_url,
        "timeout_seconds": 30,
        "data_types": {
            LOAD_DATA_TYPE: {
                "path": "/items",
                "records_path": "items",
                "id_field": "id",
                "updated_at_field": "updated_at",
                "policy": {"cooldown_seconds": 300, "max_staleness_seconds": 3600, "schedule_every_seconds": None},
            }
        },
    }
    path = directory / "providers.json"
    path.write_text(json.dumps(config))
    return path


@dataclass
class Runner:
    """``python -m local.run`` as a child process; its demo user token once the banner is out."""

    process: subprocess.Popen[bytes]
    base_url: str
    token: str
    lines: list[tuple[float, str]]
    """Every line it printed, with the ``time.monotonic()`` it arrived at."""

    def first_line_at(self, text: str) -> float | None:
        return next((at for at, line in self.lines if text in line), None)


def _drain(stream: IO[bytes], lines: list[tuple[float, str]], ready: threading.Event) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        lines.append((time.monotonic(), line))
        if line.startswith("Ctrl-C stops everything"):
            ready.set()
    ready.set()


@contextmanager
def local_run(providers: Path) -> Iterator[Runner]:
    """The local service as ``make run`` starts it, on free ports; stopped with SIGTERM (as Ctrl-C would)."""
    port = free_port()
    env = dict(os.environ, SMART_SYNC_PROVIDERS_FILE=str(providers), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "local.run", "--port", str(port), "--aws-port", str(free_port())]
    process = subprocess.Popen(
        command, cwd=PROJECT_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    lines: list[tuple[float, str]] = []
    ready = threading.Event()
    threading.Thread(target=_drain, args=(process.stdout, lines, ready), name="local-run-output", daemon=True).start()
    try:
        if not ready.wait(_START_TIMEOUT_SECONDS) or process.poll() is not None:
            raise RuntimeError("local.run did not start:\n" + "\n".join(line for _, line in lines[-30:]))
        token = next(line for _, line in lines if _TOKEN_LINE.match(line))  # the demo user's comes first
        yield Runner(process, f"http://{HOST}:{port}", token, lines)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@dataclass
class Answer:
    status: int
    seconds: float
    records: int
    source: str


def read_at_once(url: str, token: str, readers: int) -> list[Answer]:
    """``readers`` GETs of ``url``, released at the same instant; each answer's status, time and records."""
    barrier = threading.Barrier(readers)
    answers: list[Answer] = []
    lock = threading.Lock()

    def read() -> None:
        with requests.Session() as session:
            barrier.wait()
            started = time.monotonic()
            try:
                response = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=_READ_TIMEOUT_SECONDS)
                status, body = response.status_code, response.json()
            except (requests.RequestException, ValueError) as exc:
                status, body = 0, {"error": str(exc)}
            elapsed = time.monotonic() - started
        data = body.get("data") if isinstance(body, dict) else None
        metadata = body.get("metadata") if isinstance(body, dict) else None
        source = str(metadata.get("source")) if isinstance(metadata, dict) else "-"
        with lock:
            answers.append(Answer(status, elapsed, len(data) if isinstance(data, list) else 0, source))

    threads = [threading.Thread(target=read, name=f"load-reader-{index}") for index in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_READ_TIMEOUT_SECONDS + 10)
    return answers


def read_budget() -> float:
    return float(stage_environment("dev").get("SMART_SYNC_READ_BUDGET_SECONDS", READ_BUDGET_SECONDS))


def bench_local_load(results: dict[str, Any], *, readers: int = LOAD_READERS) -> Table:
    budget = read_budget()
    table = Table(
        f"8. The local run under load: {readers} concurrent HTTP reads of one never-synced dataset whose sync is "
        f"one {LOAD_FETCH_SECONDS:g} s upstream call, against `python -m local.run` (chalice local + moto, worker "
        f"and schedule as `make run` starts them); read budget {budget:g} s"
    )
    body = {"provider": LOAD_PROVIDER, "credentials": {}}
    with (
        tempfile.TemporaryDirectory() as directory,
        SlowUpstream(LOAD_FETCH_SECONDS) as upstream,
        local_run(providers_file(Path(directory), upstream.base_url)) as runner,
    ):
        connection = f"{runner.base_url}/users/{DEMO_USER}/connections/{LOAD_PROVIDER}"
        created = requests.put(connection, headers={"Authorization": f"Bearer {runner.token}"}, json=body, timeout=30)
        if created.status_code not in (200, 201):
            raise RuntimeError(f"PUT {connection} -> {created.status_code}: {created.text}")
        started = time.monotonic()
        answers = read_at_once(f"{connection}/data/{LOAD_DATA_TYPE}", runner.token, readers)
        wall = time.monotonic() - started
        calls = upstream.calls
        dataset = f"{DEMO_USER}/{LOAD_PROVIDER}/{LOAD_DATA_TYPE}"
        sync_started = runner.first_line_at(f"sync started: {dataset}")
        sync_ended = runner.first_line_at(f"sync succeeded: {dataset}") or runner.first_line_at(
            f"sync failed: {dataset}"
        )
    with_data = sum(1 for answer in answers if answer.status == 200 and answer.records > 0)
    times = [answer.seconds for answer in answers] or [0.0]
    statuses = Counter(answer.status for answer in answers)
    sources = Counter(answer.source for answer in answers if answer.status == 200)
    table.add("answers with data (200 and records)", f"{with_data} of {readers}", f">= {int(readers * 0.9)}")
    table.add("slowest answer (s)", f"{max(times):.2f}", f"<= {budget + 2:g}")
    table.add("upstream calls", calls, "1")
    table.add("  answers by status", dict(sorted(statuses.items())))
    table.add("  200s by metadata.source", dict(sorted(sources.items())) or "-")
    table.add(
        "  fastest / median / p90 answer (s)",
        f"{min(times):.2f} / {percentile(times, 50):.2f} / {percentile(times, 90):.2f}",
    )
    table.add("  wall time of the burst (s)", f"{wall:.2f}")
    shown = " / ".join("-" if at is None else f"+{at - started:.2f}" for at in (sync_started, sync_ended))
    table.add("  the sync started / ended, from the API's log (s after the burst)", shown)
    results["local_load"] = {
        "readers": readers,
        "answers_with_data": with_data,
        "slowest_seconds": round(max(times), 2),
        "median_seconds": round(percentile(times, 50), 2),
        "upstream_calls": calls,
        "statuses": {str(k): v for k, v in statuses.items()},
        "read_budget_seconds": budget,
    }
    return table
