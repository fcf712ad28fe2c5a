"""The moto speed-ups, shared with the local runner: they live in ``local/moto_speed.py``."""

from __future__ import annotations

from local.moto_speed import (
    apply_all,
    make_moto_partition_queries_cheap,
    make_moto_sqs_cheap,
    make_moto_transactions_item_scoped,
)

__all__ = [
    "apply_all",
    "make_moto_partition_queries_cheap",
    "make_moto_sqs_cheap",
    "make_moto_transactions_item_scoped",
]
