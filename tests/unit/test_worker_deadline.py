from __future__ import annotations

from chalicelib.api.events import job_deadline


def test_a_real_lambda_leaves_a_margin_to_hand_off() -> None:
    # Given a 300 s worker with 200 s left
    # Then the job must hand off 15 s before the end
    assert job_deadline(200.0, 300.0, now=1000.0) == 1185.0


def test_a_short_function_gets_no_deadline() -> None:
    # chalice.test.Client's context has 3 s: no hand-off would help there
    assert job_deadline(3.0, 3.0, now=0.0) is None


def test_no_context_means_no_deadline() -> None:
    assert job_deadline(None, None, now=0.0) is None
