"""The declarative REST provider, against a mocked HTTP layer (``responses``, no real network)."""

from __future__ import annotations

import copy
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
import responses

from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import (
    FetchRequest,
    PolicyDefaults,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from chalicelib.providers import registry_from_config
from chalicelib.providers.auth import OutgoingRequest
from chalicelib.providers.base import token_client_of
from chalicelib.providers.http import DEFAULT_MAX_RESPONSE_BYTES
from chalicelib.providers.pagination_kinds import BodyCursor
from chalicelib.providers.rest import RestProvider

BASE = "https://api.example.test/v1"
SECRET = "s3cr3t-access-token-value"
EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "examples" / "providers.json"


def _config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "type": "rest",
        "base_url": BASE,
        "timeout_seconds": 10,
        "page_size": 25,
        "page_size_param": "limit",
        "auth": {"header": "Authorization", "template": "Bearer {access_token}"},
        "pagination": {"response_field": "next_token", "request_param": "nextToken"},
        "incremental": {"request_param": "start"},
        "default_headers": {"Accept": "application/json"},
        "data_types": {
            "recovery": {
                "path": "/recovery",
                "records_path": "records",
                "id_field": "cycle_id",
                "updated_at_field": "updated_at",
                "deleted_field": None,
                "policy": {"cooldown_seconds": 300, "max_staleness_seconds": 3600, "schedule_every_seconds": 3600},
            },
            "nested": {
                "path": "/nested",
                "records_path": "data.items",
                "id_field": "meta.id",
                "updated_at_field": "meta.modified",
                "deleted_field": "meta.deleted",
            },
        },
    }
    config.update(overrides)
    return config


def _request(data_type: str = "recovery", **overrides: Any) -> FetchRequest:
    values: dict[str, Any] = {
        "connection_id": "conn-1",
        "data_type": data_type,
        "credentials": {"access_token": SECRET},
        "settings": {},
        "page_token": None,
        "since": None,
        "timeout_seconds": 8.0,
        "now_epoch": 1_700_000_000.0,
        "sleep": lambda seconds: None,
    }
    values.update(overrides)
    return FetchRequest(**values)


def _provider(**overrides: Any) -> RestProvider:
    return RestProvider.from_config("whoop", _config(**overrides))


def _assert_no_secret(exc: BaseException) -> None:
    text = f"{exc} {exc!r} {getattr(exc, 'message', '')}"
    assert SECRET not in text
    assert "Bearer" not in text
    assert BASE not in text


def _sent_params(mocked: responses.RequestsMock, index: int) -> dict[str, str]:
    url = mocked.calls[index].request.url or ""
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


# --------------------------------------------------------------------------- configuration


def test_from_config_exposes_data_types_with_their_policies() -> None:
    # Given a valid configuration with a policy on one data type
    # When the provider is built
    provider = _provider()

    # Then both data types are known and the policy is carried over
    assert provider.name == "whoop"
    assert set(provider.data_types()) == {"recovery", "nested"}
    assert provider.data_types()["recovery"].policy == PolicyDefaults(300, 3600, 3600)
    assert provider.data_types()["nested"].policy == PolicyDefaults()


def test_from_config_applies_defaults_for_optional_keys() -> None:
    # Given the smallest possible configuration
    config = {"base_url": BASE + "/", "data_types": {"items": {"path": "/items"}}}

    # When the provider is built
    provider = RestProvider.from_config("minimal", config)

    # Then the documented defaults are in effect
    assert provider.config.base_url == BASE
    assert provider.config.timeout_seconds == 10.0
    assert provider.config.auth is None
    assert provider.config.pagination is None
    assert provider.config.incremental is None
    assert provider.config.page_size is None
    assert provider.config.default_headers == {"Accept": "application/json"}
    spec = provider.config.data_types["items"]
    assert (spec.records_path, spec.id_field, spec.updated_at_field, spec.deleted_field) == ("", "id", None, None)


def _assert_refused(config: Mapping[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RestProvider.from_config("whoop", config)
    assert "'whoop'" in str(caught.value)
    assert fragment in str(caught.value)


def _without(config: dict[str, Any], key: str) -> dict[str, Any]:
    config.pop(key)
    return config


def _with_type(**spec: Any) -> dict[str, Any]:
    return _config(data_types={"recovery": {"path": "/recovery", **spec}})


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        pytest.param(_without(_config(), "base_url"), "base_url", id="missing-base-url"),
        pytest.param(_config(base_url="ftp://x.test"), "base_url", id="non-http-base-url"),
        pytest.param(_config(base_url="https://u:p@x.test"), "base_url", id="credentials-in-base-url"),
        pytest.param(_config(base_url="https://x.test/v1?key=1"), "base_url", id="query-in-base-url"),
        pytest.param(_without(_config(), "data_types"), "data_types", id="missing-data-types"),
        pytest.param(_config(data_types={}), "data_types", id="empty-data-types"),
        pytest.param(_config(colour="blue"), "colour", id="unknown-top-level-key"),
        pytest.param(_config(timeout_seconds=0), "timeout_seconds", id="zero-timeout"),
        pytest.param(_config(timeout_seconds="10"), "timeout_seconds", id="string-timeout"),
        pytest.param(_config(page_size=0), "page_size", id="zero-page-size"),
        pytest.param(_config(page_size_param=None), "page_size", id="page-size-without-param"),
        pytest.param(_config(auth={"header": "Authorization"}), "auth.template", id="auth-without-template"),
        pytest.param(_config(auth={"template": "Bearer {token.__class__}"}), "auth.template", id="attr-in-template"),
        pytest.param(_config(auth={"template": "Bearer {token"}), "auth.template", id="broken-template"),
        pytest.param(_config(auth={"template": "Bearer {}"}), "auth.template", id="positional-template"),
        pytest.param(_config(pagination={"response_field": "next"}), "pagination.request_param", id="half-pagination"),
        pytest.param(_config(incremental={}), "incremental.request_param", id="empty-incremental"),
        pytest.param(_config(incremental={"request_param": "limit"}), "incremental.request_param", id="param-clash"),
        pytest.param(_config(default_headers={"authorization": "x"}), "default_headers", id="auth-header-in-defaults"),
        pytest.param(_config(default_headers={"X": "a\r\nb"}), "default_headers", id="header-line-break"),
        pytest.param(_with_type(path="recovery"), "data_types.recovery.path", id="relative-path"),
        pytest.param(_config(data_types={"recovery": {}}), "data_types.recovery.path", id="missing-path"),
        pytest.param(_with_type(id_field="a..b"), "data_types.recovery.id_field", id="bad-dotted-path"),
        pytest.param(_with_type(id_field=""), "data_types.recovery.id_field", id="empty-id-field"),
        pytest.param(_with_type(recods_path="x"), "recods_path", id="typo-in-data-type"),
        pytest.param(
            _with_type(policy={"cooldown_seconds": -1}), "data_types.recovery.policy.cooldown_seconds", id="neg-policy"
        ),
        pytest.param(
            _with_type(policy={"cooldown_seconds": 600, "max_staleness_seconds": 60}),
            "cooldown_seconds <= max_staleness_seconds",
            id="cooldown-above-staleness",
        ),
        pytest.param(_with_type(policy={"every": 5}), "every", id="unknown-policy-key"),
    ],
)
def test_from_config_rejects_invalid_configuration(config: Mapping[str, Any], fragment: str) -> None:
    # Given an invalid provider entry
    # When the provider is built, then the error names the provider and the offending key
    _assert_refused(config, fragment)


