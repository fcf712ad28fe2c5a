"""The pagination kinds a ``rest`` provider may declare, and the plan of one page's call.

Values only: what each kind's ``pagination`` entry holds (read by ``pagination_config.py``),
which query parameters it adds (for clash checks) and the ``PagePlan`` that ``pagination.py``
and ``time_windows.py`` decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from chalicelib.providers.instants import EPOCH_MS

BODY_CURSOR: Final = "body_cursor"
HEADER_CURSOR: Final = "header_cursor"
NEXT_URL: Final = "next_url"
LINK_HEADER: Final = "link_header"
OFFSET: Final = "offset"
PAGE_NUMBER: Final = "page_number"
TIME_WINDOW: Final = "time_window"
KINDS: Final = (BODY_CURSOR, HEADER_CURSOR, NEXT_URL, LINK_HEADER, OFFSET, PAGE_NUMBER, TIME_WINDOW)


class PaginationError(ValueError):
    """The answer cannot be paged on safely. The message never quotes a URL or a token."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BodyCursor:
    """A cursor in the JSON body (``response_field``), sent back as ``request_param``."""

    response_field: str
    request_param: str
    kind: ClassVar[str] = BODY_CURSOR


@dataclass(frozen=True)
class HeaderCursor:
    """A cursor in a response header (``response_header``), sent back as ``request_param``."""

    response_header: str
    request_param: str
    kind: ClassVar[str] = HEADER_CURSOR


@dataclass(frozen=True)
class NextUrl:
    """The body's ``response_field`` holds the next page's URL (absolute or relative)."""

    response_field: str
    kind: ClassVar[str] = NEXT_URL


@dataclass(frozen=True)
class LinkHeader:
    """RFC 8288 ``Link: <url>; rel="next"``."""

    kind: ClassVar[str] = LINK_HEADER


@dataclass(frozen=True)
class Offset:
    """``offset_param`` counts records; the pass ends on a short or empty page."""

    offset_param: str
    kind: ClassVar[str] = OFFSET


@dataclass(frozen=True)
class PageNumber:
    """``page_param`` counts pages from ``first_page``; the pass ends on a short or empty page."""

    page_param: str
    first_page: int = 1
    kind: ClassVar[str] = PAGE_NUMBER


@dataclass(frozen=True)
class TimeWindow:
    """Consecutive ``[start, end]`` windows of at most ``window_seconds``, up to ``now``."""

    start_param: str
    end_param: str
    window_seconds: int
    initial_lookback_seconds: int
    time_format: str = EPOCH_MS
    record_time_field: str | None = None
    kind: ClassVar[str] = TIME_WINDOW


Pagination = BodyCursor | HeaderCursor | NextUrl | LinkHeader | Offset | PageNumber | TimeWindow


def request_params(pagination: Pagination | None) -> tuple[str, ...]:
    """The query parameters a kind adds to the data type's request (for clash checks)."""
    if isinstance(pagination, BodyCursor | HeaderCursor):
        return (pagination.request_param,)
    if isinstance(pagination, Offset):
        return (pagination.offset_param,)
    if isinstance(pagination, PageNumber):
        return (pagination.page_param,)
    if isinstance(pagination, TimeWindow):
        return (pagination.start_param, pagination.end_param)
    return ()


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class PagePlan:
    """What one call must look like for the pagination to advance."""

    params: tuple[tuple[str, str], ...] = ()
    """Query parameters added after the data type's own."""
    target: str | None = None
    """A path-and-query to call instead of the data type's request (a next-page URL)."""
    position: int | None = None
    """The offset or page number asked for."""
    window: Window | None = None
    """The time window asked for."""
    exhausted: bool = False
    """Nothing is left to ask for (a time window already at ``now``): make no call."""


def token_number(token: str, kind: str, *, minimum: int) -> int:
    if not token.isdigit() or int(token) < minimum:
        raise PaginationError(f"pagination {kind}: the page token is not a number this kind produces")
    return int(token)
