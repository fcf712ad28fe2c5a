"""One-command local run: ``python -m local.run`` (``make run``). No AWS account, no network.

What it starts, all bound to 127.0.0.1:

- an in-process moto server (DynamoDB + SQS + KMS) on ``--aws-port`` (5005, or any free port if 5005 is taken),
  with the tables, the ``smart-sync-jobs`` queue, the credentials key (``alias/smart-sync``) and a demo user;
- ``chalice local --stage dev`` on ``--port`` (8000) as a child process, pointed at that moto server;
- the worker: ``--workers`` threads (10) that long-poll the queue and call ``app.sync_worker`` with a
  Lambda-shaped SQS event, exactly the handler the cloud invokes, each one batch at a time like concurrent
  Lambdas, and acknowledge what it did not report as failed;
- the schedule: what the EventBridge rule does. A thread that calls ``app.sync_schedule`` with a
  scheduled-event-shaped dict, exactly the handler the cloud invokes, 2 s after the banner and then every
  ``TICK_INTERVAL_SECONDS`` (``--tick-seconds`` to watch it faster); one ``tick:`` line per tick.

Ctrl-C or SIGTERM stops everything. ``--smoke`` starts everything, checks it end to end, stops and exits
0 (or 1 on failure): the quick way to prove ``make run`` works on a machine.

The parts: ``local/environment.py`` (addresses, variables), ``local/aws.py`` (moto and the demo data),
``local/emulator.py`` (SQS and the schedule calling the Lambda handlers, shared with ``bench/``),
``local/api_process.py`` (chalice local), ``local/service.py`` (start and stop in order),
``local/console.py`` (output and banner), ``local/smoke.py`` (``--smoke``).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from types import FrameType

from local.console import banner, configure_logging, demo_tiers, say
from local.emulator import FIRST_TICK_DELAY_SECONDS
from local.environment import DEFAULT_API_PORT, DEFAULT_STAGE, PROJECT_DIR, port_is_free, prepare_environment
from local.service import WORKER_CONCURRENCY, LocalService, Options
from local.smoke import smoke_check


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.run", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_API_PORT, help="API port (default 8000)")
    parser.add_argument("--aws-port", type=int, default=None, help="moto port (default 5005, else any free port)")
    parser.add_argument("--stage", default=DEFAULT_STAGE, help="chalice stage (default dev)")
    parser.add_argument("--smoke", action="store_true", help="start, check end to end, stop; exit 0 on success")
    parser.add_argument("--autoreload", action="store_true", help="restart the API on file changes (not the worker)")
    parser.add_argument(
        "--provider-policies",
        action="store_true",
        help="keep the providers' own cooldown/staleness instead of the short demo tiers",
    )
    parser.add_argument(
        "--tick-seconds",
        type=_positive_seconds,
        default=None,
        help="fire the schedule every N seconds (default: TICK_INTERVAL_SECONDS, the deployed rate)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_count,
        default=WORKER_CONCURRENCY,
        help=f"worker batches run at once, like concurrent Lambdas (default {WORKER_CONCURRENCY})",
    )
    parser.add_argument("--verbose", action="store_true", help="also show the app's own INFO logs from the worker")
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds above 0")
    return value


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1 to 100")
    return value


def install_signal_handlers(service: LocalService) -> None:
    """The first Ctrl-C (or SIGTERM) stops everything in order; a second one exits at once."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        service.stop.set()
        if len(received) > 1:  # do not wait for anything
            service.kill_api()
            os._exit(1)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def serve(service: LocalService, smoke: bool) -> int:
    """Start every part, print the banner; then the smoke check, or run until stopped. The exit code."""
    service.start_aws()
    service.start_worker()
    configure_logging(service.options.verbose)  # again: importing app set its loggers to INFO
    if not service.start_api():
        return 0 if service.stop.is_set() else 1
    user_token, operator_token = service.tokens()
    tiers = demo_tiers(service.settings)
    text = banner(
        service.base_url,
        service.endpoint,
        user_token,
        operator_token,
        tiers,
        service.tick_seconds,
        FIRST_TICK_DELAY_SECONDS,
    )
    say("\n" + text + "\n")
    assert service.worker is not None and service.ticker is not None
    if smoke:
        try:
            passed = smoke_check(
                service.base_url, user_token, operator_token, service.worker, service.ticker, service.start_schedule
            )
        except OSError as exc:  # requests' errors are OSErrors: the API did not answer
            say(f"smoke: request failed: {exc}")
            passed = False
        say(f"smoke: {'OK' if passed else 'FAILED'}")
        return 0 if passed else 1
    service.start_schedule()  # after the banner, so the first tick's line follows it
    while not service.stop.wait(0.5):
        if service.api_exited():
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    if not port_is_free(args.port):
        print(f"port {args.port} is already in use (another `make run`?); pick another with --port", file=sys.stderr)
        return 1
    # Everything below reads os.environ; nothing from chalicelib or app is imported before it is final.
    prepare_environment(args.stage, demo_policies=not args.provider_policies)
    # The local run serves the demo provider (its demo user's connections use it) unless the stage turns it off.
    os.environ.setdefault("SMART_SYNC_DEMO_PROVIDER", "enabled")
    options = Options(
        port=args.port,
        aws_port=args.aws_port,
        stage=args.stage,
        autoreload=args.autoreload,
        tick_seconds=args.tick_seconds,
        workers=args.workers,
        verbose=args.verbose,
    )
    service = LocalService(options, threading.Event())
    install_signal_handlers(service)
    try:
        return serve(service, args.smoke)
    finally:
        service.close()


if __name__ == "__main__":
    raise SystemExit(main())
