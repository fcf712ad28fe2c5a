"""SnapTrade, and the fan-out the ``snaptrade`` and ``binance`` provider types share.

Two things a plain ``rest`` declaration cannot say, both needed by SnapTrade and Binance:

1. **Each data type pages its own way.** ``rest`` has one ``pagination`` (and one page size)
   per provider. Binance pages its trades in 24 h windows but its account in one call;
   SnapTrade pages activities by offset but lists accounts in one call.
2. **One data type is a call repeated over a list.** SnapTrade's holdings, balances and
   activities are per account (``/accounts/{accountId}/...``; the all-accounts endpoints were
   removed on 2026-08-10), so a sync lists the accounts first. Binance's trades are per
   symbol (``myTrades`` requires ``symbol``), over the symbols the connection names.

So the entry is a ``rest`` entry (every top-level key of ``rest.py``, shared by all data
types) whose data types may also carry:

- ``pagination``, ``page_size``, ``page_size_param``, ``incremental``: this data type's own
  value (``null`` = none), instead of the top-level one;
- ``for_each``: repeat the data type's call once per value of a list, the value filling the
  settings field ``as`` (a ``{placeholder}`` of ``path`` or a ``settings_query`` field). The
  list is either ``{"setting": "symbols"}`` -- a connection setting holding a JSON list of 1 to
  50 values -- or ``{"listing": "accounts", "field": "id"}`` -- the records of another data type
  of this provider (one page, without ``pagination``), ``field`` being the dotted path of the
  value in each record. ``record_field`` (optional) adds the value to every record under that
  name, when the provider's answer does not say it.

Each data type is served by its own ``RestProvider`` (one auth object shared by all, so a
clock offset learned once serves every call), and every ``fetch_page`` makes **at most one
HTTP call**, so the engine's rate windows, weights and checkpoints stay exact: the listing
call is a page of its own (no records), then one page per value and inner page. The page
token is a small JSON document ``{"v": values, "i": index, "t": inner token}``: the values
are fixed when a pass starts, so a settings change or a new account mid-pass cannot shift a
resumed checkpoint onto the wrong account or symbol; it is checked again when read back.

Records of a fanned-out data type are keyed ``<value>:<record id>`` (an instrument id is
unique within one account, a Binance trade id within one symbol), so two accounts or two
symbols never overwrite each other.

SnapTrade (``type: "snaptrade"``): ``hmac`` style ``snaptrade`` signs every call with the app's
client id and consumer key (deployment environment); a connection carries the SnapTrade
``user_id`` and ``user_secret``. A 425 ("this account is being populated") is worth a retry.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import DataTypeSpec, FetchRequest, Page, ProviderError, SkippedRecord, UpstreamRecord
from chalicelib.providers.base import TokenClient
from chalicelib.providers.config_reader import ConfigReader
from chalicelib.providers.http import HttpAnswer
from chalicelib.providers.json_path import dig, scalar_text
from chalicelib.providers.rest import RestProvider

PER_TYPE_KEYS = ("pagination", "page_size", "page_size_param", "incremental")
"""Top-level ``rest`` keys a data type may set for itself."""
MAX_FAN_OUT_VALUES = 50
"""A connection's list (symbols) or listing (accounts) longer than this is refused: each value costs calls."""
MAX_TOKEN_CHARS = 65_536
_FOR_EACH_KEYS = frozenset({"setting", "listing", "field", "as", "record_field"})
_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A fanned-out value: account UUIDs and exchange symbols; nothing that could bend a URL or a record key."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
SNAPTRADE_POPULATING = 425
"""SnapTrade: "the account is being populated" (code 3012): the data comes, later."""


@dataclass(frozen=True)
class ForEach:
    """How one data type's call is repeated over a list of values."""

    target: str
    """The settings field each value fills (the ``as`` key)."""
    setting: str | None = None
    """A connection setting holding the list."""
    listing: str | None = None
    """A data type of the same provider whose records give the list."""
    field: str = "id"
    """The dotted path of the value in a listing record."""
    record_field: str | None = None
    """Added to each record with the value, when set."""


