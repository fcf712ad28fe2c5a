"""Counting AWS API calls for the benchmarks: every call, by service, operation and table."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import botocore.client


class AwsCallCounter:
    """Counts every botocore API call (``service:Operation(table)``), PynamoDB's and boto3's alike.

    PynamoDB creates its botocore session per thread and its client lazily, but every call
    ends in ``BaseClient._make_api_call``, so patching that one method sees every thread's
    clients. One logical call = one count (retries, which moto never causes, would be inside it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._seconds: dict[str, float] = {}
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        original: Callable[..., Any] = botocore.client.BaseClient._make_api_call
        counter = self

        def counting(client: Any, operation_name: str, api_params: Mapping[str, Any]) -> Any:
            name = f"{client.meta.service_model.service_name}:{operation_name}"
            table = api_params.get("TableName")
            if isinstance(table, str):
                name += f"({table.removeprefix('smart-sync-')})"
            started = time.perf_counter()
            try:
                return original(client, operation_name, api_params)
            finally:
                took = time.perf_counter() - started
                with counter._lock:
                    counter._calls[name] += 1
                    counter._seconds[name] = counter._seconds.get(name, 0.0) + took

        botocore.client.BaseClient._make_api_call = counting  # type: ignore[method-assign]
        self._installed = True

    @contextmanager
    def measure(self) -> Iterator[CallStats]:
        """Yields the calls (and the seconds spent in them, summed over threads) made inside the block."""
        result = CallStats()
        with self._lock:
            calls, seconds = Counter(self._calls), dict(self._seconds)
        try:
            yield result
        finally:
            with self._lock:
                result.counts.update(self._calls - calls)
                result.seconds.update(
                    {
                        name: took - seconds.get(name, 0.0)
                        for name, took in self._seconds.items()
                        if name in result.counts
                    },
                )

    @contextmanager
    def dynamodb_operations(self) -> Iterator[Counter[str]]:
        """Yields a Counter of the DynamoDB operations (``Query``, ``GetItem``...) made inside the block."""
        result: Counter[str] = Counter()
        with self.measure() as stats:
            yield result
        for name, count in stats.counts.items():
            service, operation = name.split(":", 1)
            if service == "dynamodb":
                result[operation.split("(", 1)[0]] += count


@dataclass
class CallStats:
    counts: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def seconds_text(self, top: int = 6) -> str:
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:top]
        return ", ".join(f"{name} {took:.1f}s" for name, took in ranked) or "-"


AWS_CALLS = AwsCallCounter()
