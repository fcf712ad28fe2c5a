"""Pure rules for what the engine keeps of a page: record sizes and the incremental watermark.

- DynamoDB refuses an item over 400 KB and a sort key over 1 KB. One such record must not
  fail the whole dataset on every run: it is skipped with a named reason, counted in the
  run and shown in the read's metadata, and the rest of the page is kept.
- The incremental watermark must not run ahead of the pass. A record edited upstream while
  a pass runs may carry a stamp older than the newest one the pass saw; starting the next
  pass at that newest stamp would miss it until the daily full pass. The watermark is
  therefore capped at the pass's start minus a lookback window (records seen twice are
  simply "unchanged").
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

from chalicelib.domain.upstream import SkippedRecord, UpstreamRecord

MAX_RECORD_ID_BYTES = 512
"""Well under DynamoDB's 1 KB sort key, which also holds the ``r#`` prefix."""
MAX_RECORD_JSON_BYTES = 350_000
"""DynamoDB's item limit is 400 KB, and the item also holds the keys, hash and stamps."""
_SHOWN_ID_CHARS = 64


def shown_id(record_id: str | None) -> str:
    """An id as it may appear in run records and messages: cut short."""
    if record_id is None:
        return "(no id)"
    return record_id if len(record_id) <= _SHOWN_ID_CHARS else record_id[:_SHOWN_ID_CHARS] + "..."


def record_problem(record: UpstreamRecord) -> SkippedRecord | None:
    """Why the store cannot keep this record, or ``None`` when it can."""
    id_bytes = len(record.record_id.encode("utf-8"))
    if id_bytes > MAX_RECORD_ID_BYTES:
        return SkippedRecord(
            reason="id_too_long",
            record_id=shown_id(record.record_id),
            detail=f"id is {id_bytes} bytes (at most {MAX_RECORD_ID_BYTES})",
        )
    size = len(json.dumps(record.data, separators=(",", ":"), default=str).encode("utf-8"))
    if size > MAX_RECORD_JSON_BYTES:
        return SkippedRecord(
            reason="record_too_large",
            record_id=shown_id(record.record_id),
            detail=f"record is {size} bytes of JSON (at most {MAX_RECORD_JSON_BYTES})",
        )
    return None


def describe_skipped(skipped: SkippedRecord) -> str:
    return f"{skipped.reason}: {shown_id(skipped.record_id)}"


# --- the watermark ------------------------------------------------------------------

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_EPOCH_MS_ABOVE = 1e11
"""Numbers above this are epoch milliseconds (1e11 s is the year 5138)."""


def _as_epoch(stamp: str) -> tuple[float, str] | None:
    """The stamp as epoch seconds and its style (``iso``, ``ms``, ``s``); ``None`` if it is neither."""
    text = stamp.strip()
    if _ISO.match(text):
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp(), "iso"
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number > _EPOCH_MS_ABOVE:
        return number / 1000.0, "ms"
    return number, "s"


def _format(epoch: float, style: str) -> str:
    if style == "ms":
        return str(int(epoch * 1000))
    if style == "s":
        return str(int(epoch))
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def capped_watermark(
    newest_seen: str | None,
    previous: str | None,
    *,
    pass_started_at: float,
    lookback_seconds: float,
) -> str | None:
    """The watermark the next incremental pass starts from.

    The newest stamp the pass saw, but never later than ``pass_started_at - lookback_seconds``,
    written in the stamp's own style (ISO-8601, epoch seconds or epoch milliseconds). A stamp
    that is neither cannot be compared with a time and is kept as it is. It never moves
    back behind ``previous``, the watermark this pass started from.
    """
    if newest_seen is None:
        return previous
    parsed = _as_epoch(newest_seen)
    if parsed is None:
        return newest_seen
    seen_at, style = parsed
    cap = pass_started_at - lookback_seconds
    if seen_at <= cap:
        return newest_seen
    if previous is not None:
        before = _as_epoch(previous)
        if before is not None and before[0] >= cap:
            return previous
    return _format(cap, style)


def pass_started_at(generation: str, fallback: float) -> float:
    """When the pass began: its generation is the run id that started it (``new_run_id``: ms first)."""
    head = generation.split("-", 1)[0]
    return int(head) / 1000.0 if head.isdigit() else fallback
