"""The declarative REST provider, against a mocked HTTP layer (``responses``, no real network)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

from chalicelib.config import ConfigurationError
from chalicelib.errors import ValidationError
from chalicelib.providers import registry_from_config
from chalicelib.providers.base import (
    FetchRequest,
    PolicyDefaults,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from chalicelib.providers.rest import RestProvider

BASE = "https://api.example.test/v1"
SECRET = "s3cr3t-access-token-value"
EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "examples" / "providers.whoop.json"


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
    # When the provider is built
    with pytest.raises(ConfigurationError) as caught:
        RestProvider.from_config("whoop", config)

    # Then the error names the provider and the offending key
    assert "'whoop'" in str(caught.value)
    assert fragment in str(caught.value)


def test_example_providers_file_builds_a_registry() -> None:
    # Given the shipped WHOOP-like example providers file
    config = json.loads(EXAMPLE_FILE.read_text())

    # When the registry is built from it
    registry = registry_from_config(config)

    # Then both providers are present and the REST one has the WHOOP-like types
    assert "demo" in registry.names()
    rest = [registry.get(name) for name in registry.names() if isinstance(registry.get(name), RestProvider)]
    assert len(rest) == 1
    assert set(rest[0].data_types()) == {"recovery", "sleep", "cycle", "workout"}


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


def test_record_without_id_is_a_permanent_error_naming_the_field(mocked: responses.RequestsMock) -> None:
    # Given a record lacking its id
    mocked.get(f"{BASE}/recovery", json={"records": [{"cycle_id": 1}, {"private": "do-not-echo"}]})

    # When the page is fetched
    with pytest.raises(ProviderError) as caught:
        _provider().fetch_page(_request())

    # Then the error names the field and position, not the record content
    assert caught.value.retryable is False
    assert "cycle_id" in str(caught.value)
    assert "#1" in str(caught.value)
    assert "do-not-echo" not in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"records": {"cycle_id": 1}}, id="object-not-list"),
        pytest.param({"items": []}, id="records-path-missing"),
        pytest.param({"records": None}, id="records-null"),
        pytest.param({"records": ["just-a-string"]}, id="record-not-object"),
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

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:
        self.timeouts.append(kwargs.get("timeout"))
        return super().get(url, **kwargs)


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
