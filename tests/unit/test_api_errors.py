"""The API's one error map: domain errors carry no HTTP status; the map gives the status and code clients see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from chalice.app import Blueprint, Chalice, Request
from chalice.test import Client

from chalicelib.api.errors import ERROR_VIEWS, ErrorView, error_view
from chalicelib.api.http import endpoint
from chalicelib.container import Container, set_container
from chalicelib.domain import errors as domain_errors
from chalicelib.domain import upstream
from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import (
    AuthenticationError,
    ClaimNotWonError,
    ConflictError,
    ConnectionNotActiveError,
    DatasetNotFoundError,
    ForbiddenError,
    JobNotClaimableError,
    LeaseLostError,
    NotFoundError,
    QueueUnavailableError,
    RateLimitedError,
    SmartSyncError,
    StoreBusyError,
    SyncInProgressError,
    ValidationError,
)
from chalicelib.domain.upstream import (
    ProviderAuthError,
    ProviderError,
    ProviderGrantError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from chalicelib.store.vault import CredentialsError, CredentialsUnavailableError, CredentialsUnreadableError
from chalicelib.usecases.operator import SchedulerPausedError
from chalicelib.usecases.webhook_signatures import WebhookSignatureError

# What clients saw before the statuses left the domain errors: these pairs must never change.
PUBLISHED: list[tuple[SmartSyncError, int, str]] = [
    (ValidationError("x"), 400, "bad_request"),
    (AuthenticationError("x"), 401, "unauthorized"),
    (WebhookSignatureError("bad_signature"), 401, "unauthorized"),
    (ForbiddenError("x"), 403, "forbidden"),
    (NotFoundError("x"), 404, "not_found"),
    (DatasetNotFoundError("x"), 404, "not_found"),
    (ConflictError("x"), 409, "conflict"),
    (ConnectionNotActiveError("x"), 409, "connection_not_active"),
    (SchedulerPausedError("x"), 409, "scheduler_paused"),
    (RateLimitedError("x", retry_after_seconds=3), 429, "rate_limited"),
    (ProviderError("x"), 502, "upstream_error"),
    (ProviderRateLimitError("x"), 502, "upstream_error"),
    (ProviderAuthError("x"), 502, "upstream_auth_error"),
    (ProviderGrantError("x"), 502, "upstream_grant_revoked"),
    (ProviderTimeoutError("x"), 502, "upstream_timeout"),
    (QueueUnavailableError("x"), 503, "queue_unavailable"),
    (StoreBusyError("x"), 503, "busy"),
    (CredentialsError("x"), 500, "credentials_error"),
    (CredentialsUnreadableError("x"), 500, "credentials_unreadable"),
    (CredentialsUnavailableError("x"), 503, "credentials_unavailable"),
    (ConfigurationError("x"), 500, "configuration_error"),
]


@pytest.mark.parametrize(("error", "status", "code"), PUBLISHED, ids=lambda v: type(v).__name__)
def test_each_published_error_keeps_its_status_and_code(error: SmartSyncError, status: int, code: str) -> None:
    # Given an error a client can see / When the map looks it up / Then it answers as it always did
    assert error_view(error) == ErrorView(status, code)


@pytest.mark.parametrize(
    "signal",
    [LeaseLostError("x"), ClaimNotWonError(), JobNotClaimableError("x"), SyncInProgressError()],
    ids=lambda v: type(v).__name__,
)
def test_internal_signals_have_no_place_in_the_api(signal: SmartSyncError) -> None:
    # Given a signal between the store, the sync and the use cases / Then the map gives it no status
    assert error_view(signal) is None


def test_domain_errors_know_nothing_of_http() -> None:
    # Given every error class of the domain
    classes = [
        value
        for module in (domain_errors, upstream)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, SmartSyncError)
    ]
    # Then none of them declares an HTTP status (or the code that went with it)
    assert classes
    assert [cls.__name__ for cls in classes if "status" in vars(cls) or "code" in vars(cls)] == []


def test_every_code_in_the_map_is_unique_per_status() -> None:
    # Given the map / Then a code always means one status (clients may branch on either)
    statuses: dict[str, set[int]] = {}
    for view in ERROR_VIEWS.values():
        statuses.setdefault(view.code, set()).add(view.status)
    assert all(len(found) == 1 for found in statuses.values())


# --- through the endpoint decorator ---------------------------------------------------------------------


@pytest.fixture
def raising_client() -> Iterator[Client]:
    app = Chalice(app_name="errors-under-test")
    bp = Blueprint(__name__)

    @bp.route("/raise/{kind}", methods=["GET"])
    @endpoint(bp, auth="none")
    def raise_one(container: Container, request: Request, kind: str) -> Any:
        raise {
            "lease_lost": LeaseLostError("lease lost"),
            "rate_limited": RateLimitedError("slow down", retry_after_seconds=7),
            "not_found": DatasetNotFoundError("dataset gone"),
            "misconfigured": ConfigurationError("SECRET is not set"),
        }[kind]

    app.register_blueprint(bp)
    set_container(cast(Container, object()))  # no route here touches the container
    try:
        with Client(app) as client:
            yield client
    finally:
        set_container(None)


def answer(client: Client, kind: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = client.http.get(f"/raise/{kind}")
    return response.status_code, json.loads(response.body)["error"], dict(response.headers)


def test_a_mapped_error_answers_with_its_status_code_and_message(raising_client: Client) -> None:
    # When a route raises a subclass of a mapped error
    status, error, _ = answer(raising_client, "not_found")
    # Then its parent's status and code answer, with the error's own message
    assert (status, error) == (404, {"code": "not_found", "message": "dataset gone"})


def test_rate_limited_keeps_its_retry_after(raising_client: Client) -> None:
    status, error, headers = answer(raising_client, "rate_limited")
    assert (status, error["code"], headers["Retry-After"]) == (429, "rate_limited", "7")


def test_a_misconfiguration_hides_its_detail(raising_client: Client) -> None:
    status, error, _ = answer(raising_client, "misconfigured")
    assert (status, error["code"]) == (500, "configuration_error")
    assert "SECRET" not in error["message"]


def test_an_internal_signal_that_escapes_is_a_500_bug(raising_client: Client) -> None:
    # When an internal signal reaches the API (a bug: it is always caught below)
    status, error, _ = answer(raising_client, "lease_lost")
    # Then the client sees an internal error, not the signal
    assert (status, error) == (500, {"code": "internal_error", "message": "internal error"})
