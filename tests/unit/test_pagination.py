"""Pagination decisions of the ``rest`` provider: pure functions of the answer, the token and ``now``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from chalicelib.providers.instants import format_instant, parse_instant
from chalicelib.providers.page_links import UrlScope, confine_url, next_link, parse_link_header, split_target
from chalicelib.providers.pagination import HEADER_VALUE_LIMIT, next_page_token, plan_page
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
    TimeWindow,
)

SCOPE = UrlScope.of("https://api.example.test/v1")
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NOW_MS = 1_700_000_000_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _next(
    pagination: Pagination,
    *,
    token: str | None = None,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    items: Sequence[Any] = (),
    page_size: int | None = None,
    since: str | None = None,
    now: float = NOW,
    request_target: str = "/v1/items",
    plan: PagePlan | None = None,
) -> str | None:
    """Plan the call for ``token``, then decide the following token from the given answer."""
    used_plan = plan if plan is not None else plan_page(pagination, token, since=since, now=now, scope=SCOPE)
    return next_page_token(
        pagination,
        used_plan,
        token=token,
        body=body,
        headers=headers or {},
        items=items,
        page_size=page_size,
        scope=SCOPE,
        request_target=request_target,
        now=now,
    )


# --------------------------------------------------------------------------- body_cursor / header_cursor


def test_body_cursor_sends_the_token_only_after_the_first_page() -> None:
    # Given a body cursor
    cursor = BodyCursor(response_field="meta.next", request_param="cursor")

    # When the first and a later page are planned
    first = plan_page(cursor, None, since=None, now=NOW, scope=SCOPE)
    later = plan_page(cursor, "abc", since=None, now=NOW, scope=SCOPE)

    # Then only the later call carries the cursor
    assert first.params == ()
    assert later.params == (("cursor", "abc"),)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"meta": {"next": "c2"}}, "c2", id="string"),
        pytest.param({"meta": {"next": 50}}, "50", id="number-as-text"),
        pytest.param({"meta": {"next": None}}, None, id="null"),
        pytest.param({"meta": {"next": ""}}, None, id="empty"),
        pytest.param({"meta": {}}, None, id="missing"),
        pytest.param([], None, id="body-not-an-object"),
    ],
)
def test_body_cursor_reads_the_next_token_from_the_dotted_field(body: Any, expected: str | None) -> None:
    # Given an answer with (or without) a cursor
    # When the next token is decided
    token = _next(BodyCursor(response_field="meta.next", request_param="cursor"), body=body)

    # Then it is the cursor as text, or None for the last page
    assert token == expected


def test_body_cursor_that_is_not_a_scalar_is_refused() -> None:
    # Given a cursor field holding an object
    # When the next token is decided
    with pytest.raises(PaginationError) as caught:
        _next(BodyCursor(response_field="next", request_param="cursor"), body={"next": {"x": 1}})

    # Then the error names the field
    assert "'next'" in str(caught.value)


def test_same_cursor_twice_is_a_loop() -> None:
    # Given a provider that hands back the cursor it was sent
    # When the next token is decided
    with pytest.raises(PaginationError) as caught:
        _next(BodyCursor(response_field="next", request_param="cursor"), token="tok-77", body={"next": "tok-77"})

    # Then the loop is refused, naming the kind but not the token
    assert "body_cursor" in str(caught.value)
    assert "tok-77" not in str(caught.value)


def test_header_cursor_reads_the_lower_cased_header() -> None:
    # Given a header cursor (headers arrive with lower-cased names)
    cursor = HeaderCursor(response_header="x-next-cursor", request_param="after")

    # When pages with and without the header are decided
    following = _next(cursor, headers={"x-next-cursor": " c-2 "})
    last = _next(cursor, headers={"x-other": "1"})

    # Then the header value is the token, and its absence ends the pass
    assert following == "c-2"
    assert last is None
    assert plan_page(cursor, "c-2", since=None, now=NOW, scope=SCOPE).params == (("after", "c-2"),)


def test_header_cursor_at_the_header_length_limit_is_refused() -> None:
    # Given a cursor header as long as the HTTP layer keeps (it may have been cut)
    cursor = HeaderCursor(response_header="x-next-cursor", request_param="after")

    # When the next token is decided
    with pytest.raises(PaginationError) as caught:
        _next(cursor, headers={"x-next-cursor": "c" * HEADER_VALUE_LIMIT})

    # Then it is refused rather than followed half-read
    assert "header_cursor" in str(caught.value)


# --------------------------------------------------------------------------- next-page URLs


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param("https://api.example.test/v1/items?cursor=c2", "/v1/items?cursor=c2", id="absolute"),
        pytest.param("https://API.example.test:443/v1/items?p=2", "/v1/items?p=2", id="host-case-default-port"),
        pytest.param("/v1/items?cursor=c2", "/v1/items?cursor=c2", id="relative-to-origin"),
        pytest.param("?cursor=c3", "/v1/items?cursor=c3", id="query-only"),
        pytest.param("items/more?x=1", "/v1/items/more?x=1", id="path-relative"),
        pytest.param("/v1", "/v1", id="the-prefix-itself"),
        pytest.param("https://api.example.test/v1/items#frag", "/v1/items", id="fragment-dropped"),
    ],
)
def test_confine_url_keeps_urls_on_the_origin_and_under_the_prefix(reference: str, expected: str) -> None:
    # Given a next-page reference on the provider's origin, relative to the page just fetched
    # When it is confined
    target = confine_url(reference, SCOPE, base="https://api.example.test/v1/items", kind="next_url")

    # Then its path-and-query from the host comes back
    assert target == expected


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        pytest.param("https://evil.test/v1/items?cursor=c2", "origin", id="other-host"),
        pytest.param("http://api.example.test/v1/items", "origin", id="scheme-change"),
        pytest.param("https://user:pw@api.example.test/v1/items", "origin", id="userinfo"),
        pytest.param("https://api.example.test@evil.test/v1/items", "origin", id="userinfo-trick"),
        pytest.param("https://api.example.test:8443/v1/items", "origin", id="other-port"),
        pytest.param("https://api.example.test:99999/v1/items", "origin", id="invalid-port"),
        pytest.param("//evil.test/v1/items", "origin", id="scheme-relative"),
        pytest.param("https://api.example.test.evil.test/v1/items", "origin", id="suffix-host"),
        pytest.param("https://api.example.test/v2/items", "path", id="other-prefix"),
        pytest.param("https://api.example.test/v10/items", "path", id="prefix-not-on-a-segment"),
        pytest.param("/admin", "path", id="relative-outside-prefix"),
        pytest.param("https://api.example.test/v1/../admin", "path", id="dot-segments"),
        pytest.param("https://api.example.test/v1/%2e%2e/admin", "path", id="encoded-dot-segments"),
        pytest.param("https://api.example.test/v1%2f..%2fadmin", "path", id="encoded-slash"),
        pytest.param("https://api.example.test/v1/\\..\\admin", "characters", id="backslash"),
        pytest.param("https://api.example.test/v1/items\r\nX: 1", "characters", id="line-break"),
    ],
)
def test_confine_url_refuses_every_escape_without_quoting_the_url(reference: str, problem: str) -> None:
    # Given a next-page reference that leaves the origin or the base path
    # When it is confined
    with pytest.raises(PaginationError) as caught:
        confine_url(reference, SCOPE, base="https://api.example.test/v1/items", kind="link_header")

    # Then it is refused, the error naming the pagination kind and the problem, never the URL
    message = str(caught.value)
    assert "link_header" in message
    assert problem in message
    assert "evil" not in message
    assert "admin" not in message


def test_confine_url_without_a_base_path_accepts_any_path_on_the_origin() -> None:
    # Given a provider whose base_url has no prefix, on an explicit port
    scope = UrlScope.of("http://127.0.0.1:8080")

    # When a next URL on the same host and port is confined
    target = confine_url("http://127.0.0.1:8080/anything?p=2", scope, base=scope.origin + "/x", kind="next_url")

    # Then it is accepted, but the same host on another port is not
    assert target == "/anything?p=2"
    with pytest.raises(PaginationError):
        confine_url("http://127.0.0.1/anything", scope, base=scope.origin + "/x", kind="next_url")


def test_next_url_follows_the_body_field_and_ends_without_it() -> None:
    # Given a next_url pagination
    pagination = NextUrl(response_field="links.next")

    # When answers with a URL, a null and no field are decided
    following = _next(pagination, body={"links": {"next": "https://api.example.test/v1/items?page=2"}})
    last_null = _next(pagination, body={"links": {"next": None}})
    last_missing = _next(pagination, body={})

    # Then the URL's path-and-query is the token, and the pass ends without one
    assert following == "/v1/items?page=2"
    assert last_null is None
    assert last_missing is None


def test_next_url_off_the_origin_is_refused() -> None:
    # Given an answer pointing the next page at another host
    # When the next token is decided
    with pytest.raises(PaginationError) as caught:
        _next(NextUrl(response_field="next"), body={"next": "https://evil.test/v1/items?token=abc"})

    # Then it is refused, naming the kind, not the URL
    assert "next_url" in str(caught.value)
    assert "abc" not in str(caught.value)


def test_next_url_that_is_not_text_is_refused() -> None:
    with pytest.raises(PaginationError):
        _next(NextUrl(response_field="next"), body={"next": 3})


def test_next_url_pointing_at_the_page_just_fetched_is_a_loop() -> None:
    # Given a first page whose next URL is the very request that produced it
    # When the next token is decided
    with pytest.raises(PaginationError):
        _next(NextUrl(response_field="next"), body={"next": "/v1/items?limit=2"}, request_target="/v1/items?limit=2")


def test_a_url_token_is_checked_again_before_it_is_called() -> None:
    # Given the next-URL kinds and tokens as the checkpoint stored them
    for pagination in (NextUrl(response_field="next"), LinkHeader()):
        # When a good token is planned, it becomes the call's target
        plan = plan_page(pagination, "/v1/items?cursor=c2", since=None, now=NOW, scope=SCOPE)
        assert plan.target == "/v1/items?cursor=c2"
        assert plan.params == ()

        # And tokens that leave the origin or the prefix are refused
        for bad in ("https://evil.test/v1/items", "//evil.test/v1/items", "/admin", "v1/items"):
            with pytest.raises(PaginationError):
                plan_page(pagination, bad, since=None, now=NOW, scope=SCOPE)


def test_split_target_keeps_the_query_in_order_with_blank_values() -> None:
    assert split_target("/v1/items?b=2&a=1&empty=&b=3") == (
        "/v1/items",
        (("b", "2"), ("a", "1"), ("empty", ""), ("b", "3")),
    )
    assert split_target("/v1/items") == ("/v1/items", ())


# --------------------------------------------------------------------------- Link header


def test_link_header_with_several_links_and_parameters() -> None:
    # Given a GitHub-style Link header with several links, quoted and bare values
    value = (
        '<https://api.example.test/v1/items?page=2&per_page=100>; rel="next"; title="Page 2", '
        "<https://api.example.test/v1/items?page=5>; rel=last, "
        '<https://api.example.test/v1/items?page=1>; REL="first prev"'
    )

    # When it is parsed
    links = parse_link_header(value)

    # Then every link, its relations and its parameters come out
    assert [link.target for link in links] == [
        "https://api.example.test/v1/items?page=2&per_page=100",
        "https://api.example.test/v1/items?page=5",
        "https://api.example.test/v1/items?page=1",
    ]
    assert [link.relations for link in links] == [("next",), ("last",), ("first", "prev")]
    assert links[0].params["title"] == "Page 2"
    assert next_link(value) == "https://api.example.test/v1/items?page=2&per_page=100"


def test_link_header_commas_inside_urls_and_quotes_do_not_split_links() -> None:
    # Given commas inside a URL and inside a quoted title, and a relation list holding next
    value = '<https://api.example.test/v1/a,b?x=1,2>; title="a, b; c"; rel="prev next" , </v1/z>; rel=last'

    # When it is parsed
    links = parse_link_header(value)

    # Then there are exactly two links, and next is the first one
    assert len(links) == 2
    assert links[0].target == "https://api.example.test/v1/a,b?x=1,2"
    assert links[0].params["title"] == "a, b; c"
    assert next_link(value) == "https://api.example.test/v1/a,b?x=1,2"


def test_link_header_first_rel_wins_and_escapes_are_unquoted() -> None:
    # Given a link with two rel parameters and an escaped quote in a title
    value = r'<https://x.test/1>; rel="prev"; rel="next"; title="say \"hi\""'

    # When it is parsed
    (link,) = parse_link_header(value)

    # Then only the first rel counts (RFC 8288), so there is no next link
    assert link.relations == ("prev",)
    assert link.params["title"] == 'say "hi"'
    assert next_link(value) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("https://x.test/2; rel=next", id="no-angle-brackets"),
        pytest.param("<https://x.test/2; rel=next", id="unclosed-bracket"),
        pytest.param('<https://x.test/2>; rel="next', id="unclosed-quote"),
        pytest.param("<https://x.test/2> rel=next", id="missing-semicolon"),
        pytest.param("<https://x.test/2>; rel=", id="missing-value"),
    ],
)
def test_malformed_link_header_is_refused(value: str) -> None:
    with pytest.raises(PaginationError) as caught:
        parse_link_header(value)
    assert "link_header" in str(caught.value)
    assert "x.test" not in str(caught.value)


def test_link_header_pagination_follows_next_and_ends_without_it() -> None:
    # Given link_header pagination
    pagination = LinkHeader()

    # When answers with a next link, without one, and without a Link header are decided
    following = _next(pagination, headers={"link": '</v1/items?page=3>; rel="next", </v1/items?page=9>; rel="last"'})
    last = _next(pagination, headers={"link": '</v1/items?page=1>; rel="first"'})
    bare = _next(pagination, headers={})

    # Then the relative next link is resolved on the origin and the pass ends without it
    assert following == "/v1/items?page=3"
    assert last is None
    assert bare is None


def test_link_header_next_off_the_origin_is_refused() -> None:
    with pytest.raises(PaginationError) as caught:
        _next(LinkHeader(), headers={"link": '<https://evil.test/v1/items?page=2>; rel="next"'})
    assert "link_header" in str(caught.value)


def test_link_header_at_the_header_length_limit_is_refused() -> None:
    # Given a Link header as long as the HTTP layer keeps (its end, maybe the next link, may be cut)
    value = '</v1/items?page=2>; rel="next", </v1/items?' + "x" * HEADER_VALUE_LIMIT
    # When / Then it is refused instead of read half
    with pytest.raises(PaginationError):
        _next(LinkHeader(), headers={"link": value[:HEADER_VALUE_LIMIT]})


# --------------------------------------------------------------------------- offset / page number


def test_offset_starts_at_zero_and_advances_by_the_records_received() -> None:
    # Given offset pagination with a page size of 3
    pagination = Offset(offset_param="offset")

    # When the first and a later full page are planned and decided
    first_plan = plan_page(pagination, None, since=None, now=NOW, scope=SCOPE)
    after_first = _next(pagination, items=[1, 2, 3], page_size=3)
    after_later = _next(pagination, token="3", items=[4, 5, 6], page_size=3)

    # Then offsets count records
    assert first_plan.params == (("offset", "0"),)
    assert after_first == "3"
    assert after_later == "6"


@pytest.mark.parametrize(
    ("items", "page_size", "expected"),
    [
        pytest.param([1, 2], 3, None, id="short-page-ends"),
        pytest.param([], 3, None, id="empty-page-ends"),
        pytest.param([], None, None, id="empty-page-ends-without-page-size"),
        pytest.param([1, 2], None, "12", id="without-page-size-only-empty-ends"),
        pytest.param([1, 2, 3, 4], 3, "14", id="more-than-asked-counts-all"),
    ],
)
def test_offset_stop_rules(items: list[int], page_size: int | None, expected: str | None) -> None:
    assert _next(Offset(offset_param="offset"), token="10", items=items, page_size=page_size) == expected


@pytest.mark.parametrize("token", ["-1", "abc", "1.5", ""])
def test_offset_token_that_is_not_a_whole_number_is_refused(token: str) -> None:
    with pytest.raises(PaginationError):
        plan_page(Offset(offset_param="offset"), token, since=None, now=NOW, scope=SCOPE)


def test_page_number_starts_at_first_page_and_counts_up() -> None:
    # Given page-number pagination counting from 1, and one counting from 0
    from_one = PageNumber(page_param="page")
    from_zero = PageNumber(page_param="page", first_page=0)

    # When the first pages are planned and full pages decided
    # Then numbers start where configured and go up by one per full page
    assert plan_page(from_one, None, since=None, now=NOW, scope=SCOPE).params == (("page", "1"),)
    assert plan_page(from_zero, None, since=None, now=NOW, scope=SCOPE).params == (("page", "0"),)
    assert _next(from_one, items=[1, 2], page_size=2) == "2"
    assert _next(from_zero, items=[1, 2], page_size=2) == "1"
    assert _next(from_one, token="7", items=[1, 2], page_size=2) == "8"


@pytest.mark.parametrize(("items", "page_size"), [([1], 2), ([], 2), ([], None)])
def test_page_number_stops_on_a_short_or_empty_page(items: list[int], page_size: int | None) -> None:
    assert _next(PageNumber(page_param="page"), token="4", items=items, page_size=page_size) is None


# --------------------------------------------------------------------------- time window


def _trades_window(**overrides: Any) -> TimeWindow:
    """Binance myTrades: at most 24 h per call, startTime/endTime in ms."""
    values: dict[str, Any] = {
        "start_param": "startTime",
        "end_param": "endTime",
        "window_seconds": 86_400,
        "initial_lookback_seconds": 3 * 86_400,
        "time_format": "epoch_ms",
        "record_time_field": "time",
    }
    values.update(overrides)
    return TimeWindow(**values)


def test_time_window_full_pass_starts_at_the_lookback_and_steps_a_window_at_a_time() -> None:
    # Given a 24 h window and a 3-day lookback
    window = _trades_window()

    # When the first window is planned and answered with a short page
    plan = plan_page(window, None, since=None, now=NOW, scope=SCOPE)
    following = _next(window, items=[{"time": NOW_MS - 3 * DAY_MS + 5}], page_size=500)

    # Then it spans exactly 24 h from now - 3 days, and the next one starts at its end
    start = NOW_MS - 3 * DAY_MS
    assert plan.params == (("startTime", str(start)), ("endTime", str(start + DAY_MS)))
    assert following == str(start + DAY_MS)


def test_time_window_last_window_is_cut_at_now_and_ends_the_pass() -> None:
    # Given a token 5 hours before now
    window = _trades_window()
    token = str(NOW_MS - 5 * HOUR_MS)

    # When that window is planned and answered
    plan = plan_page(window, token, since=None, now=NOW, scope=SCOPE)
    following = _next(window, token=token, items=[], page_size=500)

    # Then it ends at now and no window follows
    assert plan.params == (("startTime", token), ("endTime", str(NOW_MS)))
    assert following is None


def test_time_window_walks_from_lookback_to_now_in_whole_windows() -> None:
    # Given a 3-day lookback of 24 h windows and empty answers
    window = _trades_window()
    token: str | None = None
    windows: list[tuple[str, ...]] = []

    # When the pass is walked to its end
    for _ in range(10):
        plan = plan_page(window, token, since=None, now=NOW, scope=SCOPE)
        windows.append(tuple(value for _name, value in plan.params))
        token = _next(window, token=token, items=[], page_size=500)
        if token is None:
            break

    # Then three consecutive windows cover exactly lookback .. now
    start = NOW_MS - 3 * DAY_MS
    assert windows == [(str(start + n * DAY_MS), str(start + (n + 1) * DAY_MS)) for n in range(3)]


def test_time_window_full_page_narrows_the_next_window_to_just_after_the_newest_record() -> None:
    # Given a full page (page_size 3) whose newest trade is 2 h into the window
    window = _trades_window()
    token = str(NOW_MS - 2 * DAY_MS)
    start = int(token)
    items = [{"time": start + 10}, {"time": start + 2 * HOUR_MS}, {"time": start + HOUR_MS}]

    # When the next token is decided
    following = _next(window, token=token, items=items, page_size=3)

    # Then the next window starts 1 ms after the newest trade, not at the window's end
    assert following == str(start + 2 * HOUR_MS + 1)


def test_time_window_full_page_always_moves_forward() -> None:
    # Given a full page whose records all sit at the window's start
    window = _trades_window()
    token = str(NOW_MS - 2 * DAY_MS)
    items = [{"time": int(token)}] * 3

    # When the next token is decided
    # Then the next window still starts after this one's start
    assert _next(window, token=token, items=items, page_size=3) == str(int(token) + 1)


@pytest.mark.parametrize(
    ("window", "items"),
    [
        pytest.param(_trades_window(record_time_field=None), [{"time": 1}] * 3, id="no-record-time-field"),
        pytest.param(_trades_window(), [{"other": 1}, "not-an-object", {"time": "garbage"}], id="no-usable-time"),
        pytest.param(_trades_window(), [{"time": NOW_MS + DAY_MS}] * 3, id="newest-beyond-window"),
    ],
)
def test_time_window_full_page_without_a_usable_time_moves_to_the_window_end(
    window: TimeWindow, items: list[Any]
) -> None:
    token = str(NOW_MS - 2 * DAY_MS)
    assert _next(window, token=token, items=items, page_size=3) == str(int(token) + DAY_MS)


def test_time_window_incremental_since_is_the_first_start() -> None:
    # Given an incremental run whose watermark is a trade time in ms (as text), and one in ISO 8601
    window = _trades_window()
    since_ms = NOW_MS - 6 * HOUR_MS

    # When the first window is planned
    from_ms = plan_page(window, None, since=str(since_ms), now=NOW, scope=SCOPE)
    from_iso = plan_page(window, None, since="2023-11-14T16:13:20Z", now=NOW, scope=SCOPE)

    # Then it starts at the watermark and ends at now (less than a window away)
    assert from_ms.params == (("startTime", str(since_ms)), ("endTime", str(NOW_MS)))
    assert from_iso.params == from_ms.params


def test_time_window_with_nothing_left_to_ask_makes_no_call() -> None:
    # Given a watermark at (or after) now
    window = _trades_window()

    # When the first window is planned
    at_now = plan_page(window, None, since=str(NOW_MS), now=NOW, scope=SCOPE)
    ahead = plan_page(window, None, since=str(NOW_MS + 5000), now=NOW, scope=SCOPE)

    # Then there is nothing to call and no page follows
    assert at_now.exhausted and ahead.exhausted
    assert _next(window, since=str(NOW_MS), plan=at_now) is None


@pytest.mark.parametrize(("token", "since"), [("abc", None), ("-5", None), (None, "not a time")])
def test_time_window_bad_token_or_watermark_is_refused(token: str | None, since: str | None) -> None:
    with pytest.raises(PaginationError) as caught:
        plan_page(_trades_window(), token, since=since, now=NOW, scope=SCOPE)
    assert "time_window" in str(caught.value)


def test_time_window_in_epoch_seconds_aligns_to_whole_seconds() -> None:
    # Given a 1-hour window in epoch seconds, and a now with a fraction of a second
    window = _trades_window(window_seconds=3600, time_format="epoch_seconds", initial_lookback_seconds=7200)
    now = NOW + 0.75

    # When the first window is planned and a full page narrows the next
    plan = plan_page(window, None, since=None, now=now, scope=SCOPE)
    start_ms = (NOW_MS - 7_200_000) + 0  # the fraction is dropped by the alignment
    narrowed = _next(window, items=[{"time": (start_ms + 1500) / 1000}] * 2, page_size=2, now=now)

    # Then windows are whole seconds and the next start is the second after the newest record's
    assert plan.params == (("startTime", str(start_ms // 1000)), ("endTime", str(start_ms // 1000 + 3600)))
    assert narrowed == str(start_ms + 2000)


def test_time_window_in_iso8601_sends_utc_milliseconds() -> None:
    # Given an ISO 8601 window of 6 hours (WHOOP-style start/end)
    window = _trades_window(window_seconds=6 * 3600, time_format="iso8601", initial_lookback_seconds=86_400)

    # When the first window is planned
    plan = plan_page(window, None, since=None, now=NOW, scope=SCOPE)

    # Then both ends are UTC with milliseconds
    assert plan.params == (("startTime", "2023-11-13T22:13:20.000Z"), ("endTime", "2023-11-14T04:13:20.000Z"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1_700_000_000, NOW_MS, id="epoch-seconds"),
        pytest.param(1_700_000_000.5, NOW_MS + 500, id="epoch-seconds-fraction"),
        pytest.param(NOW_MS, NOW_MS, id="epoch-ms"),
        pytest.param(str(NOW_MS), NOW_MS, id="epoch-ms-text"),
        pytest.param("2023-11-14T22:13:20.250Z", NOW_MS + 250, id="iso-z"),
        pytest.param("2023-11-14T23:13:20+01:00", NOW_MS, id="iso-offset"),
        pytest.param("2023-11-14T22:13:20", NOW_MS, id="iso-naive-is-utc"),
        pytest.param("yesterday", None, id="garbage"),
        pytest.param(True, None, id="boolean"),
        pytest.param(None, None, id="null"),
        pytest.param(float("nan"), None, id="nan"),
        pytest.param({"t": 1}, None, id="object"),
    ],
)
def test_parse_instant(value: Any, expected: int | None) -> None:
    assert parse_instant(value) == expected


def test_format_instant() -> None:
    assert format_instant(NOW_MS + 7, "epoch_ms") == str(NOW_MS + 7)
    assert format_instant(NOW_MS + 999, "epoch_seconds") == "1700000000"
    assert format_instant(NOW_MS + 7, "iso8601") == "2023-11-14T22:13:20.007Z"


def test_url_scope_of_base_url() -> None:
    assert UrlScope.of("https://API.Example.test/v1/") == UrlScope("https://api.example.test", "/v1")
    assert UrlScope.of("http://127.0.0.1:8080") == UrlScope("http://127.0.0.1:8080", "")
    assert UrlScope.of("https://[::1]:8443/x") == UrlScope("https://[::1]:8443", "/x")
