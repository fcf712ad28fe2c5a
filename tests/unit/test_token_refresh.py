"""The token refresh's decisions: pure functions of the stored snapshot and ``now`` (no AWS, no HTTP)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.domain.model import ConnectionStatus
from chalicelib.store.vault import StoredCredentials
from chalicelib.sync.token_refresh import RefreshStep, poll_delay, refresh_step, token_call_timeout

NOW = 1_767_225_600.0


def _stored(**changes: object) -> StoredCredentials:
    base = StoredCredentials(
        sealed="{}",
        version=3,
        refresh_owner=None,
        refresh_expires_at=None,
        status=ConnectionStatus.ACTIVE,
        status_reason=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_valid_credentials_are_used_as_they_are() -> None:
    # Given stored credentials whose token is not expiring and that nobody rejected
    # When the next step is decided
    step = refresh_step(_stored(), expired=False, rejected_version=None, now=NOW)
    # Then they are used without a refresh
    assert step is RefreshStep.USE


def test_expired_credentials_with_no_refresh_running_are_refreshed_here() -> None:
    # Given an expiring token and no lease
    # When the next step is decided
    step = refresh_step(_stored(), expired=True, rejected_version=None, now=NOW)
    # Then this instance takes the lease
    assert step is RefreshStep.TAKE


def test_expired_credentials_wait_for_a_live_lease_held_by_another_instance() -> None:
    # Given an expiring token and another instance's lease that runs for 10 more seconds
    stored = _stored(refresh_owner="refresh:other", refresh_expires_at=NOW + 10)
    # When the next step is decided
    step = refresh_step(stored, expired=True, rejected_version=None, now=NOW)
    # Then this instance waits for the version that instance stores
    assert step is RefreshStep.WAIT


@pytest.mark.parametrize("expires_at", [NOW, NOW - 5], ids=["expiring-this-instant", "expired"])
def test_a_lease_that_has_expired_is_taken_over(expires_at: float) -> None:
    # Given a lease whose holder did not finish before it expired (the same boundary as a sync lease)
    stored = _stored(refresh_owner="refresh:crashed", refresh_expires_at=expires_at)
    # When the next step is decided
    step = refresh_step(stored, expired=True, rejected_version=None, now=NOW)
    # Then this instance takes the refresh over
    assert step is RefreshStep.TAKE


def test_credentials_the_provider_just_rejected_are_refreshed_though_they_look_valid() -> None:
    # Given a token that is not expiring, but the provider answered 401 to this very version
    # When the next step is decided
    step = refresh_step(_stored(version=3), expired=False, rejected_version=3, now=NOW)
    # Then they are refreshed
    assert step is RefreshStep.TAKE


def test_newer_credentials_than_the_rejected_ones_are_tried_instead_of_refreshing_again() -> None:
    # Given the provider rejected version 3, and version 4 (someone's refresh or PUT) is stored now
    # When the next step is decided
    step = refresh_step(_stored(version=4), expired=False, rejected_version=3, now=NOW)
    # Then version 4 is used: the refresh token is not spent a second time
    assert step is RefreshStep.USE


def test_a_refused_refresh_token_is_not_tried_again() -> None:
    # Given an expiring token on a connection whose refresh token the provider already refused
    stored = _stored(status=ConnectionStatus.NEEDS_REVIEW, status_reason="refused")
    # When the next step is decided
    step = refresh_step(stored, expired=True, rejected_version=None, now=NOW)
    # Then nobody calls the token endpoint again
    assert step is RefreshStep.REFUSED


def test_a_connection_needing_review_keeps_using_a_token_that_is_still_valid() -> None:
    # Given a connection needing review whose access token is still good
    stored = _stored(status=ConnectionStatus.NEEDS_REVIEW)
    # When the next step is decided
    step = refresh_step(stored, expired=False, rejected_version=None, now=NOW)
    # Then it is used (whether to sync at all is the caller's business)
    assert step is RefreshStep.USE


def test_the_token_call_ends_inside_the_lease_and_the_callers_deadline() -> None:
    # Given a 30 s lease taken now
    lease_end = NOW + 30
    # When the caller has no deadline, or only 4 s left
    unbounded = token_call_timeout(NOW, deadline=None, lease_expires_at=lease_end, longest=15)
    bounded = token_call_timeout(NOW, deadline=NOW + 4, lease_expires_at=lease_end, longest=15)
    # Then the call gets at most half the lease, or what the deadline leaves
    assert unbounded == 15
    assert bounded == 4


def test_the_token_call_leaves_time_to_store_its_answer_before_the_lease_ends() -> None:
    # Given a lease with only 5 s left
    # When the timeout is cut
    timeout = token_call_timeout(NOW, deadline=None, lease_expires_at=NOW + 5, longest=15)
    # Then the answer can be stored before anyone may take the lease over
    assert timeout is not None and timeout < 5


def test_no_token_call_is_started_when_too_little_time_is_left() -> None:
    # Given a caller with 0.2 s left
    # When the timeout is cut
    timeout = token_call_timeout(NOW, deadline=NOW + 0.2, lease_expires_at=NOW + 30, longest=15)
    # Then no call is made at all
    assert timeout is None


def test_polls_start_short_double_and_stay_bounded() -> None:
    # Given a waiter with a minute to wait
    # When it polls again and again
    delays = [poll_delay(polls, NOW, NOW + 60) for polls in range(8)]
    # Then the pauses grow from 50 ms and never exceed half a second
    assert delays[0] == pytest.approx(0.05)
    assert delays[1] == pytest.approx(0.1)
    assert delays == sorted(delays)
    assert max(delays) == pytest.approx(0.5)


def test_a_poll_never_sleeps_past_the_moment_the_wait_ends() -> None:
    # Given a lease that expires in 20 ms
    # When the waiter picks its next pause
    delay = poll_delay(5, NOW, NOW + 0.02)
    # Then it wakes up when the lease can be taken over
    assert delay == pytest.approx(0.02)