def test_example_providers_file_builds_a_registry() -> None:
    # Given the shipped WHOOP-like example providers file
    config = json.loads(EXAMPLE_FILE.read_text())

    # When the registry is built from it
    registry = registry_from_config(config)

    # Then both providers are present and the REST one (an OKX-signed exchange) has its balances
    assert "demo" in registry.names()
    rest = [registry.get(name) for name in registry.names() if isinstance(registry.get(name), RestProvider)]
    assert len(rest) == 1
    assert set(rest[0].data_types()) == {"balances"}


# --------------------------------------------------------------------------- credentials


def test_validate_connection_accepts_complete_credentials() -> None:
    # Given a provider whose template needs access_token
    provider = _provider()

    # When / Then complete credentials pass
    provider.validate_connection({"access_token": SECRET}, {})


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({}, id="absent"),
        pytest.param({"access_token": None}, id="null"),
        pytest.param({"access_token": ""}, id="empty"),
        pytest.param({"access_token": {"nested": SECRET}}, id="not-a-scalar"),
        pytest.param({"refresh_token": SECRET}, id="wrong-key"),
    ],
)
def test_validate_connection_rejects_missing_template_fields(credentials: Mapping[str, Any]) -> None:
    # Given a provider whose template needs access_token
    provider = _provider()

    # When the connection is validated without a usable access_token
    with pytest.raises(ValidationError) as caught:
        provider.validate_connection(credentials, {})

    # Then the error names the missing credential but never a credential value
    assert "access_token" in str(caught.value)
    _assert_no_secret(caught.value)


def test_validate_connection_checks_every_template_field() -> None:
    # Given a template with two credential fields
    provider = _provider(auth={"header": "X-Auth", "template": "{user}:{api_key}"})

    # When only one is supplied
    with pytest.raises(ValidationError) as caught:
        provider.validate_connection({"user": "alice"}, {})

    # Then the other one is reported
    assert "api_key" in str(caught.value)
    assert "alice" not in str(caught.value)


def test_validate_connection_rejects_line_breaks_without_echoing_them() -> None:
    # Given a credential that would inject a header
    provider = _provider()

    # When it is validated
    with pytest.raises(ValidationError) as caught:
        provider.validate_connection({"access_token": SECRET + "\r\nX-Evil: 1"}, {})

    # Then it is refused without echoing the value
    _assert_no_secret(caught.value)


def test_fetch_sends_auth_header_built_from_credentials(mocked: responses.RequestsMock) -> None:
    # Given an upstream with one empty page
    mocked.get(f"{BASE}/recovery", json={"records": [], "next_token": None})

    # When a page is fetched
    _provider().fetch_page(_request())

    # Then the auth header is the template filled from the credentials, next to the default headers
    sent = mocked.calls[0].request.headers
    assert sent["Authorization"] == f"Bearer {SECRET}"
    assert sent["Accept"] == "application/json"


def test_fetch_without_auth_sends_no_authorization_header(mocked: responses.RequestsMock) -> None:
    # Given an anonymous provider
    mocked.get(f"{BASE}/recovery", json={"records": []})
    provider = _provider(auth=None)

    # When a page is fetched
    provider.fetch_page(_request(credentials={}))

    # Then no Authorization header goes out
    assert "Authorization" not in mocked.calls[0].request.headers


def test_fetch_with_missing_credential_fails_before_calling_upstream(mocked: responses.RequestsMock) -> None:
    # Given a connection whose credentials lost the access token
    provider = _provider()

    # When a page is fetched
    with pytest.raises(ProviderAuthError) as caught:
        provider.fetch_page(_request(credentials={"refresh_token": SECRET}))

    # Then it is an auth problem naming the field, and nothing was sent
    assert "access_token" in str(caught.value)
    _assert_no_secret(caught.value)
    assert len(mocked.calls) == 0


# --------------------------------------------------------------------------- pagination and incremental


def test_two_page_pagination_sends_the_response_token_on_the_next_call(mocked: responses.RequestsMock) -> None:
    # Given an upstream that answers two pages, linked by next_token
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 1, "updated_at": "2024-01-01T00:00:00Z"}], "next_token": "tok-2"},
        match=[responses.matchers.query_param_matcher({"limit": "25"})],
    )
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 2, "updated_at": "2024-01-02T00:00:00Z"}], "next_token": None},
        match=[responses.matchers.query_param_matcher({"limit": "25", "nextToken": "tok-2"})],
    )
    provider = _provider()

    # When the first page is fetched, then the page its token points at
    first = provider.fetch_page(_request())
    second = provider.fetch_page(_request(page_token=first.next_page_token))

    # Then the token travelled from the first answer to the second request, and the second page is the last
    assert first.next_page_token == "tok-2"
    assert [r.record_id for r in first.records] == ["1"]
    assert second.next_page_token is None
    assert [r.record_id for r in second.records] == ["2"]
    assert second.records[0].updated_at == "2024-01-02T00:00:00Z"
    assert _sent_params(mocked, 1) == {"limit": "25", "nextToken": "tok-2"}


@pytest.mark.parametrize(
    "body", [{"records": []}, {"records": [], "next_token": ""}, {"records": [], "next_token": None}]
)
def test_missing_null_or_empty_token_means_last_page(mocked: responses.RequestsMock, body: dict[str, Any]) -> None:
    # Given an upstream answer without a usable next token
    mocked.get(f"{BASE}/recovery", json=body)

    # When the page is fetched
    page = _provider().fetch_page(_request())

    # Then it is the last page
    assert page.next_page_token is None


def test_numeric_page_token_is_passed_on_as_text(mocked: responses.RequestsMock) -> None:
    # Given an upstream that paginates by offset number
    mocked.get(f"{BASE}/recovery", json={"records": [], "next_token": 50})

    # When the page is fetched
    page = _provider().fetch_page(_request())

    # Then the token is a string
    assert page.next_page_token == "50"


def test_repeated_page_token_is_refused(mocked: responses.RequestsMock) -> None:
    # Given an upstream that hands back the token it was just sent
    mocked.get(f"{BASE}/recovery", json={"records": [], "next_token": "same"})

    # When that page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request(page_token="same"))

    # Then the loop is stopped with a permanent error
    assert caught.value.retryable is False


def test_incremental_since_is_sent_as_the_configured_param(mocked: responses.RequestsMock) -> None:
    # Given an upstream expecting the watermark in "start"
    mocked.get(
        f"{BASE}/recovery",
        json={"records": []},
        match=[responses.matchers.query_param_matcher({"limit": "25", "start": "2024-01-01T00:00:00Z"})],
    )

    # When an incremental fetch runs
    _provider().fetch_page(_request(since="2024-01-01T00:00:00Z"))

    # Then the watermark was sent (the matcher asserted the exact query)
    assert _sent_params(mocked, 0)["start"] == "2024-01-01T00:00:00Z"


