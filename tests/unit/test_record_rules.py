"""Pure rules: which records the store can keep, and where the next incremental pass starts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.domain.records import (
    MAX_RECORD_ID_BYTES,
    MAX_RECORD_JSON_BYTES,
    capped_watermark,
    describe_skipped,
    pass_started_at,
    record_problem,
)
from chalicelib.domain.upstream import UpstreamRecord

START = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()


def test_an_ordinary_record_is_kept() -> None:
    # Given a small record with a short id
    record = UpstreamRecord("r1", {"score": 1})
    # Then nothing is wrong with it
    assert record_problem(record) is None


def test_an_id_over_the_sort_key_budget_is_skipped_and_cut_short_in_messages() -> None:
    # Given an id one byte over the limit
    record = UpstreamRecord("x" * (MAX_RECORD_ID_BYTES + 1), {})
    # When it is checked
    problem = record_problem(record)
    # Then it is skipped as id_too_long, and its description does not repeat the whole id
    assert problem is not None and problem.reason == "id_too_long"
    assert len(describe_skipped(problem)) < 100


def test_an_id_at_the_limit_is_kept() -> None:
    assert record_problem(UpstreamRecord("x" * MAX_RECORD_ID_BYTES, {})) is None


def test_multibyte_ids_are_measured_in_bytes() -> None:
    # Given an id of few characters but many UTF-8 bytes
    record = UpstreamRecord("é" * (MAX_RECORD_ID_BYTES // 2 + 1), {})
    # Then bytes, not characters, decide
    problem = record_problem(record)
    assert problem is not None and problem.reason == "id_too_long"


def test_a_record_too_large_for_an_item_is_skipped() -> None:
    # Given a record whose JSON is over the item budget
    record = UpstreamRecord("big", {"blob": "a" * MAX_RECORD_JSON_BYTES})
    # When it is checked
    problem = record_problem(record)
    # Then it is skipped with its own reason and id
    assert problem is not None
    assert problem.reason == "record_too_large"
    assert describe_skipped(problem) == "record_too_large: big"


def test_watermark_older_than_the_cap_is_used_as_it_is() -> None:
    # Given the newest record is an hour older than the pass start
    seen = "2026-12-02T11:00:00.000Z"
    # Then the next pass starts from it
    assert capped_watermark(seen, None, pass_started_at=START, lookback_seconds=300) == seen


def test_watermark_newer_than_the_pass_start_is_capped_at_start_minus_lookback() -> None:
    # Given a record edited upstream after the pass began (clock skew or an edit during the pass)
    seen = "2026-12-02T12:00:30.000Z"
    # When the watermark is chosen
    watermark = capped_watermark(seen, None, pass_started_at=START, lookback_seconds=300)
    # Then it is the pass start minus the lookback, in the provider's ISO style
    assert watermark == "2026-12-02T11:55:00.000Z"


def test_watermark_inside_the_lookback_window_is_capped() -> None:
    # Given the newest stamp one minute before the pass began, lookback five minutes
    seen = "2026-12-02T11:59:00+00:00"
    # Then the cap still applies: records edited while the pass ran may be older than that stamp
    assert capped_watermark(seen, None, pass_started_at=START, lookback_seconds=300) == "2026-12-02T11:55:00.000Z"


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (str(int(START * 1000) + 5_000), str(int((START - 300) * 1000))),
        (str(int(START) + 5), str(int(START - 300))),
    ],
    ids=["epoch-ms", "epoch-seconds"],
)
def test_epoch_stamps_are_capped_in_their_own_unit(seen: str, expected: str) -> None:
    assert capped_watermark(seen, None, pass_started_at=START, lookback_seconds=300) == expected


def test_a_stamp_that_is_not_a_time_is_kept() -> None:
    # Given an opaque version string
    assert capped_watermark("v-42", None, pass_started_at=START, lookback_seconds=300) == "v-42"


def test_the_watermark_never_moves_back_behind_the_previous_one() -> None:
    # Given the previous watermark is already later than this pass's cap
    previous = "2026-12-02T11:58:00.000Z"
    seen = "2026-12-02T12:01:00.000Z"
    # Then the previous one stays
    assert capped_watermark(seen, previous, pass_started_at=START, lookback_seconds=300) == previous


def test_no_record_seen_keeps_the_previous_watermark() -> None:
    assert capped_watermark(None, "2026-12-01T00:00:00Z", pass_started_at=START, lookback_seconds=300) == (
        "2026-12-01T00:00:00Z"
    )


def test_the_pass_start_comes_from_its_generation_run_id() -> None:
    # Given a run id made by new_run_id (milliseconds first)
    assert pass_started_at("1764676800000-abcdef0123", 0.0) == 1764676800.0
    # And anything else falls back
    assert pass_started_at("legacy", 7.0) == 7.0
