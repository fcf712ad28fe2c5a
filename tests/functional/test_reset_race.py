"""A PUT with ``reset_data`` landing while a sync of the old account runs leaves nothing of that account."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.domain.upstream import FetchRequest
from tests.functional.conftest import Harness, counting_demo


def test_reset_data_during_a_sync_leaves_no_record_or_run_of_the_old_account(make_harness: Any) -> None:
    # Given a sync on its second page when the user replaces the account's credentials with reset_data
    state: dict[str, Any] = {}

    def reset_during_page_two(request: FetchRequest) -> None:
        if request.page_token == "10" and "reset" not in state:
            harness: Harness = state["harness"]
            state["reset"] = harness.put_connection(
                credentials={"token": "another-account"}, reset_data=True
            ).status_code

    registry, _ = counting_demo(before_fetch=reset_during_page_two)
    harness = make_harness(registry=registry)
    state["harness"] = harness
    harness.put_connection(settings={"records": 30, "page_size": 10})

    # When the old account's sync carries on with its second page
    harness.container.reader.read("u1", "c1", "recovery", {"limit": "100"})

    # Then the reset happened, and neither that page nor the first one nor the old run survives it
    assert state["reset"] == 200
    runs = json.loads(harness.read("/users/u1/connections/c1/runs?data_type=recovery").body)["runs"]
    assert runs == []
    status = json.loads(harness.read("/users/u1/sync-status").body)["connections"][0]["datasets"]["recovery"]
    assert status["records_synced"] == 0
    assert _stored_records(harness) == []


def _stored_records(harness: Harness) -> list[str]:
    """Record items left in the datasets table for u1/c1/recovery (moto scan, test-only)."""
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    items = ddb.scan(TableName=harness.settings.datasets_table)["Items"]
    return [i["sk"]["S"] for i in items if i["pk"]["S"] == "u1#c1#recovery" and i["sk"]["S"].startswith("r#")]


def test_a_sync_started_between_the_resets_purge_and_its_save_leaves_nothing(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a read that syncs the old account after the PUT purged the dataset but before it saved the new one
    harness = make_harness()
    harness.put_connection(settings={"records": 10, "page_size": 10})
    harness.read("/users/u1/connections/c1/data/recovery")
    store = harness.container.store
    original_save = store.save_connection

    def read_then_save(*args: Any, **kwargs: Any) -> None:
        harness.clock.advance(3600)  # past the cooldown: the read syncs the old account again
        harness.container.reader.read("u1", "c1", "recovery", {})
        original_save(*args, **kwargs)

    monkeypatch.setattr(store, "save_connection", read_then_save)
    # When the PUT with reset_data completes
    assert harness.put_connection(credentials={"token": "another-account"}, reset_data=True).status_code == 200
    # Then nothing that sync stored of the old account is left
    assert _stored_records(harness) == []