def test_an_event_time_filter_asks_for_a_fixed_look_back_instead_of_the_watermark(
    mocked: responses.RequestsMock,
) -> None:
    # Given an API whose "start" filters by when a record happened (WHOOP), with a three-day look-back
    provider = _provider(incremental={"request_param": "start", "event_time_lookback_seconds": 259_200})
    mocked.get(
        f"{BASE}/recovery",
        json={"records": []},
        match=[responses.matchers.query_param_matcher({"limit": "25", "start": "2023-11-11T22:13:20.000Z"})],
    )

    # When an incremental fetch runs at 2023-11-14T22:13:20Z with a watermark from long ago
    provider.fetch_page(_request(since="2020-01-01T00:00:00Z", now_epoch=1_700_000_000.0))

    # Then it asked for the last three days, not for everything since the watermark
    assert _sent_params(mocked, 0)["start"] == "2023-11-11T22:13:20.000Z"


def test_a_full_pass_sends_no_event_time_filter(mocked: responses.RequestsMock) -> None:
    # Given the same provider, on a full pass (no watermark)
    provider = _provider(incremental={"request_param": "start", "event_time_lookback_seconds": 259_200})
    mocked.get(f"{BASE}/recovery", json={"records": []})
    provider.fetch_page(_request(since=None))
    # Then nothing filters the listing
    assert "start" not in _sent_params(mocked, 0)


@pytest.mark.parametrize(
    ("incremental", "fragment"),
    [
        ({"request_param": "start", "event_time_lookback_seconds": 10}, "event_time_lookback_seconds"),
        ({"request_param": "start", "event_time_lookback_seconds": 600, "time_format": "rfc822"}, "time_format"),
        ({"request_param": "start", "time_format": "epoch_ms"}, "time_format"),
    ],
)
def test_event_time_lookback_is_validated(incremental: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        _provider(incremental=incremental)


def test_since_is_ignored_without_incremental_config(mocked: responses.RequestsMock) -> None:
    # Given a provider without incremental support
    mocked.get(f"{BASE}/recovery", json={"records": []})
    provider = _provider(incremental=None)

    # When a fetch carries a watermark anyway
    provider.fetch_page(_request(since="2024-01-01T00:00:00Z"))

    # Then no filter goes out: it is a full pull
    assert _sent_params(mocked, 0) == {"limit": "25"}


# --------------------------------------------------------------------------- record mapping


def test_dotted_records_path_and_id_field(mocked: responses.RequestsMock) -> None:
    # Given records nested under data.items with ids under meta.id
    mocked.get(
        f"{BASE}/nested",
        json={
            "data": {
                "items": [
                    {"meta": {"id": 7, "modified": "2024-02-01T00:00:00Z"}, "value": 1},
                    {"meta": {"id": "abc"}, "value": 2},
                ]
            }
        },
    )

    # When the page is fetched
    page = _provider().fetch_page(_request("nested"))

    # Then ids are strings, stamps come from the dotted field, and the whole record is kept
    assert [r.record_id for r in page.records] == ["7", "abc"]
    assert [r.updated_at for r in page.records] == ["2024-02-01T00:00:00Z", None]
    assert page.records[0].data == {"meta": {"id": 7, "modified": "2024-02-01T00:00:00Z"}, "value": 1}


def test_empty_records_path_means_the_body_is_the_list(mocked: responses.RequestsMock) -> None:
    # Given an API that answers a bare JSON array
    mocked.get(f"{BASE}/items", json=[{"id": 1}, {"id": 2}])
    provider = RestProvider.from_config("bare", {"base_url": BASE, "data_types": {"items": {"path": "/items"}}})

    # When the page is fetched
    page = provider.fetch_page(_request("items"))

    # Then every element is a record and, without pagination, it is the only page
    assert [r.record_id for r in page.records] == ["1", "2"]
    assert page.next_page_token is None


def test_truthy_deleted_field_marks_a_tombstone(mocked: responses.RequestsMock) -> None:
    # Given records with deleted flags true, false, absent and a deletion stamp
    mocked.get(
        f"{BASE}/nested",
        json={
            "data": {
                "items": [
                    {"meta": {"id": 1, "deleted": True}},
                    {"meta": {"id": 2, "deleted": False}},
                    {"meta": {"id": 3}},
                    {"meta": {"id": 4, "deleted": "2024-03-01T00:00:00Z"}},
                ]
            }
        },
    )

    # When the page is fetched
    page = _provider().fetch_page(_request("nested"))

    # Then only the truthy ones are tombstones
    assert [(r.record_id, r.deleted) for r in page.records] == [("1", True), ("2", False), ("3", False), ("4", True)]


def test_record_without_id_is_skipped_naming_the_field(mocked: responses.RequestsMock) -> None:
    # Given a record lacking its id between two good ones
    mocked.get(f"{BASE}/recovery", json={"records": [{"cycle_id": 1}, {"private": "do-not-echo"}, {"cycle_id": 3}]})

    # When the page is fetched
    page = _provider().fetch_page(_request())

    # Then the good records are kept and the bad one is set aside, naming the field and position, not its content
    assert [r.record_id for r in page.records] == ["1", "3"]
    assert len(page.skipped) == 1
    skipped = page.skipped[0]
    assert (skipped.reason, skipped.record_id) == ("missing_id", None)
    assert "cycle_id" in skipped.detail
    assert "#1" in skipped.detail
    assert "do-not-echo" not in skipped.detail


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"records": {"cycle_id": 1}}, id="object-not-list"),
        pytest.param({"items": []}, id="records-path-missing"),
        pytest.param({"records": None}, id="records-null"),
        pytest.param({"records": [], "next_token": {"x": 1}}, id="token-not-scalar"),
    ],
)
def test_malformed_answer_is_a_permanent_error(mocked: responses.RequestsMock, body: Any) -> None:
    # Given an answer that does not have the configured shape
    mocked.get(f"{BASE}/recovery", json=body)

    # When the page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request())

    # Then it is not retryable
    assert caught.value.retryable is False
    _assert_no_secret(caught.value)


def test_invalid_json_is_a_permanent_error(mocked: responses.RequestsMock) -> None:
    # Given an answer that is not JSON
    mocked.get(f"{BASE}/recovery", body="<html>oops</html>", status=200)

    # When the page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request())

    # Then it is not retryable and does not echo the body
    assert caught.value.retryable is False
    assert "oops" not in str(caught.value)


def test_unknown_data_type_is_a_permanent_error() -> None:
    # Given a provider without a "steps" type
    # When it is asked for one
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request("steps"))

    # Then it refuses without retrying
    assert caught.value.retryable is False


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_auth_errors(mocked: responses.RequestsMock, status: int) -> None:
    # Given an upstream rejecting the token (and echoing it back, as some do)
    mocked.get(f"{BASE}/recovery", json={"error": f"bad token {SECRET}"}, status=status)

    # When a page is fetched
    with pytest.raises(ProviderAuthError) as caught:
        _provider().fetch_page(_request())

    # Then it is a non-retryable auth error carrying the status, and no secret
    assert caught.value.retryable is False
    assert caught.value.upstream_status == status
    assert str(status) in str(caught.value)
    assert "whoop" in str(caught.value)
    assert "recovery" in str(caught.value)
    _assert_no_secret(caught.value)


