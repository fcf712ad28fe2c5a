"""The ``pagination`` entry of a ``rest`` provider, read into one of the pagination kinds.

Pagination kinds (``pagination.kind``)
--------------------------------------
- ``body_cursor`` (the default when ``kind`` is absent): ``response_field`` (dotted path to
  the next cursor in the body; missing, null or empty = last page) and ``request_param``.
- ``header_cursor``: ``response_header`` (the header holding the next cursor) and ``request_param``.
- ``next_url``: ``response_field`` holds the next page's URL (absolute, or relative to the
  page's URL); it is called exactly as given, the data type's parameters are not added again.
- ``link_header``: the RFC 8288 ``Link`` header's ``rel="next"`` target, called as given.
- ``offset``: ``offset_param`` (0 on the first call, then advanced by the records received);
  the pass ends on an empty page or one shorter than ``page_size``.
- ``page_number``: ``page_param`` and ``first_page`` (1); ends like ``offset``.
- ``time_window``: ``start_param``, ``end_param``, ``window_seconds`` (at most one window
  per call, e.g. Binance's 24 h), ``initial_lookback_seconds`` (how far back a full pass
  starts), ``time_format`` (``epoch_ms`` default, ``epoch_seconds``, ``iso8601``) and
  optional ``record_time_field``: when a window returns a full page (``page_size`` records),
  the next window starts just after the newest record's time instead of at the window's
  end (without it, a full window's remainder is skipped). An incremental run's first
  window starts at the watermark. The pass ends when the next window would start at ``now``.

A next-page URL that leaves the origin (scheme, host, port, userinfo) or ``base_url``'s
path prefix fails the page, naming the pagination kind, never the URL. A page token that
comes back unchanged is a loop and fails the page too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.providers import pagination_kinds as paging
from chalicelib.providers.config_reader import ConfigReader
from chalicelib.providers.http import HEADER_NAME
from chalicelib.providers.instants import EPOCH_MS, TIME_FORMATS
from chalicelib.providers.pagination_kinds import Pagination

_PAGINATION_KEYS: Mapping[str, frozenset[str]] = {
    paging.BODY_CURSOR: frozenset({"kind", "response_field", "request_param"}),
    paging.HEADER_CURSOR: frozenset({"kind", "response_header", "request_param"}),
    paging.NEXT_URL: frozenset({"kind", "response_field"}),
    paging.LINK_HEADER: frozenset({"kind"}),
    paging.OFFSET: frozenset({"kind", "offset_param"}),
    paging.PAGE_NUMBER: frozenset({"kind", "page_param", "first_page"}),
    paging.TIME_WINDOW: frozenset(
        {
            "kind",
            "start_param",
            "end_param",
            "window_seconds",
            "initial_lookback_seconds",
            "time_format",
            "record_time_field",
        }
    ),
}
_MAX_WINDOW_SECONDS = 366 * 86_400
_MAX_LOOKBACK_SECONDS = 20 * 366 * 86_400


class PaginationReader(ConfigReader):
    """Reads ``pagination``; errors name ``pagination.<key>``."""

    def pagination(self, value: Any) -> Pagination | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail("pagination", "must be a JSON object")
        kind = value.get("kind", paging.BODY_CURSOR)
        if kind not in _PAGINATION_KEYS:
            raise self.fail("pagination.kind", f"must be one of {', '.join(paging.KINDS)}")
        raw = self.mapping(value, "pagination", _PAGINATION_KEYS[kind])
        if kind == paging.BODY_CURSOR:
            return paging.BodyCursor(
                response_field=self.dotted_path(raw.get("response_field"), "pagination.response_field"),
                request_param=self.text(raw.get("request_param"), "pagination.request_param"),
            )
        if kind == paging.HEADER_CURSOR:
            header = self.text(raw.get("response_header"), "pagination.response_header")
            if not HEADER_NAME.fullmatch(header):
                raise self.fail("pagination.response_header", "must be an HTTP header name")
            return paging.HeaderCursor(
                response_header=header.lower(),
                request_param=self.text(raw.get("request_param"), "pagination.request_param"),
            )
        if kind == paging.NEXT_URL:
            return paging.NextUrl(
                response_field=self.dotted_path(raw.get("response_field"), "pagination.response_field")
            )
        if kind == paging.LINK_HEADER:
            return paging.LinkHeader()
        if kind == paging.OFFSET:
            return paging.Offset(offset_param=self.text(raw.get("offset_param"), "pagination.offset_param"))
        if kind == paging.PAGE_NUMBER:
            first = raw.get("first_page", 1)
            return paging.PageNumber(
                page_param=self.text(raw.get("page_param"), "pagination.page_param"),
                first_page=self.integer(first, "pagination.first_page", minimum=0),
            )
        return self.time_window(raw)

    def time_window(self, raw: Mapping[str, Any]) -> paging.TimeWindow:
        time_format = raw.get("time_format", EPOCH_MS)
        if time_format not in TIME_FORMATS:
            raise self.fail("pagination.time_format", f"must be one of {', '.join(TIME_FORMATS)}")
        window = paging.TimeWindow(
            start_param=self.text(raw.get("start_param"), "pagination.start_param"),
            end_param=self.text(raw.get("end_param"), "pagination.end_param"),
            window_seconds=self.integer(
                raw.get("window_seconds"), "pagination.window_seconds", minimum=1, maximum=_MAX_WINDOW_SECONDS
            ),
            initial_lookback_seconds=self.integer(
                raw.get("initial_lookback_seconds"),
                "pagination.initial_lookback_seconds",
                minimum=1,
                maximum=_MAX_LOOKBACK_SECONDS,
            ),
            time_format=time_format,
            record_time_field=self.optional_dotted_path(raw.get("record_time_field"), "pagination.record_time_field"),
        )
        if window.start_param == window.end_param:
            raise self.fail("pagination.end_param", "must differ from pagination.start_param")
        return window
