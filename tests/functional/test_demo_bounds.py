"""The demo provider: its settings are bounded (400 when out of bounds) and it is offered only when enabled."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.config import ConfigurationError, settings_from_env


def body(response: Any) -> Any:
    return json.loads(response.body)


@pytest.mark.parametrize(
    ("demo_settings", "named"),
    [
        ({"latency_seconds": 16}, "latency_seconds"),
        ({"latency_seconds": -1}, "latency_seconds"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"records": 1001, "page_size": 1000}, "records"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 2.5}, "page_size"),
        ({"records": 300, "page_size": 10}, "30 pages"),
        ({"records": True}, "records"),
    ],
)
def test_a_demo_setting_out_of_bounds_is_a_400_naming_it(
    harness: Any, demo_settings: dict[str, Any], named: str
) -> None:
    # Given the demo provider; When a connection is saved with a setting out of its bounds
    response = harness.put_connection(settings=demo_settings)
    # Then it is refused as a bad request that names the setting, and nothing is saved
    assert response.status_code == 400
    assert body(response)["error"]["code"] == "bad_request"
    assert named in body(response)["error"]["message"]
    assert harness.container.store.get_connection("u1", "c1") is None


def test_the_demo_settings_at_their_bounds_are_accepted(harness: Any) -> None:
    # Given the largest demo settings allowed (15 s a page, 1000 records in 20 pages)
    settings = {"latency_seconds": 15, "failure_rate": 1, "records": 1000, "page_size": 50}
    # When a connection is saved with them; Then it is created
    assert harness.put_connection(settings=settings).status_code == 201


def test_without_the_switch_the_demo_provider_is_an_unknown_provider(make_harness: Any) -> None:
    # Given the service built from the shipped providers file with the demo switch off (the prod stage)
    harness = make_harness(demo_provider=False)
    # When a connection to the demo provider is saved
    response = harness.put_connection(provider="demo")
    # Then it is refused like any unknown provider
    assert response.status_code == 400
    assert "unknown provider 'demo'" in body(response)["error"]["message"]
    assert "demo" not in harness.container.registry.names()


def test_the_switch_is_read_from_the_environment() -> None:
    # Given the environment; When the settings are read; Then only "enabled" turns the demo on
    assert settings_from_env({"SMART_SYNC_DEMO_PROVIDER": "enabled"}).demo_provider is True
    assert settings_from_env({"SMART_SYNC_DEMO_PROVIDER": "disabled"}).demo_provider is False
    assert settings_from_env({}).demo_provider is False
    with pytest.raises(ConfigurationError, match="DEMO_PROVIDER"):
        settings_from_env({"SMART_SYNC_DEMO_PROVIDER": "yes"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMART_SYNC_USER_MAX_SLOT_SHARE", "0"),
        ("SMART_SYNC_USER_MAX_SLOT_SHARE", "2.5"),
        ("SMART_SYNC_USER_MAX_RATE_SHARE", "1.5"),
        ("SMART_SYNC_USER_MAX_RATE_SHARE", "0"),
        ("SMART_SYNC_MAX_CONNECTIONS_PER_USER", "0"),
    ],
)
def test_tenant_settings_out_of_bounds_fail_at_start_up(name: str, value: str) -> None:
    # Given a tenant setting out of bounds; When the settings are read; Then they fail, naming it
    with pytest.raises(ConfigurationError, match=name):
        settings_from_env({name: value})


def test_tenant_settings_are_read_from_the_environment() -> None:
    settings = settings_from_env(
        {
            "SMART_SYNC_USER_MAX_SLOT_SHARE": "3",
            "SMART_SYNC_USER_MAX_RATE_SHARE": "0.25",
            "SMART_SYNC_MAX_CONNECTIONS_PER_USER": "7",
        }
    )
    assert (settings.user_max_slot_share, settings.user_max_rate_share, settings.max_connections_per_user) == (
        3.0,
        0.25,
        7,
    )