def test_429_is_retryable_and_keeps_retry_after(mocked: responses.RequestsMock) -> None:
    # Given an upstream rate limiting with Retry-After
    mocked.get(f"{BASE}/recovery", json={}, status=429, headers={"Retry-After": "120"})

    # When a page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request())

    # Then it is retryable, says 429 and exposes the raw header value
    assert isinstance(caught.value, ProviderRateLimitError)
    assert caught.value.retryable is True
    assert caught.value.upstream_status == 429
    assert caught.value.retry_after == "120"
    _assert_no_secret(caught.value)


def test_429_without_retry_after_has_none(mocked: responses.RequestsMock) -> None:
    # Given an upstream rate limiting without Retry-After
    mocked.get(f"{BASE}/recovery", json={}, status=429)

    # When a page is fetched
    with pytest.raises(ProviderRateLimitError) as caught:
        _provider().fetch_page(_request())

    # Then retry_after is None
    assert caught.value.retry_after is None


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (404, False), (400, False), (302, False)])
def test_status_codes_map_to_retryable_or_permanent(
    mocked: responses.RequestsMock, status: int, retryable: bool
) -> None:
    # Given an upstream answering with an error status
    mocked.get(f"{BASE}/recovery", json={"token": SECRET}, status=status)

    # When a page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request(page_token="tok-9", since="2024-01-01"))

    # Then 5xx are retryable, the rest permanent, and the message names provider, type and status only
    assert type(caught.value) is ProviderError
    assert caught.value.retryable is retryable
    assert caught.value.upstream_status == status
    message = str(caught.value)
    assert "'whoop'" in message
    assert "'recovery'" in message
    assert f"HTTP {status}" in message
    assert "tok-9" not in message
    _assert_no_secret(caught.value)


def test_timeout_becomes_provider_timeout_error(mocked: responses.RequestsMock) -> None:
    # Given an upstream that times out
    mocked.get(f"{BASE}/recovery", body=requests.exceptions.ReadTimeout(f"read timed out, url {BASE}?x={SECRET}"))

    # When a page is fetched
    with pytest.raises(ProviderTimeoutError) as caught:
        _provider().fetch_page(_request())

    # Then it is a retryable timeout, without the underlying exception's text
    assert caught.value.retryable is True
    assert caught.value.__cause__ is None
    _assert_no_secret(caught.value)


def test_connection_error_is_retryable(mocked: responses.RequestsMock) -> None:
    # Given an upstream that cannot be reached
    mocked.get(f"{BASE}/recovery", body=requests.ConnectionError(f"cannot reach {BASE}?token={SECRET}"))

    # When a page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request())

    # Then it is retryable and the text of the underlying error is not repeated
    assert type(caught.value) is ProviderError
    assert caught.value.retryable is True
    _assert_no_secret(caught.value)


@pytest.mark.parametrize(
    ("config_timeout", "request_timeout", "expected"),
    [(10, 3.5, 3.5), (2, 8.0, 2.0), (5, 5.0, 5.0)],
)
def test_timeout_passed_to_requests_is_min_of_config_and_request(
    mocked: responses.RequestsMock, config_timeout: float, request_timeout: float, expected: float
) -> None:
    # Given a provider timeout and a caller budget
    mocked.get(f"{BASE}/recovery", json={"records": []})
    provider = _provider(timeout_seconds=config_timeout)

    # When a page is fetched
    provider.fetch_page(_request(timeout_seconds=request_timeout))

    # Then requests got the smaller of the two
    assert vars(mocked.calls[0].request)["req_kwargs"]["timeout"] == expected


def test_exhausted_budget_times_out_without_calling_upstream(mocked: responses.RequestsMock) -> None:
    # Given a caller with no time left
    # When a page is fetched
    with pytest.raises(ProviderTimeoutError):
        _provider().fetch_page(_request(timeout_seconds=0))

    # Then nothing was sent
    assert len(mocked.calls) == 0


# --------------------------------------------------------------------------- session


class _RecordingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[Any] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.timeouts.append(kwargs.get("timeout"))
        return super().request(method, url, *args, **kwargs)


def test_injected_session_is_used_for_every_call(mocked: responses.RequestsMock) -> None:
    # Given a provider built with an injected session
    mocked.get(f"{BASE}/recovery", json={"records": []})
    session = _RecordingSession()
    provider = RestProvider.from_config("whoop", _config(), session=session)

    # When two pages are fetched
    provider.fetch_page(_request())
    provider.fetch_page(_request(timeout_seconds=1.5))

    # Then both went through that session, each with a timeout
    assert provider.session is session
    assert session.timeouts == [8.0, 1.5]


def test_session_is_created_lazily_once_and_overridable() -> None:
    # Given a subclass that builds its own session
    created: list[requests.Session] = []

    class CustomProvider(RestProvider):
        def _create_session(self) -> requests.Session:
            session = requests.Session()
            created.append(session)
            return session

    provider = CustomProvider.from_config("whoop", copy.deepcopy(_config()))

    # When nothing has been fetched yet, then no session exists
    assert created == []

    # When the session is used twice
    first = provider.session
    second = provider.session

    # Then exactly one was created and reused
    assert first is second
    assert created == [first]
    provider.close()


# --------------------------------------------------------------------------- new configuration keys


def test_weight_method_query_and_limits_are_parsed() -> None:
    # Given a data type declaring a weight, a method and static query parameters
    provider = _provider(
        max_response_bytes=2048,
        data_types={
            "balances": {"path": "/balances", "weight": 20, "method": "post", "query": {"omitZeroBalances": "true"}},
            "plain": {"path": "/plain"},
        },
    )

    # When its specs are read
    types = provider.data_types()

    # Then the weight reaches DataTypeSpec (default 1) and the rest the config
    assert types["balances"].weight == 20
    assert types["plain"].weight == 1
    assert provider.config.data_types["balances"].method == "POST"
    assert provider.config.data_types["balances"].query == (("omitZeroBalances", "true"),)
    assert provider.config.max_response_bytes == 2048


