"""A provider wrapper that records every page fetch: the upstream calls tests and the benchmark count."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.domain.upstream import DataTypeSpec, FetchRequest, Page
from chalicelib.providers.base import Provider


class CountingProvider:
    def __init__(self, inner: Provider, before_fetch: Callable[[FetchRequest], None] | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.requests: list[FetchRequest] = []
        self.before_fetch = before_fetch
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return self.inner.data_types()

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        self.inner.validate_connection(credentials, settings)

    def fetch_page(self, request: FetchRequest) -> Page:
        with self._lock:
            self.requests.append(request)
        if self.before_fetch is not None:
            self.before_fetch(request)
        return self.inner.fetch_page(request)
