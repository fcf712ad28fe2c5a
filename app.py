"""Chalice entry point: glue only. Domain logic lives in chalicelib/."""

from __future__ import annotations

import logging
from typing import Any

from chalice.app import Chalice, SQSEvent

from chalicelib.api.routes import api
from chalicelib.worker import handle_sqs_batch

app = Chalice(app_name="smart-sync")
app.log.setLevel(logging.INFO)
logging.getLogger("chalicelib").setLevel(logging.INFO)
app.register_blueprint(api)

JOB_QUEUE_NAME = "smart-sync-jobs"


@app.on_sqs_message(queue=JOB_QUEUE_NAME, batch_size=10)
def sync_worker(event: SQSEvent) -> dict[str, Any]:
    return handle_sqs_batch(list(event), event.context)