def test_max_response_bytes_defaults_to_the_http_layer_default() -> None:
    assert _provider().config.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        pytest.param(_with_type(weight=0), "data_types.recovery.weight", id="zero-weight"),
        pytest.param(_with_type(weight="5"), "data_types.recovery.weight", id="string-weight"),
        pytest.param(_with_type(weight=True), "data_types.recovery.weight", id="boolean-weight"),
        pytest.param(_with_type(weight=10_001), "data_types.recovery.weight", id="huge-weight"),
        pytest.param(_with_type(method="DELETE"), "data_types.recovery.method", id="delete-method"),
        pytest.param(_with_type(query=["a"]), "data_types.recovery.query", id="query-not-object"),
        pytest.param(_with_type(query={"flag": True}), "data_types.recovery.query.flag", id="query-boolean"),
        pytest.param(_with_type(query={"limit": "5"}), "data_types.recovery.query", id="query-clashes-page-size"),
        pytest.param(
            _with_type(settings_query={"symbol": "not a name"}), "settings_query.symbol", id="bad-settings-field"
        ),
        pytest.param(
            _with_type(query={"symbol": "X"}, settings_query={"symbol": "symbol"}),
            "data_types.recovery.settings_query",
            id="settings-query-clashes-query",
        ),
        pytest.param(_with_type(path="/accounts/{account.id}"), "data_types.recovery.path", id="attr-placeholder"),
        pytest.param(_with_type(path="/accounts/{account_id"), "data_types.recovery.path", id="unbalanced-brace"),
        pytest.param(_with_type(path="/accounts/{}"), "data_types.recovery.path", id="positional-placeholder"),
        pytest.param(_with_type(path="{account_id}/x"), "data_types.recovery.path", id="placeholder-first"),
        pytest.param(_config(max_response_bytes=0), "max_response_bytes", id="zero-max-bytes"),
        pytest.param(_config(pagination={"kind": "scroll"}), "pagination.kind", id="unknown-kind"),
        pytest.param(
            _config(pagination={"kind": "offset", "offset_param": "o", "response_field": "x"}),
            "response_field",
            id="key-of-another-kind",
        ),
        pytest.param(_config(pagination={"kind": "offset"}), "pagination.offset_param", id="offset-without-param"),
        pytest.param(
            _config(pagination={"kind": "page_number", "page_param": "p", "first_page": -1}),
            "pagination.first_page",
            id="negative-first-page",
        ),
        pytest.param(
            _config(pagination={"kind": "header_cursor", "response_header": "X Next", "request_param": "c"}),
            "pagination.response_header",
            id="bad-header-name",
        ),
        pytest.param(
            _config(pagination={"kind": "next_url"}), "pagination.response_field", id="next-url-without-field"
        ),
        pytest.param(_config(pagination={"kind": "offset", "offset_param": "limit"}), "limit", id="offset-clash"),
        pytest.param(
            _config(incremental=None, pagination={"kind": "time_window", "start_param": "s", "end_param": "e"}),
            "pagination.window_seconds",
            id="window-without-size",
        ),
        pytest.param(
            _config(
                incremental=None,
                pagination={
                    "kind": "time_window",
                    "start_param": "s",
                    "end_param": "e",
                    "window_seconds": 60,
                    "initial_lookback_seconds": 60,
                    "time_format": "rfc822",
                },
            ),
            "pagination.time_format",
            id="unknown-time-format",
        ),
        pytest.param(
            _config(
                incremental=None,
                page_size=None,
                page_size_param=None,
                pagination={
                    "kind": "time_window",
                    "start_param": "s",
                    "end_param": "e",
                    "window_seconds": 60,
                    "initial_lookback_seconds": 60,
                    "record_time_field": "time",
                },
            ),
            "pagination.record_time_field",
            id="record-time-without-page-size",
        ),
        pytest.param(
            _config(
                pagination={
                    "kind": "time_window",
                    "start_param": "s",
                    "end_param": "e",
                    "window_seconds": 60,
                    "initial_lookback_seconds": 60,
                },
            ),
            "incremental",
            id="window-with-incremental",
        ),
        pytest.param(
            _config(
                incremental=None,
                pagination={
                    "kind": "time_window",
                    "start_param": "s",
                    "end_param": "s",
                    "window_seconds": 60,
                    "initial_lookback_seconds": 60,
                },
            ),
            "pagination.end_param",
            id="same-start-and-end",
        ),
        pytest.param(
            _config(
                auth={"kind": "hmac", "style": "binance"}, data_types={"t": {"path": "/t", "query": {"timestamp": "1"}}}
            ),
            "timestamp",
            id="query-param-auth-signs",
        ),
    ],
)
def test_from_config_rejects_invalid_new_keys(config: Mapping[str, Any], fragment: str) -> None:
    # Given an invalid use of a new key
    # When the provider is built, then the error names the provider and the offending key
    _assert_refused(config, fragment)


def test_legacy_pagination_without_kind_is_a_body_cursor() -> None:
    assert _provider().config.pagination == BodyCursor(response_field="next_token", request_param="nextToken")


# --------------------------------------------------------------------------- guarded HTTP


def test_redirect_is_refused_and_the_credential_never_reaches_the_other_host() -> None:
    # Given a provider authenticating with an X-Api-Key header, and an upstream answering 302 to another host
    provider = _provider(auth={"header": "X-Api-Key", "template": "{api_key}"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.get(f"{BASE}/recovery", status=302, headers={"Location": "https://collector.evil.test/steal"})
        stolen = mocked.get("https://collector.evil.test/steal", json={"records": []})

        # When a page is fetched
        with pytest.raises(ProviderError) as caught:
            provider.fetch_page(_request(credentials={"api_key": SECRET}))

        # Then the redirect is an upstream error, not followed: only the origin saw the key, the other host nothing
        assert stolen.call_count == 0
        assert [call.request.url for call in mocked.calls] == [f"{BASE}/recovery?limit=25"]
        assert mocked.calls[0].request.headers["X-Api-Key"] == SECRET
    assert caught.value.retryable is False
    assert caught.value.upstream_status == 302
    assert "evil" not in str(caught.value)
    _assert_no_secret(caught.value)


def test_body_over_the_limit_fails_the_page(mocked: responses.RequestsMock) -> None:
    # Given a provider accepting at most 100 bytes, and a bigger answer
    mocked.get(f"{BASE}/recovery", json={"records": [{"cycle_id": n, "pad": "x" * 20} for n in range(10)]})
    provider = _provider(max_response_bytes=100)

    # When a page is fetched
    with pytest.raises(ProviderError) as caught:
        provider.fetch_page(_request())

    # Then it fails without retrying, saying why
    assert caught.value.retryable is False
    assert "larger than 100 bytes" in str(caught.value)


def test_response_headers_are_exposed_lower_cased_on_the_page(mocked: responses.RequestsMock) -> None:
    # Given an answer with rate-limit feedback (Binance-style used weight)
    mocked.get(
        f"{BASE}/recovery",
        json={"records": []},
        headers={"X-MBX-USED-WEIGHT-1M": "42", "X-RateLimit-Remaining": "99"},
    )

    # When the page is fetched
    page = _provider().fetch_page(_request())

    # Then its headers are on the page with lower-cased names
    assert page.response_headers["x-mbx-used-weight-1m"] == "42"
    assert page.response_headers["x-ratelimit-remaining"] == "99"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (429, ProviderRateLimitError),
        (418, ProviderRateLimitError),
        (401, ProviderAuthError),
        (503, ProviderError),
        (404, ProviderError),
        (302, ProviderError),
    ],
)
def test_response_headers_are_exposed_on_errors(
    mocked: responses.RequestsMock, status: int, error_type: type[ProviderError]
) -> None:
    # Given a failed answer carrying rate-limit headers
    mocked.get(
        f"{BASE}/recovery",
        json={},
        status=status,
        headers={"Retry-After": "30", "X-MBX-USED-WEIGHT-1M": "1200", "Location": f"{BASE}/elsewhere"},
    )

    # When a page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request())

    # Then the error is of the expected kind and carries the lower-cased headers
    assert isinstance(caught.value, error_type)
    assert caught.value.response_headers["x-mbx-used-weight-1m"] == "1200"
    assert caught.value.response_headers["retry-after"] == "30"


