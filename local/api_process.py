"""The API: ``chalice local`` as a child process in its own process group, its output relayed line by line."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from local.console import say
from local.environment import HOST, PROJECT_DIR

# INFO lines from botocore (every client) and pynamodb (import) that say nothing about the local run.
_NOISE = (
    "Found credentials in environment variables.",
    "Override settings for pynamo not available",
    "Using Default settings value",
)


def chalice_command(port: int, stage: str, autoreload: bool) -> list[str]:
    """``chalice local`` through ``local/chalice_local.py`` (the same command, with a listen backlog for bursts)."""
    if importlib.util.find_spec("chalice") is None:
        raise SystemExit("chalice is not installed in this virtualenv (make run installs it)")
    command = [sys.executable, "-m", "local.chalice_local", "--project-dir", str(PROJECT_DIR), "local"]
    command += ["--host", HOST, "--port", str(port), "--stage", stage]
    command += ["--autoreload" if autoreload else "--no-autoreload"]
    return command


def _relay(stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if line and not line.startswith(_NOISE):
            say(f"api:    {line}")


def start_chalice(port: int, stage: str, autoreload: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CHALICE_WORKER", None)
    # Its own process group: Ctrl-C reaches only this runner, which then stops the whole group
    # (with --autoreload, chalice local is a watcher process plus a server process).
    process = subprocess.Popen(
        chalice_command(port, stage, autoreload),
        cwd=PROJECT_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=os.name == "posix",
    )
    assert process.stdout is not None
    threading.Thread(target=_relay, args=(process.stdout,), name="api-output", daemon=True).start()
    return process


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole group at once (the second Ctrl-C)."""
    if process.poll() is None and os.name == "posix":
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return

    def send(sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
        process.wait(timeout)


def wait_for_health(base_url: str, process: subprocess.Popen[bytes], timeout: float, stop: threading.Event) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None or stop.is_set():
            return False
        try:
            if requests.get(f"{base_url}/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False
