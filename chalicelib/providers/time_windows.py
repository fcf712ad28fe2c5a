"""The ``time_window`` pagination kind: consecutive windows from a start up to ``now``.

A page token is the next window's start in epoch milliseconds. Pure functions of the
token, the incremental ``since`` and ``now``; no clock is read here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.providers.instants import format_instant, parse_instant, resolution_ms
from chalicelib.providers.json_path import dig
from chalicelib.providers.pagination_kinds import PagePlan, PaginationError, TimeWindow, Window, token_number


def plan_window(pagination: TimeWindow, token: str | None, *, since: str | None, now: float) -> PagePlan:
    step = resolution_ms(pagination.time_format)
    if token is not None:
        start = token_number(token, pagination.kind, minimum=0)
    elif since is not None:
        parsed = parse_instant(since)
        if parsed is None:
            raise PaginationError("pagination time_window: the incremental watermark is not a time")
        start = parsed
    else:
        start = math.floor(now * 1000) - pagination.initial_lookback_seconds * 1000
    start -= start % step
    ceiling = _ceiling(now, step)
    end = min(start + pagination.window_seconds * 1000, ceiling)
    if end <= start:
        return PagePlan(window=Window(start, start), exhausted=True)
    params = (
        (pagination.start_param, format_instant(start, pagination.time_format)),
        (pagination.end_param, format_instant(end, pagination.time_format)),
    )
    return PagePlan(params=params, window=Window(start, end))


def _ceiling(now: float, step: int) -> int:
    """The latest instant a window may reach: ``now``, aligned down to the format's resolution."""
    now_ms = math.floor(now * 1000)
    return now_ms - now_ms % step


def next_window(
    pagination: TimeWindow, plan: PagePlan, items: Sequence[Any], page_size: int | None, now: float
) -> str | None:
    if plan.window is None or plan.exhausted:
        return None
    window = plan.window
    step = resolution_ms(pagination.time_format)
    following = window.end_ms
    full = page_size is not None and len(items) >= page_size
    if full and pagination.record_time_field is not None:
        # The provider cut the window short: go on just after the newest record it gave.
        times = [parse_instant(dig(item, pagination.record_time_field)) for item in items if isinstance(item, Mapping)]
        known = [moment for moment in times if moment is not None]
        if known:
            after_newest = max(known) + step
            after_newest -= after_newest % step
            following = min(max(after_newest, window.start_ms + step), window.end_ms)
    if following >= _ceiling(now, step):
        return None
    return str(following)