def test_418_ban_is_a_rate_limit_with_the_providers_wait(mocked: responses.RequestsMock) -> None:
    # Given Binance's "IP banned" answer with Retry-After
    mocked.get(f"{BASE}/recovery", json={"code": -1003}, status=418, headers={"Retry-After": "120"})

    # When a page is fetched
    with pytest.raises(ProviderRateLimitError) as caught:
        _provider().fetch_page(_request())

    # Then every worker can be told to wait that long
    assert caught.value.retryable is True
    assert caught.value.upstream_status == 418
    assert caught.value.retry_after_seconds == 120.0


# --------------------------------------------------------------------------- skipped records


def test_bad_records_are_skipped_and_the_rest_kept(mocked: responses.RequestsMock) -> None:
    # Given a page mixing good records with non-objects and records without a usable id
    mocked.get(
        f"{BASE}/recovery",
        json={
            "records": [
                {"cycle_id": 1},
                "just-a-string",
                7,
                None,
                [1, 2],
                {"cycle_id": ""},
                {"cycle_id": True},
                {"cycle_id": {"nested": "private-value"}},
                {"cycle_id": 2},
            ]
        },
    )

    # When the page is fetched
    page = _provider().fetch_page(_request())

    # Then the good records are all there and every bad one is accounted for, without its content
    assert [r.record_id for r in page.records] == ["1", "2"]
    assert [s.reason for s in page.skipped] == ["not_an_object"] * 4 + ["missing_id"] * 3
    assert [s.detail.split(" ")[1] for s in page.skipped] == ["#1", "#2", "#3", "#4", "#5", "#6", "#7"]
    assert all("private-value" not in s.detail and "just-a-string" not in s.detail for s in page.skipped)


def test_records_path_that_is_not_a_list_still_fails_the_page(mocked: responses.RequestsMock) -> None:
    mocked.get(f"{BASE}/recovery", json={"records": "nope"})
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request())
    assert caught.value.retryable is False


# --------------------------------------------------------------------------- auth through RequestAuth


@dataclass
class FakeAuth:
    """A tiny signing auth: key header, timestamp and an HMAC over the query, like Binance."""

    token_client: Any = None
    recover_answers: list[bool] = field(default_factory=list)
    server_time_path: str | None = None
    recovered: list[tuple[int, Any]] = field(default_factory=list)
    fetched: list[Any] = field(default_factory=list)
    clock_offset_ms: int = 0

    def validate(self, credentials: Mapping[str, Any]) -> None:
        if not credentials.get("api_key") or not credentials.get("api_secret"):
            raise ValidationError("provider 'fake' needs credential(s) api_key, api_secret")

    def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
        query = (*request.query, ("timestamp", str(round(now * 1000) + self.clock_offset_ms)))
        signature = hmac.new(credentials["api_secret"].encode(), urlencode(query).encode(), "sha256").hexdigest()
        return replace(
            request,
            query=(*query, ("signature", signature)),
            headers={**request.headers, "X-Key": credentials["api_key"]},
        )

    def recover(self, status: int, body: Any, fetch_json: Callable[[str], Any], now: float) -> bool:
        self.recovered.append((status, body))
        if self.server_time_path is not None:
            server = fetch_json(self.server_time_path)
            self.fetched.append(server)
            self.clock_offset_ms = server["serverTime"] - round(now * 1000)
        return self.recover_answers.pop(0) if self.recover_answers else False


FAKE_CREDENTIALS = {"api_key": "key-1", "api_secret": SECRET}


def _with_auth(auth: Any, **overrides: Any) -> RestProvider:
    base = _provider(auth=None, **overrides)
    return RestProvider("whoop", replace(base.config, auth=auth))


def _signature_is_valid(url: str) -> bool:
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    signed, (name, signature) = query[:-1], query[-1]
    expected = hmac.new(SECRET.encode(), urlencode(signed).encode(), "sha256").hexdigest()
    return name == "signature" and hmac.compare_digest(signature, expected)


def test_the_signed_query_is_sent_exactly_in_order(mocked: responses.RequestsMock) -> None:
    # Given a signing auth and a data type with static and settings-derived query parameters
    mocked.get(f"{BASE}/trades", json=[])
    provider = _with_auth(
        FakeAuth(),
        incremental=None,
        pagination=None,
        data_types={
            "trades": {"path": "/trades", "query": {"b": "2", "a": "x y"}, "settings_query": {"symbol": "symbol"}}
        },
    )

    # When a page is fetched
    provider.fetch_page(_request("trades", credentials=FAKE_CREDENTIALS, settings={"symbol": "BTCUSDT"}))

    # Then the URL is the origin, path and the signed query exactly as the auth built it
    url = mocked.calls[0].request.url or ""
    assert url == (
        f"{BASE}/trades?b=2&a=x+y&symbol=BTCUSDT&limit=25&timestamp=1700000000000&signature=" + url.rsplit("=", 1)[1]
    )
    assert _signature_is_valid(url)
    assert mocked.calls[0].request.headers["X-Key"] == "key-1"


def test_recovered_refusal_is_retried_once_with_a_fresh_signature(mocked: responses.RequestsMock) -> None:
    # Given a provider refusing the first call for clock skew (Binance -1021), and its public server time
    refused = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
    mocked.get(f"{BASE}/recovery", json=refused, status=400)
    server_time = mocked.get("https://api.example.test/time", json={"serverTime": 1_700_000_002_500})
    mocked.get(f"{BASE}/recovery", json={"records": [{"cycle_id": 1}]})
    auth = FakeAuth(recover_answers=[True], server_time_path="/time")
    provider = _with_auth(auth)

    # When a page is fetched
    page = provider.fetch_page(_request(credentials=FAKE_CREDENTIALS))

    # Then the auth saw the refusal, learned the server time without credentials, and the retry succeeded
    assert [r.record_id for r in page.records] == ["1"]
    assert auth.recovered == [(400, refused)]
    assert server_time.call_count == 1
    time_call = next(call for call in mocked.calls if urlsplit(call.request.url or "").path == "/time")
    assert "X-Key" not in time_call.request.headers
    last_url = mocked.calls[-1].request.url or ""
    assert dict(parse_qsl(urlsplit(last_url).query))["timestamp"] == "1700000002500"
    assert _signature_is_valid(last_url)


def test_unrecoverable_refusal_is_not_retried(mocked: responses.RequestsMock) -> None:
    # Given an auth that cannot mend a 400
    mocked.get(f"{BASE}/recovery", body="not json", status=400)
    auth = FakeAuth(recover_answers=[False])

    # When a page is fetched
    with pytest.raises(ProviderError) as caught:
        _with_auth(auth).fetch_page(_request(credentials=FAKE_CREDENTIALS))

    # Then one call was made, the auth saw no JSON body, and the 400 is reported
    assert len(mocked.calls) == 1
    assert auth.recovered == [(400, None)]
    assert caught.value.upstream_status == 400


