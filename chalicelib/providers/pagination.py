"""How a ``rest`` provider walks from one page to the next: pure decisions, no I/O, no clock.

Each pagination kind answers two questions, both plain functions of their inputs:

- ``plan_page``: given the page token the engine kept (``None`` for the first page), the
  incremental ``since`` and ``now``, what must this call add to the data type's request
  (query parameters), or which path-and-query must it call instead (a next-page URL)?
- ``next_page_token``: given the answer (body, lower-cased headers, the raw records list),
  what is the token of the following page, ``None`` when this page was the last?

A page token is an opaque string the engine stores in its checkpoint, so a crashed sync
resumes where it stopped. For the next-URL kinds it is the path-and-query from the host;
for ``offset`` and ``page_number`` the number to send; for ``time_window`` the next
window's start in epoch milliseconds.

Every upstream is hostile: a next-page URL must stay on the provider's origin (same scheme,
host and port, no userinfo) and under ``base_url``'s path prefix, without dot segments, or
the page fails. ``PaginationError`` messages name the pagination kind and what was wrong,
never the URL or the token (a URL may carry a signature or a cursor).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

from chalicelib.providers.http import MAX_HEADER_VALUE

BODY_CURSOR: Final = "body_cursor"
HEADER_CURSOR: Final = "header_cursor"
NEXT_URL: Final = "next_url"
LINK_HEADER: Final = "link_header"
OFFSET: Final = "offset"
PAGE_NUMBER: Final = "page_number"
TIME_WINDOW: Final = "time_window"
KINDS: Final = (BODY_CURSOR, HEADER_CURSOR, NEXT_URL, LINK_HEADER, OFFSET, PAGE_NUMBER, TIME_WINDOW)

EPOCH_MS: Final = "epoch_ms"
EPOCH_SECONDS: Final = "epoch_seconds"
ISO8601: Final = "iso8601"
TIME_FORMATS: Final = (EPOCH_MS, EPOCH_SECONDS, ISO8601)

# The HTTP layer keeps at most this many characters of a header value: a cursor or Link
# header that long may have been cut, and a cut link would silently end the pass.
HEADER_VALUE_LIMIT: Final = MAX_HEADER_VALUE


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


# --------------------------------------------------------------------------- JSON


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What ``dig`` returns when a step of the path is absent (distinct from a JSON ``null``)."""


def dig(document: Any, path: str) -> Any:
    """Follow a dotted path (``data.items``, ``results.0.id``); ``MISSING`` when any step is absent."""
    if not path:
        return document
    current = document
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def scalar_text(value: Any) -> str | None:
    """A JSON scalar as text; ``None`` for null, booleans, empty strings and non-scalars."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    return text or None


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class UrlScope:
    """Where a provider's calls may go: its origin and ``base_url``'s path prefix."""

    origin: str
    """``scheme://host[:port]``, scheme and host lower-cased."""
    base_path: str
    """``base_url``'s path without a trailing slash (``""`` when it has none)."""

    @classmethod
    def of(cls, base_url: str) -> UrlScope:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return cls(origin=f"{parts.scheme.lower()}://{host}{port}", base_path=parts.path.rstrip("/"))


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x20\x7f]")


def confine_url(reference: str, scope: UrlScope, *, base: str, kind: str) -> str:
    """Resolve a next-page URL against ``base`` and return its path-and-query from the host.

    Raises ``PaginationError`` (naming ``kind``, never the URL) unless it stays on the
    provider's origin and under ``base_url``'s path prefix. The fragment is dropped.
    """
    reference = reference.strip()
    leaves = PaginationError(f"pagination {kind}: the next page's URL leaves the provider's origin")
    if _CONTROL_CHARACTERS.search(reference) or "\\" in reference:
        raise PaginationError(f"pagination {kind}: the next page's URL has characters a URL cannot have")
    parts = urlsplit(urljoin(base, reference))
    allowed = urlsplit(scope.origin)
    if parts.scheme.lower() != allowed.scheme or "@" in parts.netloc:
        raise leaves
    if (parts.hostname or "") != (allowed.hostname or ""):
        raise leaves
    try:
        port = parts.port
    except ValueError:
        raise leaves from None
    default_port = _DEFAULT_PORTS.get(allowed.scheme)
    if (port or default_port) != (allowed.port or default_port):
        raise leaves

    path = parts.path or "/"
    decoded = unquote(path)
    outside = PaginationError(f"pagination {kind}: the next page's URL is outside base_url's path")
    if any(segment in (".", "..") for segment in decoded.split("/")) or "\\" in decoded:
        raise outside
    for candidate in (path, decoded):
        if scope.base_path and candidate != scope.base_path and not candidate.startswith(scope.base_path + "/"):
            raise outside
    return path + (f"?{parts.query}" if parts.query else "")


