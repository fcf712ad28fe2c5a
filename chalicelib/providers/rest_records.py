"""A ``rest`` page's records: the JSON answer's list mapped to ``UpstreamRecord`` values.

Pure: the data type's ``id_field``, ``updated_at_field`` and ``deleted_field`` read each item;
an item that is not an object or has no usable id is set aside as a ``SkippedRecord``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.domain.upstream import SkippedRecord, UpstreamRecord
from chalicelib.providers.data_type_config import DataTypeConfig
from chalicelib.providers.json_path import MISSING, dig, scalar_text


def page_records(items: Sequence[Any], spec: DataTypeConfig) -> tuple[list[UpstreamRecord], list[SkippedRecord]]:
    """The page's usable records; the others are set aside, so one bad record never blocks the rest."""
    records: list[UpstreamRecord] = []
    skipped: list[SkippedRecord] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            skipped.append(SkippedRecord("not_an_object", detail=f"record #{index} is a JSON {type(item).__name__}"))
            continue
        record_id = scalar_text(dig(item, spec.id_field))
        if record_id is None:
            skipped.append(
                SkippedRecord("missing_id", detail=f"record #{index} has no usable id at id_field {spec.id_field!r}")
            )
            continue
        updated_at = scalar_text(dig(item, spec.updated_at_field)) if spec.updated_at_field else None
        deleted = False
        if spec.deleted_field:
            flag = dig(item, spec.deleted_field)
            deleted = flag is not MISSING and bool(flag)
        records.append(UpstreamRecord(record_id=record_id, data=item, updated_at=updated_at, deleted=deleted))
    return records, skipped
