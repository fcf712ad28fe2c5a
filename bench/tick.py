"""5. One tick over 10,000 due datasets (``python -m bench.run --only tick``). A script's part, not a test.

Every AWS API call the schedule's tick makes (DynamoDB and SQS), per dataset (target at most 0.15),
and its wall time; in-process against moto (``mock_aws``) with the real ``SystemClock``.
"""

from __future__ import annotations

from chalicelib.store.convert import new_state_item
from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.calls import AWS_CALLS  # noqa: E402
from bench.harness import fresh_aws, queue_depth, tick_quota  # noqa: E402
from bench.report import Table, ops_text  # noqa: E402
from chalicelib.container import build_container, set_container  # noqa: E402
from chalicelib.domain.clock import SystemClock  # noqa: E402
from chalicelib.domain.config import DEFAULT_PROVIDERS_FILE, Settings  # noqa: E402
from chalicelib.domain.model import DatasetKey  # noqa: E402
from chalicelib.providers import DEFAULT_LIMITS, ProviderRegistry, parse_limits, registry_from_config  # noqa: E402
from chalicelib.store.items import DatasetItem, create_tables  # noqa: E402

TICK_DATASETS = 10_000
TICK_DATA_TYPE = "recovery"
TICK_LIMITS = {"requests_per_second": 1000, "burst": 1000}


def demo_provider_config() -> dict[str, Any]:
    """The demo provider as chalicelib/providers.json defines it, with limits generous enough for one tick."""
    config = json.loads(Path(DEFAULT_PROVIDERS_FILE).read_text())["demo"]
    policy = config["policies"][TICK_DATA_TYPE]
    if policy.get("schedule_every_seconds") is None:
        raise RuntimeError(f"demo/{TICK_DATA_TYPE} is on demand only: the tick would skip it")
    return {**config, "limits": dict(TICK_LIMITS)}


def seed_due_datasets(count: int, now: float) -> None:
    """State items only (the tick never reads connections), due a minute ago, spread over the shards."""
    with DatasetItem.batch_write() as batch:
        for index in range(count):
            key = DatasetKey(f"user-{index:05d}", "demo", TICK_DATA_TYPE)
            batch.save(new_state_item(key, "demo", now - 60 - index * 0.001))


def bench_tick(base_settings: Settings, results: dict[str, Any], *, datasets: int = TICK_DATASETS) -> Table:
    AWS_CALLS.install()
    rps = float(TICK_LIMITS["requests_per_second"])
    table = Table(
        f"5. One tick over {datasets} due datasets (demo/{TICK_DATA_TYPE}, scheduled), every AWS API call counted"
    )
    with fresh_aws() as (sqs, queue_url):
        registry: ProviderRegistry = registry_from_config({"demo": demo_provider_config()})
        container = build_container(base_settings, clock=SystemClock(), registry=registry)
        create_tables()
        set_container(container)
        seeded = time.perf_counter()
        seed_due_datasets(datasets, time.time())
        seed_seconds = time.perf_counter() - seeded
        with AWS_CALLS.measure() as calls:
            started = time.perf_counter()
            summary = container.fanout.tick()
            wall = time.perf_counter() - started
        messages = queue_depth(sqs, queue_url)["visible"]
    total = calls.total
    per_dataset = total / datasets
    quota = tick_quota(base_settings, parse_limits("demo", TICK_LIMITS))
    table.add("seeding the state items (BatchWriteItem, not measured) (s)", f"{seed_seconds:.1f}")
    table.add(
        "provider limits for this benchmark",
        f"demo: requests_per_second={rps:g}, burst={TICK_LIMITS['burst']} -> tick quota {quota} jobs",
        f">= {datasets}",
    )
    table.add(
        "  (with the default limits)",
        f"{DEFAULT_LIMITS.windows[0].describe()} -> quota "
        f"{tick_quota(base_settings, DEFAULT_LIMITS)} jobs per tick per provider",
    )
    table.add("tick: due / queued / skipped", f"{summary['due']} / {summary['queued']} / {summary['skipped'] or '-'}")
    table.add("jobs queued (messages on the queue)", messages, str(datasets))
    table.add("AWS API calls in the tick", total)
    table.add("AWS API calls per dataset", f"{per_dataset:.4f}", "<= 0.15")
    table.add("  by operation", ops_text(calls.counts))
    table.add("tick wall time (s)", f"{wall:.2f}")
    table.add("  time inside AWS calls, summed over the tick's threads", calls.seconds_text())
    table.add("  tick's own duration_seconds", summary.get("duration_seconds"))
    results["tick"] = {
        "datasets": datasets,
        "limits": dict(TICK_LIMITS),
        "quota": quota,
        "due": summary["due"],
        "queued": summary["queued"],
        "skipped": summary["skipped"],
        "messages_on_queue": messages,
        "aws_calls": dict(calls.counts),
        "aws_call_seconds": {k: round(v, 3) for k, v in calls.seconds.items()},
        "aws_calls_total": total,
        "aws_calls_per_dataset": round(per_dataset, 5),
        "wall_seconds": round(wall, 3),
        "seed_seconds": round(seed_seconds, 2),
    }
    return table