def test_recovery_happens_at_most_once_per_fetch(mocked: responses.RequestsMock) -> None:
    # Given an auth that always claims it fixed things, and a provider that always refuses
    mocked.get(f"{BASE}/recovery", json={"code": -1021}, status=400)
    auth = FakeAuth(recover_answers=[True, True, True])

    # When a page is fetched
    with pytest.raises(ProviderError):
        _with_auth(auth).fetch_page(_request(credentials=FAKE_CREDENTIALS))

    # Then there were exactly two calls and one recovery
    assert len(mocked.calls) == 2
    assert len(auth.recovered) == 1


def test_recovery_fetch_cannot_leave_the_origin(mocked: responses.RequestsMock) -> None:
    # Given an auth asking to fetch a path that is really another host
    mocked.get(f"{BASE}/recovery", json={"code": -1021}, status=400)
    auth = FakeAuth(recover_answers=[True], server_time_path="//evil.test/time")

    # When a page is fetched
    with pytest.raises(ProviderError) as caught:
        _with_auth(auth).fetch_page(_request(credentials=FAKE_CREDENTIALS))

    # Then the fetch is refused before any call
    assert "off the origin" in str(caught.value)
    assert len(mocked.calls) == 1


def test_validate_connection_delegates_to_the_auth() -> None:
    # Given a provider with a fake auth
    provider = _with_auth(FakeAuth())

    # When credentials are validated, then the auth decides
    provider.validate_connection(FAKE_CREDENTIALS, {})
    with pytest.raises(ValidationError) as caught:
        provider.validate_connection({"api_key": "key-1"}, {})
    assert "api_secret" in str(caught.value)


def test_token_client_is_the_auths() -> None:
    # Given an auth with a token client, and the header kind without one
    client = object()
    with_client = _with_auth(FakeAuth(token_client=client))

    # When the engine looks for it
    # Then it finds the auth's, and none for the header kind or anonymous providers
    assert token_client_of(with_client) is client
    assert token_client_of(_provider()) is None
    assert token_client_of(_provider(auth=None)) is None


def test_an_auth_that_moves_the_call_off_the_origin_is_refused(mocked: responses.RequestsMock) -> None:
    # Given a (broken) auth that changes the origin
    class MovingAuth(FakeAuth):
        def apply(self, request: OutgoingRequest, credentials: Mapping[str, Any], now: float) -> OutgoingRequest:
            return replace(request, origin="https://evil.test")

    # When a page is fetched
    with pytest.raises(ProviderError):
        _with_auth(MovingAuth()).fetch_page(_request(credentials=FAKE_CREDENTIALS))

    # Then nothing was sent
    assert len(mocked.calls) == 0


# --------------------------------------------------------------------------- settings in paths and queries


ACCOUNTS = {
    "holdings": {
        "path": "/accounts/{account_id}/holdings",
        "settings_query": {"symbol": "symbol"},
        "records_path": "",
        "id_field": "id",
    }
}


def test_path_placeholders_and_settings_query_come_from_settings(mocked: responses.RequestsMock) -> None:
    # Given a per-account path and a per-symbol query parameter
    mocked.get(f"{BASE}/accounts/acc%2F1%20x/holdings", json=[{"id": 1}])
    provider = _provider(auth=None, pagination=None, incremental=None, data_types=ACCOUNTS)

    # When a page is fetched for a connection whose account id needs quoting
    page = provider.fetch_page(_request("holdings", settings={"account_id": "acc/1 x", "symbol": "BTC&USDT"}))

    # Then the id filled one quoted path segment and the symbol went into the query
    assert [r.record_id for r in page.records] == ["1"]
    assert _sent_params(mocked, 0) == {"symbol": "BTC&USDT", "limit": "25"}


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"symbol": "BTCUSDT"}, id="missing-account"),
        pytest.param({"account_id": "..", "symbol": "BTCUSDT"}, id="dot-dot-account"),
        pytest.param({"account_id": "", "symbol": "BTCUSDT"}, id="empty-account"),
        pytest.param({"account_id": True, "symbol": "BTCUSDT"}, id="boolean-account"),
        pytest.param({"account_id": "a1"}, id="missing-symbol"),
    ],
)
def test_missing_or_unusable_settings_are_refused(mocked: responses.RequestsMock, settings: dict[str, Any]) -> None:
    # Given a provider whose path and query need settings
    provider = _provider(auth=None, pagination=None, incremental=None, data_types=ACCOUNTS)

    # When a connection is validated, or fetched, with a setting missing or unusable
    with pytest.raises(ValidationError) as validated:
        provider.validate_connection({}, settings)
    with pytest.raises(ProviderError) as fetched:
        provider.fetch_page(_request("holdings", settings=settings))

    # Then both refuse naming the setting, and nothing was sent
    missing = "symbol" if "symbol" not in settings else "account_id"
    assert missing in str(validated.value)
    assert missing in str(fetched.value)
    assert fetched.value.retryable is False
    assert len(mocked.calls) == 0


def test_post_data_type_sends_its_query_in_the_query_string(mocked: responses.RequestsMock) -> None:
    # Given a POST data type with a static query (Binance getUserAsset-style)
    mocked.post(f"{BASE}/asset/getUserAsset", json=[{"asset": "BTC", "free": "1"}])
    provider = _provider(
        auth=None,
        pagination=None,
        incremental=None,
        page_size=None,
        page_size_param=None,
        data_types={
            "assets": {
                "path": "/asset/getUserAsset",
                "method": "POST",
                "query": {"needBtcValuation": "true"},
                "id_field": "asset",
            }
        },
    )

    # When a page is fetched
    page = provider.fetch_page(_request("assets", credentials={}))

    # Then it was a POST with the parameters in the query string and no body
    assert mocked.calls[0].request.method == "POST"
    assert _sent_params(mocked, 0) == {"needBtcValuation": "true"}
    assert not mocked.calls[0].request.body
    assert [r.record_id for r in page.records] == ["BTC"]


# --------------------------------------------------------------------------- pagination kinds over HTTP


def _paged(pagination: dict[str, Any], **overrides: Any) -> RestProvider:
    values: dict[str, Any] = {"auth": None, "incremental": None, "pagination": pagination}
    values.update(overrides)
    return _provider(**values)


def test_header_cursor_pages(mocked: responses.RequestsMock) -> None:
    # Given an API giving its cursor in a response header
    mocked.get(f"{BASE}/recovery", json={"records": [{"cycle_id": 1}]}, headers={"X-Next-Cursor": "c2"})
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 2}]},
        match=[responses.matchers.query_param_matcher({"limit": "25", "after": "c2"})],
    )
    provider = _paged({"kind": "header_cursor", "response_header": "X-Next-Cursor", "request_param": "after"})

    # When both pages are fetched
    first = provider.fetch_page(_request(credentials={}))
    second = provider.fetch_page(_request(credentials={}, page_token=first.next_page_token))

    # Then the header's cursor led to the second page, which is the last
    assert first.next_page_token == "c2"
    assert second.next_page_token is None


