"""schemathesis against the app, in process: no 5xx, and every answer is what the OpenAPI document says.

Each case schemathesis generates from ``chalicelib/api/openapi.py`` is sent through ``chalice.test.Client``
(a small WSGI adaptor below) on the moto harness, with a valid token for a user who has a connection (so
the deep paths run: reads, syncs, runs), and also with no token, a forged one, another user's and an
operator's. Generation is derandomized, so a run is the same every time; ``MAX_EXAMPLES`` keeps it near
half a minute on two cores.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from chalicelib.api.openapi import openapi_document
from tests.functional.conftest import Harness

MAX_EXAMPLES = 80
"""Per operation (14 of them)."""
USER, CONNECTION, DATA_TYPE = "u1", "c1", "recovery"
_DEEP = {"user_id": USER, "connection_id": CONNECTION, "data_type": DATA_TYPE, "provider": "whoop"}
WHOOP_SECRET = "whoop-client-secret-for-the-schemathesis-run"
_SIGN = "x-test-sign-as-whoop"
"""A header only this test sends: the adaptor signs the body it carries as WHOOP would, then drops it."""
_WHO = ("user", "user", "none", "user", "forged", "user", "other_user", "operator")
_OPERATOR_WHO = ("operator", "operator", "none", "operator", "user", "operator", "forged")
_WEBHOOK_WHO = ("signed", "signed", "none", "signed", "forged")
"""Whose token each case carries, in turn: mostly the one the route is for, so the deep paths are reached."""
_BODIES: dict[str, list[Any]] = {
    "putConnection": [
        {"provider": "demo", "credentials": {"token": "secret-demo-token"}},
        {"provider": "demo"},
        {"provider": "demo", "status": "PAUSED"},
        {"provider": "demo", "reset_data": True, "settings": {}, "provider_user_id": 42},
        {"provider": "demo", "credentials": None, "provider_user_id": None},
    ],
    "forceSync": [None, {}, {"wait": True}, {"data_type": DATA_TYPE}, {"wait": True, "data_type": "sleep"}],
    "receiveWebhook": [
        {"user_id": 10129, "id": "e1", "type": "sleep.updated", "trace_id": "t1"},
        {"user_id": "10129", "type": "recovery.updated"},
        {"user_id": 10129, "type": "unknown.event"},
        {"type": "sleep.updated"},
    ],
}
"""Valid bodies the generated ones seldom hit (a known provider, a known data type), sent to the deep path."""
_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


class ChaliceWsgi:
    """A WSGI app that hands each request to ``chalice.test.Client`` (Chalice's local API Gateway)."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # The raw URI keeps the percent-encoding of path parameters, as API Gateway receives it.
        path = environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ["PATH_INFO"]
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key[:5] == "HTTP_"}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if headers.pop(_SIGN, None):
            headers.update(self._whoop_signature(body))
        answer = self._harness.client.http.request(environ["REQUEST_METHOD"], path, headers=headers, body=body)
        start_response(f"{answer.status_code} {HTTPStatus(answer.status_code).phrase}", list(answer.headers.items()))
        return [answer.body]

    def _whoop_signature(self, body: bytes) -> dict[str, str]:
        """WHOOP's: base64 HMAC-SHA256 of the timestamp (ms) and the raw body, with the client secret."""
        timestamp = str(int(self._harness.clock.now() * 1000))
        digest = hmac.new(WHOOP_SECRET.encode(), timestamp.encode() + body, hashlib.sha256).digest()
        return {"x-whoop-signature": base64.b64encode(digest).decode(), "x-whoop-signature-timestamp": timestamp}


def _headers(harness: Harness, who: str) -> dict[str, str]:
    if who == "none":
        return {}
    if who == "signed":
        return {_SIGN: "1"}
    if who == "forged":
        return {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.forged"}
    subject = {"user": USER, "other_user": "u2", "operator": "ops"}[who]
    return {"Authorization": harness.headers(subject, operator=who == "operator")["Authorization"]}


def _fuzz_operation(harness: Harness, operation: Any, tally: Counter[str], failures: list[str]) -> None:
    deep = {name: value for name, value in _DEEP.items() if name in {p.name for p in operation.path_parameters}}
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=deep),
        operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=deep),
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    bodies = _BODIES.get(operation.definition.raw.get("operationId"), [])
    strategies += [operation.as_strategy(path_parameters=deep, body=body) for body in bodies]
    checks = [CHECKS.get_one(name) for name in _CHECKS]
    who_cycle = _WHO
    if operation.path.startswith("/sync/"):
        who_cycle = _OPERATOR_WHO
    elif operation.path.startswith("/webhooks/"):
        who_cycle = _WEBHOOK_WHO
    sent = Counter[str]()

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def run(case: Any) -> None:
        who = who_cycle[sent[operation.label] % len(who_cycle)]
        sent[operation.label] += 1
        response = case.call(headers=_headers(harness, who))
        tally["requests"] += 1
        tally[f"{response.status_code // 100}xx"] += 1
        tally[f"{operation.label} {response.status_code}"] += 1  # which paths were reached, checked below
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as exc:
            tally["non_conforming"] += 1
            if len(failures) < 20:
                failures.append(f"{operation.label} as {who}: {exc}")

    run()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_document(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the document, the app behind it (the providers file, demo included, WHOOP's webhook secret set)
    # and a user with a demo connection
    monkeypatch.setenv("WHOOP_CLIENT_SECRET", WHOOP_SECRET)
    harness = make_harness(demo_provider=True)
    schema = schemathesis.openapi.from_dict(openapi_document())
    schema.app = ChaliceWsgi(harness)
    tally: Counter[str] = Counter()
    failures: list[str] = []
    # When schemathesis sends its cases to every operation
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation schemathesis cannot read is a broken document
        operation = result.ok()
        # A fresh start for each operation: the manual-refresh window of the one before is over, and the
        # connection is there and active again (a DELETE or a PUT case may have changed it).
        harness.clock.advance(harness.settings.force_refresh_window_seconds + 1)
        connection = harness.put_connection(USER, CONNECTION)
        assert connection.status_code in (200, 201), connection.body
        _fuzz_operation(harness, operation, tally, failures)
    totals = {name: tally[name] for name in ("requests", "2xx", "4xx", "5xx", "non_conforming")}
    print(f"schemathesis: {json.dumps(totals)}")
    print(json.dumps({key: count for key, count in sorted(tally.items()) if key not in totals}, indent=1))
    # Then nothing failed on the server and every answer conformed
    assert tally["5xx"] == 0 and tally["non_conforming"] == 0, "\n\n".join(failures)
    # And every operation answered a success at least once, so the deep paths were reached rather than every
    # case refused at the door
    labels = {key.rsplit(" ", 1)[0] for key in tally if key.startswith(("GET ", "PUT ", "POST ", "DELETE "))}
    refused = {label for label in labels if not any(tally[f"{label} {code}"] for code in (200, 201, 202, 204))}
    assert refused == set(), dict(sorted(tally.items()))
    assert len(labels) == 14
