"""What the runner prints: one write per line, its log levels, and the banner with the tokens and curl lines."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from local.environment import DEMO_USER

SCHEDULE_FUNCTION = "sync_schedule"

_OUTPUT_LOCK = threading.Lock()


def say(text: str) -> None:
    """One write per message, so the API's relayed output never splits a line (or the banner)."""
    with _OUTPUT_LOCK:
        try:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # stdout closed (`make run | head`): keep draining the API's output
            pass


class _SayHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            # In this process everything but the runner's own lines (local.*) is the worker Lambda's code logging.
            prefix = "" if record.name == "local" or record.name.startswith("local.") else "worker: "
            say(prefix + self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(verbose: bool) -> None:
    """The runner's lines at INFO; the app's own INFO lines (one per sync step) only with --verbose.

    Call again after importing ``app``, which sets its loggers to INFO for Lambda.
    """
    if not logging.getLogger().handlers:
        handler = _SayHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("local").setLevel(logging.INFO)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    for name in ("chalicelib", "smart-sync"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def demo_tiers(settings: Any) -> str:
    """The recovery tiers as the app will apply them (providers file + SMART_SYNC_POLICY_OVERRIDES)."""
    from chalicelib.providers import load_registry
    from chalicelib.providers.policies import PolicyResolver

    policy = PolicyResolver(load_registry(settings), settings).policy("demo", "recovery")
    return f"fresh < {policy.cooldown_seconds}s, stale < {policy.max_staleness_seconds}s, expired after"


def banner(
    base_url: str,
    aws_endpoint: str,
    user_token: str,
    operator_token: str,
    tiers: str,
    tick_seconds: float,
    first_tick_seconds: float,
) -> str:
    auth = '-H "Authorization: Bearer {}"'
    data = f"{base_url}/users/{DEMO_USER}/connections/demo/data/recovery"
    return "\n".join(
        [
            f"Demo user token ({DEMO_USER}, valid 7 days):",
            user_token,
            "Operator token (valid 7 days):",
            operator_token,
            "",
            f"Read ({tiers}):",
            f"  curl -s {auth.format(user_token)} {data}",
            "Sync status:",
            f"  curl -s {auth.format(user_token)} {base_url}/users/{DEMO_USER}/sync-status",
            "Force refresh:",
            f"  curl -s {auth.format(user_token)} '{data}?force_refresh=true'",
            "Schedule status (operator):",
            f"  curl -s {auth.format(operator_token)} {base_url}/sync/status",
            "Fan out now (operator):",
            f"  curl -s -X POST {auth.format(operator_token)} {base_url}/sync/run",
            "",
            f"API {base_url} (chalice local) | AWS {aws_endpoint} (moto) | worker: in this process",
            f"Schedule: {SCHEDULE_FUNCTION} every {tick_seconds:g}s in this process, first tick in "
            f"{min(first_tick_seconds, tick_seconds):g}s",
            "Ctrl-C stops everything.",
        ]
    )
