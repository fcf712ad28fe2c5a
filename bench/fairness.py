"""Fairness: one user's slow syncs against another user's one-page read (``python -m bench.run --only fairness``).

User A has enough slow demo connections to fill every one of the demo provider's concurrent slots
(``max_concurrent_syncs``, 10 by default): each of A's never-synced datasets is read at once, and each
sync fetches a few slow pages. While they run, user B reads a never-synced one-page dataset. Counted
first: the most of A's syncs that ran at once (from the fetches the provider saw) and whether B's read
answered from upstream; then B's read time. Real time (``SystemClock``): the demo's latency is slept,
against in-process moto.
"""

from __future__ import annotations

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from chalice.test import Client  # noqa: E402

from app import app  # noqa: E402
from bench.harness import fresh_aws, with_kms_key  # noqa: E402
from bench.report import Table  # noqa: E402
from chalicelib.api.auth import issue_token  # noqa: E402
from chalicelib.container import Container, build_container, set_container  # noqa: E402
from chalicelib.domain.clock import SystemClock  # noqa: E402
from chalicelib.domain.config import Settings  # noqa: E402
from chalicelib.domain.upstream import DataTypeSpec, FetchRequest, Page  # noqa: E402
from chalicelib.providers import ProviderRegistry  # noqa: E402
from chalicelib.providers.demo import DemoProvider  # noqa: E402
from chalicelib.store.items import create_tables  # noqa: E402

DATA_TYPE = "recovery"
ROUNDS = 2
SLOW_CONNECTIONS = 10
"""User A's connections: as many as the demo provider's slots (its default ``max_concurrent_syncs``)."""
SLOW_SETTINGS = {"latency_seconds": 2.5, "records": 30, "page_size": 10}
"""Three pages of 2.5 s each: one of A's syncs holds its slot for about 7.5 s (inside the 10 s read budget)."""
QUICK_SETTINGS = {"records": 5, "page_size": 10}
"""B's dataset: one page, no latency."""
HEAD_START_SECONDS = 1.0
"""How long A's syncs run before B reads (every one of them has started)."""


@dataclass
class SyncsSeen:
    """Which connections are in a sync (from their first fetch to their last page), and the most at once."""

    active: dict[str, set[str]] = field(default_factory=dict)
    most: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, user: str, connection_id: str) -> None:
        with self.lock:
            running = self.active.setdefault(user, set())
            running.add(connection_id)
            self.most[user] = max(self.most.get(user, 0), len(running))

    def end(self, user: str, connection_id: str) -> None:
        with self.lock:
            self.active.get(user, set()).discard(connection_id)


class WatchedDemo:
    """The demo provider, telling ``SyncsSeen`` when each connection's sync fetches and ends."""

    def __init__(self, seen: SyncsSeen) -> None:
        self.inner = DemoProvider("demo")
        self.name = "demo"
        self._seen = seen

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return self.inner.data_types()

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        self.inner.validate_connection(credentials, settings)

    def fetch_page(self, request: FetchRequest) -> Page:
        user = request.connection_id.split("-", 1)[0]  # connection ids here are "<user>-<n>"
        self._seen.begin(user, request.connection_id)
        try:
            page = self.inner.fetch_page(request)
        except Exception:
            self._seen.end(user, request.connection_id)
            raise
        if page.next_page_token is None:
            self._seen.end(user, request.connection_id)
        return page


@dataclass
class Round:
    b_seconds: float
    b_status: int
    b_source: str
    a_most_at_once: int
    a_statuses: list[int]


def _headers(container: Container, user_id: str) -> dict[str, str]:
    token = issue_token(container.settings, user_id, time.time())
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _put(client: Client, container: Container, user_id: str, connection_id: str, settings: Mapping[str, Any]) -> None:
    body = {"provider": "demo", "credentials": {"token": "secret-demo-token"}, "settings": dict(settings)}
    response = client.http.put(
        f"/users/{user_id}/connections/{connection_id}", headers=_headers(container, user_id), body=json.dumps(body)
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"put_connection failed: {response.status_code} {response.body!r}")


def _read(client: Client, container: Container, user_id: str, connection_id: str) -> Any:
    path = f"/users/{user_id}/connections/{connection_id}/data/{DATA_TYPE}"
    return client.http.get(path, headers=_headers(container, user_id))


def one_round(settings: Settings) -> Round:
    with fresh_aws():
        keyed = with_kms_key(settings)
        seen = SyncsSeen()
        container = build_container(keyed, clock=SystemClock(), registry=ProviderRegistry({"demo": WatchedDemo(seen)}))
        set_container(container)
        create_tables()
        client = Client(app)
        a_ids = [f"a-{n}" for n in range(SLOW_CONNECTIONS)]
        for connection_id in a_ids:
            _put(client, container, "a", connection_id, SLOW_SETTINGS)
        _put(client, container, "b", "b-0", QUICK_SETTINGS)

        a_statuses: list[int] = []
        lock = threading.Lock()

        def read_a(connection_id: str) -> None:
            status = _read(client, container, "a", connection_id).status_code
            with lock:
                a_statuses.append(status)

        threads = [threading.Thread(target=read_a, args=(c,)) for c in a_ids]
        for thread in threads:
            thread.start()
        time.sleep(HEAD_START_SECONDS)
        started = time.perf_counter()
        b = _read(client, container, "b", "b-0")
        b_seconds = time.perf_counter() - started
        for thread in threads:
            thread.join()
        b_body = json.loads(b.body)
        source = str(b_body.get("metadata", {}).get("source", b_body.get("error", {}).get("code", "?")))
        return Round(round(b_seconds, 2), b.status_code, source, seen.most.get("a", 0), sorted(a_statuses))


def bench_fairness(settings: Settings, results: dict[str, Any]) -> Table:
    rounds = [one_round(settings) for _ in range(ROUNDS)]
    table = Table(
        f"Fairness: user A's {SLOW_CONNECTIONS} slow demo syncs (3 pages x {SLOW_SETTINGS['latency_seconds']} s) "
        "against user B's one-page read (moto, real time)"
    )
    for index, found in enumerate(rounds, start=1):
        table.add(f"round {index}: A's syncs running at once (most)", found.a_most_at_once)
        table.add(f"round {index}: B's read status / source", f"{found.b_status} / {found.b_source}", "200 / upstream")
        table.add(f"round {index}: B's read time (s)", found.b_seconds, "< 2")
        table.add(f"round {index}: A's read statuses", " ".join(str(s) for s in found.a_statuses))
    results["fairness"] = {
        "rounds": [
            {
                "a_most_at_once": r.a_most_at_once,
                "b_status": r.b_status,
                "b_source": r.b_source,
                "b_seconds": r.b_seconds,
                "a_statuses": r.a_statuses,
            }
            for r in rounds
        ]
    }
    return table
