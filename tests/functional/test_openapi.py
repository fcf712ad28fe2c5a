"""The OpenAPI document: it names exactly the routes the app registers, and it is served without a token."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from schemathesis.specs.openapi.definitions import OPENAPI_31

from app import app
from chalicelib.api import openapi as openapi_module
from chalicelib.api.errors import ERROR_VIEWS, INTERNAL_ERROR
from chalicelib.api.openapi import ERROR_STATUSES, OPENAPI_PATH, openapi_document
from chalicelib.api.requests import CONNECTION_FIELDS, SYNC_FIELDS
from tests.functional.conftest import Harness

_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _registered() -> set[tuple[str, str]]:
    return {(path, method.lower()) for path, methods in app.routes.items() for method in methods}


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item if method in _METHODS}


def test_every_registered_route_is_documented_and_every_documented_one_is_registered() -> None:
    # Given the routes Chalice registered and the document's operations
    registered, documented = _registered(), _documented(openapi_document())
    # Then they are the same set, both ways
    assert registered - documented == set(), "routes missing from the document"
    assert documented - registered == set(), "documented operations the app does not register"
    assert len(registered) >= 14


def test_the_document_is_served_without_a_token(harness: Harness) -> None:
    # When an anonymous client fetches it
    response = harness.client.http.get(OPENAPI_PATH)
    # Then it is the document, as JSON
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == openapi_document()


def test_the_document_is_built_once_and_callers_cannot_change_the_cached_one() -> None:
    # Given a caller that changes its copy
    first = openapi_document()
    first["paths"].clear()
    # Then the next caller still gets every path, from the one cached build
    assert openapi_document()["paths"]
    assert openapi_module._document.cache_info().currsize == 1


def test_every_operation_has_an_operation_id_responses_and_the_error_shape() -> None:
    document = openapi_document()
    ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            ids.append(operation["operationId"])
            # Every operation answers 500 with the error body, and names its success status.
            assert "500" in operation["responses"], (path, method)
            assert any(status.startswith("2") for status in operation["responses"]), (path, method)
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and status != "415":
                    assert answer == {"$ref": f"#/components/responses/Error{status}"}, (path, method, status)
    assert len(ids) == len(set(ids))
    assert set(document["components"]["responses"]) >= {f"Error{status}" for status in ERROR_STATUSES}


def test_open_routes_need_no_token_and_the_rest_a_bearer_jwt() -> None:
    document = openapi_document()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    open_routes = {
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in _METHODS and operation.get("security") == []
    }
    assert open_routes == {("/health", "get"), (OPENAPI_PATH, "get"), ("/webhooks/{provider}", "post")}


def test_the_body_schemas_name_exactly_the_fields_the_parser_accepts() -> None:
    # Given the schemas of the two JSON bodies
    schemas = openapi_document()["components"]["schemas"]
    # Then each names the parser's fields and no others, and unknown fields are not allowed
    assert tuple(schemas["ConnectionChange"]["properties"]) == CONNECTION_FIELDS
    assert tuple(schemas["SyncRequest"]["properties"]) == SYNC_FIELDS
    assert schemas["ConnectionChange"]["additionalProperties"] is False
    assert schemas["SyncRequest"]["additionalProperties"] is False
    assert schemas["ConnectionChange"]["required"] == ["provider"]


def test_every_status_and_code_of_the_error_map_is_documented() -> None:
    # Given the one error -> status map (chalicelib/api/errors.py) and the document's error statuses
    # Then each status it answers with is documented, with its code named (a new one goes in ERROR_STATUSES)
    for view in [*ERROR_VIEWS.values(), INTERNAL_ERROR]:
        assert view.status in ERROR_STATUSES, f"document status {view.status} in chalicelib/api/openapi.py"
        assert f"`{view.code}`" in ERROR_STATUSES[view.status], f"name {view.code!r} under {view.status}"


def test_the_document_is_valid_openapi_3_1_and_each_schema_valid_json_schema() -> None:
    # Given the OpenAPI 3.1 meta-schema (as schemathesis bundles it)
    document = openapi_document()
    validator = jsonschema.Draft202012Validator(OPENAPI_31)
    # Then the document follows it, and every component schema is a valid JSON Schema 2020-12
    assert [error.message for error in validator.iter_errors(document)] == []
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
