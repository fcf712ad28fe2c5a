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

Next-page URLs are confined to the provider's origin by ``page_links.py``; time windows are
planned by ``time_windows.py``. ``PaginationError`` messages name the pagination kind and
what was wrong, never the URL or the token (a URL may carry a signature or a cursor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from chalicelib.providers.http import MAX_HEADER_VALUE
from chalicelib.providers.json_path import MISSING, dig, scalar_text
from chalicelib.providers.page_links import UrlScope, confine_url, next_link
from chalicelib.providers.pagination_kinds import (
    BodyCursor,
    HeaderCursor,
    LinkHeader,
    NextUrl,
    Offset,
    PageNumber,
    PagePlan,
    Pagination,
    PaginationError,
    token_number,
)
from chalicelib.providers.time_windows import next_window, plan_window

# The HTTP layer keeps at most this many characters of a header value: a cursor or Link
# header that long may have been cut, and a cut link would silently end the pass.
HEADER_VALUE_LIMIT: Final = MAX_HEADER_VALUE


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
        offset = 0 if token is None else token_number(token, pagination.kind, minimum=0)
        return PagePlan(params=((pagination.offset_param, str(offset)),), position=offset)
    if isinstance(pagination, PageNumber):
        page = pagination.first_page if token is None else token_number(token, pagination.kind, minimum=0)
        return PagePlan(params=((pagination.page_param, str(page)),), position=page)
    return plan_window(pagination, token, since=since, now=now)


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
    return next_window(pagination, plan, items, page_size, now)


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