@dataclass(frozen=True)
class FanOutPosition:
    """Where a fanned-out pass is: the values fixed at its start, the current one, its inner page token."""

    values: tuple[str, ...]
    index: int
    inner_token: str | None = None

    def encode(self) -> str:
        return json.dumps({"v": list(self.values), "i": self.index, "t": self.inner_token}, separators=(",", ":"))

    @classmethod
    def decode(cls, token: str, where: str) -> FanOutPosition:
        """The position a stored page token names; ``ProviderError`` (not retryable) when it is not one of ours."""
        refused = ProviderError(f"{where}: the page token is not one this provider produces", retryable=False)
        if len(token) > MAX_TOKEN_CHARS:
            raise refused
        try:
            raw = json.loads(token)
        except ValueError:
            raise refused from None
        if not isinstance(raw, dict) or set(raw) != {"v", "i", "t"}:
            raise refused
        values, index, inner = raw["v"], raw["i"], raw["t"]
        # The checkpoint is storage, not proof: the values go into URLs, so they are checked again.
        if not isinstance(values, list) or not 0 < len(values) <= MAX_FAN_OUT_VALUES:
            raise refused
        if not all(isinstance(value, str) and _VALUE.fullmatch(value) for value in values):
            raise refused
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(values):
            raise refused
        if inner is not None and not isinstance(inner, str):
            raise refused
        return cls(tuple(values), index, inner)


def fan_out_values(raw: Any) -> tuple[str, ...] | None:
    """A settings list as values (duplicates dropped, order kept); ``None`` when it is not a usable list."""
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_FAN_OUT_VALUES:
        return None
    if not all(isinstance(value, str) and _VALUE.fullmatch(value) for value in raw):
        return None
    return tuple(dict.fromkeys(raw))


def _fail(provider: str, where: str, problem: str) -> ConfigurationError:
    return ConfigReader(provider).fail(where, problem)


def _parse_for_each(provider: str, type_name: str, raw: Any, part: RestProvider) -> ForEach:
    where = f"data_types.{type_name}.for_each"
    raw = ConfigReader(provider).mapping(raw, where, _FOR_EACH_KEYS)
    setting, listing = raw.get("setting"), raw.get("listing")
    if (setting is None) == (listing is None):
        raise _fail(provider, where, "needs exactly one of 'setting' (a list setting) or 'listing' (a data type)")
    target = raw.get("as")
    fillable = part.config.data_types[type_name].required_settings()
    if not isinstance(target, str) or target not in fillable:
        raise _fail(
            provider,
            f"{where}.as",
            "must name a {placeholder} of the path or a settings_query field "
            f"(this data type has: {', '.join(fillable) or 'none'})",
        )
    record_field = raw.get("record_field")
    if record_field is not None and (not isinstance(record_field, str) or not _IDENTIFIER.fullmatch(record_field)):
        raise _fail(provider, f"{where}.record_field", "must be a field name like 'account_id'")
    if setting is not None:
        if not isinstance(setting, str) or not _IDENTIFIER.fullmatch(setting) or setting == target:
            raise _fail(provider, f"{where}.setting", f"must be a settings field name other than {target!r}")
        if "field" in raw:
            raise _fail(provider, f"{where}.field", "goes with 'listing' only")
        return ForEach(target=target, setting=setting, record_field=record_field)
    if not isinstance(listing, str) or not listing:
        raise _fail(provider, f"{where}.listing", "must name a data type of this provider")
    field = raw.get("field", "id")
    if not isinstance(field, str) or not field or any(not step for step in field.split(".")):
        raise _fail(provider, f"{where}.field", "must be a dotted path like 'id'")
    return ForEach(target=target, listing=listing, field=field, record_field=record_field)


