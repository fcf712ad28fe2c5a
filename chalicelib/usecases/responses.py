"""The answer of a use case whose status is part of the product's contract.

The read path's tiers (docs/operations.md: 200 from the cache, 202 while a first sync runs, 502 or 503
with nothing cached), a manual sync's 200 or 202 and a connection's 201 or 200 are decisions of
the use case, not of the transport; ``chalicelib/api/views.py`` turns this value into the HTTP
response. Errors are not answered this way: they are raised, and ``chalicelib/api/errors.py`` maps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ApiResponse:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