def test_next_url_pages_call_the_url_exactly(mocked: responses.RequestsMock) -> None:
    # Given an API whose body names the next page's full URL (with its own query)
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 1}], "links": {"next": f"{BASE}/recovery?cursor=Zm9v%2Bbar&size=25"}},
    )
    mocked.get(f"{BASE}/recovery", json={"records": [{"cycle_id": 2}], "links": {"next": None}})
    provider = _paged({"kind": "next_url", "response_field": "links.next"})

    # When both pages are fetched
    first = provider.fetch_page(_request(credentials={}))
    second = provider.fetch_page(_request(credentials={}, page_token=first.next_page_token))

    # Then the token is the path-and-query, called as given (no limit added again)
    assert first.next_page_token == "/v1/recovery?cursor=Zm9v%2Bbar&size=25"
    assert mocked.calls[1].request.url == f"{BASE}/recovery?cursor=Zm9v%2Bbar&size=25"
    assert second.next_page_token is None


def test_link_header_pages_and_an_escaping_link_fails_without_calling_it(mocked: responses.RequestsMock) -> None:
    # Given an API paging through Link headers, whose second page points at another host
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 1}]},
        headers={"Link": f'<{BASE}/recovery?page=2&limit=25>; rel="next", <{BASE}/recovery?page=9>; rel="last"'},
    )
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 2}]},
        headers={"Link": '<https://evil.test/v1/recovery?page=3>; rel="next"'},
        match=[responses.matchers.query_param_matcher({"page": "2", "limit": "25"})],
    )
    provider = _paged({"kind": "link_header"})

    # When the first page is fetched, then the second
    first = provider.fetch_page(_request(credentials={}))
    with pytest.raises(ProviderError) as caught:
        provider.fetch_page(_request(credentials={}, page_token=first.next_page_token))

    # Then the first link was followed, the escaping one refused naming the kind, not the URL
    assert first.next_page_token == "/v1/recovery?page=2&limit=25"
    assert caught.value.retryable is False
    assert "link_header" in str(caught.value)
    assert "evil" not in str(caught.value)
    assert len(mocked.calls) == 2


def test_offset_pages_stop_on_a_short_page(mocked: responses.RequestsMock) -> None:
    # Given an offset API with 2 records a page and 3 records in all
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 1}, {"cycle_id": 2}]},
        match=[responses.matchers.query_param_matcher({"limit": "2", "offset": "0"})],
    )
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 3}]},
        match=[responses.matchers.query_param_matcher({"limit": "2", "offset": "2"})],
    )
    provider = _paged({"kind": "offset", "offset_param": "offset"}, page_size=2)

    # When pages are fetched until the last
    first = provider.fetch_page(_request(credentials={}))
    second = provider.fetch_page(_request(credentials={}, page_token=first.next_page_token))

    # Then offsets advanced by the records received and the short page ended the pass
    assert first.next_page_token == "2"
    assert second.next_page_token is None


def test_page_number_pages_stop_on_an_empty_page(mocked: responses.RequestsMock) -> None:
    mocked.get(
        f"{BASE}/recovery",
        json={"records": [{"cycle_id": 1}, {"cycle_id": 2}]},
        match=[responses.matchers.query_param_matcher({"limit": "2", "page": "1"})],
    )
    mocked.get(
        f"{BASE}/recovery",
        json={"records": []},
        match=[responses.matchers.query_param_matcher({"limit": "2", "page": "2"})],
    )
    provider = _paged({"kind": "page_number", "page_param": "page"}, page_size=2)

    first = provider.fetch_page(_request(credentials={}))
    second = provider.fetch_page(_request(credentials={}, page_token=first.next_page_token))

    assert first.next_page_token == "2"
    assert second.next_page_token is None


BINANCE = "https://api.binance.test"
TRADES_WINDOW = {
    "kind": "time_window",
    "start_param": "startTime",
    "end_param": "endTime",
    "window_seconds": 86_400,
    "initial_lookback_seconds": 2 * 86_400,
    "time_format": "epoch_ms",
    "record_time_field": "time",
}


def _binance_trades() -> RestProvider:
    return RestProvider.from_config(
        "binance",
        {
            "base_url": BINANCE,
            "page_size": 2,
            "page_size_param": "limit",
            "pagination": TRADES_WINDOW,
            "data_types": {
                "trades": {
                    "path": "/api/v3/myTrades",
                    "settings_query": {"symbol": "symbol"},
                    "updated_at_field": "time",
                    "weight": 20,
                }
            },
        },
    )


def _trade(trade_id: int, time_ms: int) -> dict[str, Any]:
    return {"symbol": "BTCUSDT", "id": trade_id, "orderId": 100 + trade_id, "price": "37000.0", "time": time_ms}


def test_time_window_walks_binance_trades_and_narrows_a_full_window(mocked: responses.RequestsMock) -> None:
    # Given 2 days of history, the first day holding more trades than a page
    now_ms = 1_700_000_000_000
    day = 86_400_000
    start = now_ms - 2 * day
    windows = [
        (start, start + day, [_trade(1, start + 10), _trade(2, start + 20)]),
        (start + 21, start + 21 + day, [_trade(3, start + 30)]),
        (start + 21 + day, now_ms, []),
    ]
    for window_start, window_end, trades in windows:
        mocked.get(
            f"{BINANCE}/api/v3/myTrades",
            json=trades,
            match=[
                responses.matchers.query_param_matcher(
                    {"symbol": "BTCUSDT", "limit": "2", "startTime": str(window_start), "endTime": str(window_end)}
                )
            ],
        )
    provider = _binance_trades()

    # When the pass is walked to its end
    token: str | None = None
    ids: list[str] = []
    for _ in range(5):
        page = provider.fetch_page(_request("trades", credentials={}, settings={"symbol": "BTCUSDT"}, page_token=token))
        ids.extend(r.record_id for r in page.records)
        token = page.next_page_token
        if token is None:
            break

    # Then the full first window was narrowed to just after its newest trade, and the pass ended at now
    assert ids == ["1", "2", "3"]
    assert len(mocked.calls) == 3
    assert provider.data_types()["trades"].weight == 20


def test_time_window_at_now_makes_no_call(mocked: responses.RequestsMock) -> None:
    # Given an incremental run whose watermark is now
    provider = _binance_trades()

    # When a page is fetched
    page = provider.fetch_page(
        _request("trades", credentials={}, settings={"symbol": "BTCUSDT"}, since="1700000000000")
    )

    # Then nothing was called and the pass is over
    assert page.records == [] and page.next_page_token is None
    assert len(mocked.calls) == 0


def test_a_corrupt_checkpoint_token_fails_without_a_call(mocked: responses.RequestsMock) -> None:
    provider = _paged({"kind": "next_url", "response_field": "next"})
    with pytest.raises(ProviderError) as caught:
        provider.fetch_page(_request(credentials={}, page_token="https://evil.test/v1/recovery"))
    assert caught.value.retryable is False
    assert "evil" not in str(caught.value)
    assert len(mocked.calls) == 0


def test_a_default_header_an_http_header_cannot_carry_is_refused_at_start_up() -> None:
    # Given a default header value outside Latin-1 (requests would fail on it at the first call)
    config = _config(default_headers={"X-Note": "sync \u2192 cache"})
    # Then the provider entry is refused naming the key
    _assert_refused(config, "default_headers.X-Note")