def split_target(target: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A path-and-query as its path and its query parameters, in order (blank values kept)."""
    path, _, query = target.partition("?")
    return path, tuple(parse_qsl(query, keep_blank_values=True))


# --------------------------------------------------------------------------- Link header (RFC 8288)


@dataclass(frozen=True)
class Link:
    target: str
    params: Mapping[str, str]
    """Parameter names lower-cased; the first occurrence of a name wins (RFC 8288, 3.3)."""

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(self.params.get("rel", "").lower().split())


HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An RFC 9110 token: what a header name (and a Link parameter name or bare value) may be."""


def parse_link_header(value: str) -> list[Link]:
    """Every link of a ``Link`` header (several headers arrive joined by commas).

    Commas inside ``<...>`` and inside quoted parameter values are part of them.
    ``PaginationError`` when the header does not follow the RFC 8288 grammar.
    """
    malformed = PaginationError("pagination link_header: the Link header is malformed")
    links: list[Link] = []
    length = len(value)
    index = 0

    def skip_space(at: int) -> int:
        while at < length and value[at] in " \t":
            at += 1
        return at

    while True:
        while index < length and value[index] in " \t,":
            index += 1
        if index >= length:
            return links
        if value[index] != "<":
            raise malformed
        close = value.find(">", index + 1)
        if close < 0:
            raise malformed
        target = value[index + 1 : close].strip()
        index = close + 1
        params: dict[str, str] = {}
        while True:
            index = skip_space(index)
            if index >= length or value[index] != ";":
                break
            index = skip_space(index + 1)
            name_match = HEADER_NAME.match(value, index)
            if name_match is None:
                if index < length and value[index] in ";,":
                    continue  # an empty parameter ("<x>; ; rel=next") carries nothing
                raise malformed
            name = name_match.group().lower()
            index = skip_space(name_match.end())
            param_value = ""
            if index < length and value[index] == "=":
                index = skip_space(index + 1)
                if index < length and value[index] == '"':
                    param_value, index = _quoted_string(value, index + 1, malformed)
                else:
                    token_match = HEADER_NAME.match(value, index)
                    if token_match is None:
                        raise malformed
                    param_value = token_match.group()
                    index = token_match.end()
            params.setdefault(name, param_value)
        index = skip_space(index)
        if index < length and value[index] != ",":
            raise malformed
        links.append(Link(target=target, params=params))


def _quoted_string(value: str, index: int, malformed: PaginationError) -> tuple[str, int]:
    """The content of a quoted string starting after its opening quote, and the index after its closing one."""
    text: list[str] = []
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            text.append(value[index + 1])
            index += 2
        elif char == '"':
            return "".join(text), index + 1
        else:
            text.append(char)
            index += 1
    raise malformed


def next_link(value: str) -> str | None:
    """The target of the first ``rel="next"`` link (``rel`` may list several relations)."""
    for link in parse_link_header(value):
        if "next" in link.relations:
            return link.target or None
    return None


# --------------------------------------------------------------------------- time


_NUMBER: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# Epoch numbers above this are milliseconds (1973 in ms, year 5138 in seconds).
_MILLISECONDS_THRESHOLD: Final = 100_000_000_000


def parse_instant(value: Any) -> int | None:
    """An instant as epoch milliseconds: epoch seconds or milliseconds (told apart by size),
    as a number or numeric text, or ISO 8601 text (UTC when it has no offset). ``None`` if unusable."""
    number: float
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            number = float(text)
        else:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return math.floor(moment.timestamp() * 1000)
    else:
        return None
    if not math.isfinite(number):
        return None
    return math.floor(number if abs(number) >= _MILLISECONDS_THRESHOLD else number * 1000)


def format_instant(epoch_ms: int, time_format: str) -> str:
    """An instant as a time window sends it: epoch ms, epoch seconds, or ISO 8601 UTC with milliseconds."""
    if time_format == EPOCH_SECONDS:
        return str(epoch_ms // 1000)
    if time_format == ISO8601:
        seconds, millis = divmod(epoch_ms, 1000)
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
    return str(epoch_ms)


def _resolution_ms(time_format: str) -> int:
    """The smallest step a time format can express; windows are aligned to it."""
    return 1000 if time_format == EPOCH_SECONDS else 1


# --------------------------------------------------------------------------- decisions


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


def _whole_number(token: str, kind: str, *, minimum: int) -> int:
    if not token.isdigit() or int(token) < minimum:
        raise PaginationError(f"pagination {kind}: the page token is not a number this kind produces")
    return int(token)


def plan_page(
    pagination: Pagination | None, token: str | None, *, since: str | None, now: float, scope: UrlScope
) -> PagePlan:
    """What the call for the page ``token`` points at must add (``token`` is ``None`` on the first page)."""
    if pagination is None:
        return PagePlan()
    if isinstance(pagination, BodyCursor | HeaderCursor):
        return PagePlan(params=((pagination.request_param, token),) if token is not None else ())
    if isinstance(pagination, NextUrl | LinkHeader):
        if token is None:
            return PagePlan()
        # The checkpoint is storage, not proof: check the stored URL again before it is called.
        if not token.startswith("/"):
            raise PaginationError(f"pagination {pagination.kind}: the page token is not a path on the origin")
        return PagePlan(target=confine_url(token, scope, base=scope.origin + "/", kind=pagination.kind))
    if isinstance(pagination, Offset):
        offset = 0 if token is None else _whole_number(token, pagination.kind, minimum=0)
        return PagePlan(params=((pagination.offset_param, str(offset)),), position=offset)
    if isinstance(pagination, PageNumber):
        page = pagination.first_page if token is None else _whole_number(token, pagination.kind, minimum=0)
        return PagePlan(params=((pagination.page_param, str(page)),), position=page)
    return _plan_window(pagination, token, since=since, now=now)


def _plan_window(pagination: TimeWindow, token: str | None, *, since: str | None, now: float) -> PagePlan:
    step = _resolution_ms(pagination.time_format)
    if token is not None:
        start = _whole_number(token, pagination.kind, minimum=0)
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


def next_page_token(
    pagination: Pagination | None,
    plan: PagePlan,
    *,
    token: str | None,
    body: Any,
    headers: Mapping[str, str],
    items: Sequence[Any],
    page_size: int | None,
    scope: UrlScope,
    request_target: str,
    now: float,
) -> str | None:
    """The token of the page after this one, ``None`` when this was the last.

    ``headers`` have lower-cased names; ``items`` is the raw records list (skipped records
    included: they took a place on the page); ``request_target`` is the path-and-query just
    called (a relative next URL resolves against it). Raises ``PaginationError`` when the
    answer points somewhere unsafe or back at the page just fetched.
    """
    if pagination is None:
        return None
    following = _following(pagination, plan, body, headers, items, page_size, scope, request_target, now)
    repeats = {token, request_target} if isinstance(pagination, NextUrl | LinkHeader) else {token}
    if following is not None and following in repeats:
        raise PaginationError(f"pagination {pagination.kind}: the provider returned the same page token again")
    return following


def _following(
    pagination: Pagination,
    plan: PagePlan,
    body: Any,
    headers: Mapping[str, str],
    items: Sequence[Any],
    page_size: int | None,
    scope: UrlScope,
    request_target: str,
    now: float,
) -> str | None:
    base = scope.origin + request_target
    if isinstance(pagination, BodyCursor):
        return _body_cursor(dig(body, pagination.response_field), pagination)
    if isinstance(pagination, HeaderCursor):
        value = _bounded_header(headers, pagination.response_header, pagination.kind)
        return (value.strip() or None) if value is not None else None
    if isinstance(pagination, NextUrl):
        raw = dig(body, pagination.response_field)
        if raw is MISSING or raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise PaginationError(f"pagination next_url: response_field {pagination.response_field!r} is not a URL")
        return confine_url(raw, scope, base=base, kind=pagination.kind)
    if isinstance(pagination, LinkHeader):
        value = _bounded_header(headers, "link", pagination.kind)
        target = next_link(value) if value is not None else None
        return None if target is None else confine_url(target, scope, base=base, kind=pagination.kind)
    if isinstance(pagination, Offset | PageNumber):
        if not items or (page_size is not None and len(items) < page_size):
            return None
        position = plan.position if plan.position is not None else 0
        return str(position + len(items) if isinstance(pagination, Offset) else position + 1)
    return _next_window(pagination, plan, items, page_size, now)


def _body_cursor(raw: Any, pagination: BodyCursor) -> str | None:
    if raw is not MISSING and raw is not None and not isinstance(raw, str | int | float):
        raise PaginationError(f"pagination.response_field {pagination.response_field!r} is not a scalar")
    return None if raw is MISSING else scalar_text(raw)


def _bounded_header(headers: Mapping[str, str], name: str, kind: str) -> str | None:
    value = headers.get(name.lower())
    if value is not None and len(value) >= HEADER_VALUE_LIMIT:
        raise PaginationError(
            f"pagination {kind}: the {name} header is longer than the {HEADER_VALUE_LIMIT} characters kept of a header"
        )
    return value


def _next_window(
    pagination: TimeWindow, plan: PagePlan, items: Sequence[Any], page_size: int | None, now: float
) -> str | None:
    if plan.window is None or plan.exhausted:
        return None
    window = plan.window
    step = _resolution_ms(pagination.time_format)
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
