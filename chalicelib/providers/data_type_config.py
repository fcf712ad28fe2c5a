"""One data type of a ``rest`` provider: which endpoint to call and where its records live.

Data type keys
--------------
- ``path`` (required): from ``base_url`` on, starting with ``/``, no query or fragment.
  ``{name}`` placeholders are filled from the connection's ``settings`` (URL-quoted).
- ``method`` (``GET``): ``GET`` or ``POST`` (parameters always travel in the query string).
- ``query`` (``{}``): static query parameters, e.g. ``{"omitZeroBalances": "true"}``.
- ``settings_query`` (``{}``): query parameter -> settings field, e.g. ``{"symbol": "symbol"}``.
- ``records_path`` (``""`` = the body is the list): dotted path to the list of records.
- ``id_field`` (``"id"``), ``updated_at_field`` (null), ``deleted_field`` (null): dotted paths
  inside a record; a truthy ``deleted_field`` marks a tombstone.
- ``weight`` (1): what one call costs against the provider's rate windows (Binance weight).
- ``policy`` (``{}``): ``cooldown_seconds``, ``max_staleness_seconds``, ``schedule_every_seconds``.

Settings named by ``path`` placeholders and ``settings_query`` are required when a
connection is created (non-empty text or number, not ``.`` or ``..``).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.upstream import PolicyDefaults
from chalicelib.providers.config_reader import ConfigReader

DEFAULT_ID_FIELD = "id"
MAX_WEIGHT = 10_000
MAX_SETTING_LENGTH = 256
METHODS = ("GET", "POST")

_DATA_TYPE_KEYS = frozenset(
    {
        "path",
        "method",
        "query",
        "settings_query",
        "records_path",
        "id_field",
        "updated_at_field",
        "deleted_field",
        "weight",
        "policy",
    }
)
_POLICY_KEYS = frozenset({"cooldown_seconds", "max_staleness_seconds", "schedule_every_seconds"})

Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DataTypeConfig:
    name: str
    path: str
    records_path: str = ""
    id_field: str = DEFAULT_ID_FIELD
    updated_at_field: str | None = None
    deleted_field: str | None = None
    policy: PolicyDefaults = field(default_factory=PolicyDefaults)
    weight: int = 1
    method: str = "GET"
    query: Query = ()
    """Static query parameters, in declaration order."""
    settings_query: Query = ()
    """(query parameter, settings field) pairs."""
    path_settings: tuple[str, ...] = ()
    """Settings fields the path's ``{placeholders}`` name, in order of first use."""

    def required_settings(self) -> tuple[str, ...]:
        names = list(self.path_settings)
        for _param, setting in self.settings_query:
            if setting not in names:
                names.append(setting)
        return tuple(names)


class DataTypeReader(ConfigReader):
    """Reads one ``data_types`` entry; errors name ``data_types.<name>.<key>``."""

    def policy(self, value: Any, where: str) -> PolicyDefaults:
        if value is None:
            return PolicyDefaults()
        raw = self.mapping(value, where, _POLICY_KEYS)

        def number(key: str, minimum: int) -> int | None:
            item = raw.get(key)
            return None if item is None else self.integer(item, f"{where}.{key}", minimum=minimum)

        policy = PolicyDefaults(
            cooldown_seconds=number("cooldown_seconds", 0),
            max_staleness_seconds=number("max_staleness_seconds", 0),
            schedule_every_seconds=number("schedule_every_seconds", 1),
        )
        if (
            policy.cooldown_seconds is not None
            and policy.max_staleness_seconds is not None
            and policy.cooldown_seconds > policy.max_staleness_seconds
        ):
            raise self.fail(where, "needs cooldown_seconds <= max_staleness_seconds")
        return policy

    def path(self, value: Any, where: str) -> tuple[str, tuple[str, ...]]:
        """The data type's path and the settings its ``{placeholders}`` name."""
        path = self.text(value, where)
        try:
            parsed = list(string.Formatter().parse(path))
        except ValueError:
            raise self.fail(where, "has an unbalanced '{' or '}' (placeholders look like {account_id})") from None
        names: list[str] = []
        literal = ""
        for text, name, spec, conversion in parsed:
            literal += text
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise self.fail(where, "placeholders must be plain settings names like {account_id}")
            literal += "x"
            if name not in names:
                names.append(name)
        if not literal.startswith("/") or "?" in literal or "#" in literal:
            raise self.fail(where, "must start with '/' and have no query string or fragment")
        return path, tuple(names)

    def query(self, value: Any, where: str) -> Query:
        def static(item: Any, at: str) -> str:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.fail(at, 'must be a string or a number (write booleans as "true")')
            return str(item)

        return self._pairs(value, where, "value", static)

    def settings_query(self, value: Any, where: str) -> Query:
        def setting(item: Any, at: str) -> str:
            if not isinstance(item, str) or not item.isidentifier():
                raise self.fail(at, "must be a settings field name like 'symbol'")
            return item

        return self._pairs(value, where, "settings field", setting)

    def _pairs(self, value: Any, where: str, what: str, check: Callable[[Any, str], str]) -> Query:
        """An object of query parameter -> ``what``, each value passed through ``check``, in order."""
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a JSON object of query parameter -> {what}")
        pairs: list[tuple[str, str]] = []
        for name, item in value.items():
            self.text(name, f"{where} key")
            pairs.append((name, check(item, f"{where}.{name}")))
        return tuple(pairs)

    def method(self, value: Any, where: str) -> str:
        if value is None:
            return "GET"
        if not isinstance(value, str) or value.upper() not in METHODS:
            raise self.fail(where, f"must be one of {', '.join(METHODS)}")
        return value.upper()

    def data_type(self, name: Any, value: Any) -> DataTypeConfig:
        where = f"data_types.{name}"
        self.text(name, "data_types key")
        raw = self.mapping(value, where, _DATA_TYPE_KEYS)
        path, path_settings = self.path(raw.get("path"), f"{where}.path")
        return DataTypeConfig(
            name=name,
            path=path,
            records_path=self.dotted_path(raw.get("records_path"), f"{where}.records_path", allow_empty=True),
            id_field=self.dotted_path(raw.get("id_field", DEFAULT_ID_FIELD), f"{where}.id_field"),
            updated_at_field=self.optional_dotted_path(raw.get("updated_at_field"), f"{where}.updated_at_field"),
            deleted_field=self.optional_dotted_path(raw.get("deleted_field"), f"{where}.deleted_field"),
            policy=self.policy(raw.get("policy"), f"{where}.policy"),
            weight=self.integer(raw.get("weight", 1), f"{where}.weight", minimum=1, maximum=MAX_WEIGHT),
            method=self.method(raw.get("method"), f"{where}.method"),
            query=self.query(raw.get("query"), f"{where}.query"),
            settings_query=self.settings_query(raw.get("settings_query"), f"{where}.settings_query"),
            path_settings=path_settings,
        )
