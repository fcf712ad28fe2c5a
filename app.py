"""Chalice entry point: glue only. Domain logic lives in chalicelib/."""

from __future__ import annotations

import logging
from typing import Any

from chalice.app import Chalice, CloudWatchEvent, Rate, SQSEvent

from chalicelib.api.events import handle_sqs_batch, handle_tick
from chalicelib.api.operator_routes import operator_api
from chalicelib.api.routes import api
from chalicelib.api.webhook_routes import webhook_api
from chalicelib.domain.planner import TICK_INTERVAL_MINUTES

app = Chalice(app_name="smart-sync")
app.log.setLevel(logging.INFO)
logging.getLogger("chalicelib").setLevel(logging.INFO)
app.register_blueprint(api)
app.register_blueprint(operator_api)
app.register_blueprint(webhook_api)

JOB_QUEUE_NAME = "smart-sync-jobs"


@app.on_sqs_message(queue=JOB_QUEUE_NAME, batch_size=10)
def sync_worker(event: SQSEvent) -> dict[str, Any]:
    return handle_sqs_batch(event.to_dict(), event.context)


@app.schedule(Rate(TICK_INTERVAL_MINUTES, unit=Rate.MINUTES))
def sync_schedule(event: CloudWatchEvent) -> dict[str, Any]:
    return handle_tick()