class FanOutRestProvider:
    """A ``Provider`` made of one ``RestProvider`` per data type, some of them repeated over a list.

    Subclasses name their ``type`` and may refine how an answer is classified (``rest_class``).
    """

    type_name: ClassVar[str] = ""
    rest_class: ClassVar[type[RestProvider]] = RestProvider

    def __init__(self, name: str, parts: Mapping[str, RestProvider], for_each: Mapping[str, ForEach]) -> None:
        self.name = name
        self._parts = dict(parts)
        self._for_each = dict(for_each)
        self._types = {type_name: part.data_types()[type_name] for type_name, part in self._parts.items()}
        first = next(iter(self._parts.values()))
        self.token_client: TokenClient | None = first.token_client
        """Shared by every part (one auth object); ``None`` unless the auth kind is ``oauth2``."""

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> Self:
        """Validate a providers-file entry; ``ConfigurationError`` naming the provider and the key."""
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"provider {name!r}: must be a JSON object")
        if config.get("type") != cls.type_name:
            raise _fail(name, "type", f"must be {cls.type_name!r}")
        types_raw = config.get("data_types")
        if not isinstance(types_raw, Mapping) or not types_raw:
            raise _fail(name, "data_types", "must be a non-empty JSON object of data type name -> settings")
        shared = {key: value for key, value in config.items() if key not in ("type", "data_types")}
        parts: dict[str, RestProvider] = {}
        for_each: dict[str, ForEach] = {}
        shared_auth = None
        for type_name, raw in types_raw.items():
            if not isinstance(raw, Mapping):
                raise _fail(name, f"data_types.{type_name}", "must be a JSON object")
            own = dict(raw)
            entry: dict[str, Any] = {**shared, "type": "rest"}
            for key in PER_TYPE_KEYS:
                if key in own:
                    entry[key] = own.pop(key)
            each_raw = own.pop("for_each", None)
            entry["data_types"] = {type_name: own}
            try:
                part = cls.rest_class.from_config(name, entry)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{exc} (in data type {type_name!r})") from None
            if parts:
                # One auth object for every part: a clock offset or token client learned once serves all.
                part = cls.rest_class(name, dataclasses.replace(part.config, auth=shared_auth))
            else:
                shared_auth = part.config.auth
            parts[type_name] = part
            if each_raw is not None:
                for_each[type_name] = _parse_for_each(name, type_name, each_raw, part)
        for type_name, each in for_each.items():
            if each.listing is None:
                continue
            where = f"data_types.{type_name}.for_each.listing"
            if each.listing not in parts:
                raise _fail(name, where, f"names {each.listing!r}, which is not a data type of this provider")
            if each.listing in for_each:
                raise _fail(name, where, f"names {each.listing!r}, which is itself repeated (for_each)")
            if parts[each.listing].config.pagination is not None:
                raise _fail(name, where, f"names {each.listing!r}, which pages: a listing must be one call")
        return cls(name, parts, for_each)

    # -- Provider protocol

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return self._types

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        if not isinstance(settings, Mapping):
            raise ValidationError("settings must be a JSON object")
        for type_name, part in self._parts.items():
            each = self._for_each.get(type_name)
            if each is None:
                part.validate_connection(credentials, settings)
                continue
            if each.setting is not None and fan_out_values(settings.get(each.setting)) is None:
                raise ValidationError(
                    f"provider {self.name!r} needs setting {each.setting!r}: a list of 1 to {MAX_FAN_OUT_VALUES} "
                    "values made of letters, digits, '.', '_' and '-' (e.g. [\"BTCUSDT\", \"ETHUSDT\"])"
                )
            # The fanned-out field is filled per call; everything else the part needs must be there.
            part.validate_connection(credentials, {**settings, each.target: "placeholder"})

    def fetch_page(self, request: FetchRequest) -> Page:
        part = self._parts.get(request.data_type)
        if part is None:
            raise ProviderError(f"provider {self.name!r} has no data type {request.data_type!r}", retryable=False)
        each = self._for_each.get(request.data_type)
        if each is None:
            return part.fetch_page(request)
        where = f"provider {self.name!r} data type {request.data_type!r}"
        if request.page_token is not None:
            position = FanOutPosition.decode(request.page_token, where)
        elif each.listing is not None:
            return self._list_values(request, each, where)
        else:
            values = fan_out_values(request.settings.get(each.setting or ""))
            if values is None:
                raise ProviderError(f"{where}: the connection's setting {each.setting!r} is unusable", retryable=False)
            position = FanOutPosition(values, 0)
        return self._fetch_value(request, part, each, position)

    def close(self) -> None:
        for part in self._parts.values():
            part.close()

    # -- fan-out

    def _list_values(self, request: FetchRequest, each: ForEach, where: str) -> Page:
        """The listing call: no records of this data type, only the values the following pages go through."""
        listing = each.listing or ""
        page = self._parts[listing].fetch_page(
            dataclasses.replace(request, data_type=listing, page_token=None, since=None)
        )
        values: list[str] = []
        skipped = list(page.skipped)
        for index, record in enumerate(page.records):
            if record.deleted:
                continue
            value = scalar_text(dig(record.data, each.field))
            if value is None or not _VALUE.fullmatch(value):
                skipped.append(
                    SkippedRecord("missing_id", detail=f"{listing} record #{index} has no usable {each.field!r}")
                )
            elif value not in values:
                values.append(value)
        if len(values) > MAX_FAN_OUT_VALUES:
            raise ProviderError(
                f"{where}: {len(values)} {listing} to go through, more than {MAX_FAN_OUT_VALUES}", retryable=False
            )
        token = FanOutPosition(tuple(values), 0).encode() if values else None
        return Page(records=[], next_page_token=token, skipped=skipped, response_headers=page.response_headers)

    def _fetch_value(self, request: FetchRequest, part: RestProvider, each: ForEach, position: FanOutPosition) -> Page:
        value = position.values[position.index]
        page = part.fetch_page(
            dataclasses.replace(
                request, settings={**request.settings, each.target: value}, page_token=position.inner_token
            )
        )
        records = [self._tagged(record, value, each) for record in page.records]
        if page.next_page_token is not None:
            following: FanOutPosition | None = FanOutPosition(position.values, position.index, page.next_page_token)
        elif position.index + 1 < len(position.values):
            following = FanOutPosition(position.values, position.index + 1)
        else:
            following = None
        return Page(
            records=records,
            next_page_token=following.encode() if following is not None else None,
            skipped=page.skipped,
            response_headers=page.response_headers,
        )

    @staticmethod
    def _tagged(record: UpstreamRecord, value: str, each: ForEach) -> UpstreamRecord:
        data = record.data
        if each.record_field is not None:
            data = {**data, each.record_field: value}
        return dataclasses.replace(record, record_id=f"{value}:{record.record_id}", data=data)


class SnapTradeRest(RestProvider):
    """SnapTrade's answers classified: a 425 means "still populating", so it is retried like a 5xx."""

    def _error_for(self, answer: HttpAnswer, where: str, now: float) -> ProviderError | None:
        if answer.status == SNAPTRADE_POPULATING:
            error = ProviderError(
                f"{where}: HTTP 425, the brokerage data is still being populated",
                retryable=True,
                status_code=answer.status,
                retry_after_seconds=self._provider_wait(answer, now),
            )
            return self._with_headers(error, answer)
        return super()._error_for(answer, where, now)


class SnapTradeProvider(FanOutRestProvider):
    """``type: "snaptrade"``: accounts, and per account holdings, balances and transactions."""

    type_name = "snaptrade"
    rest_class = SnapTradeRest
