"""``chalice local`` with a listen backlog that holds a burst of clients: ``python -m local.chalice_local ARGS``.

chalice's server keeps ``HTTPServer``'s backlog of 5 connections. A burst of a hundred clients then
overflows it, and the kernel drops their SYNs: each dropped client retries 1 s, 3 s, 7 s later, so
answers arrive seconds late however fast the service is. API Gateway has no such queue; with this
backlog the local run does not invent one either. Everything else is the ``chalice`` command itself.
"""

from __future__ import annotations

import sys

LISTEN_BACKLOG = 128
"""werkzeug's (and so moto's) own listen queue; the kernel caps it at ``net.core.somaxconn``."""


def main(argv: list[str]) -> int:
    from chalice import local as chalice_local
    from chalice.cli import cli

    chalice_local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    # With --autoreload chalice re-runs sys.argv as the server process: this module again, not bare chalice.
    sys.argv = [sys.executable, "-m", "local.chalice_local", *argv]
    result: object = cli.main(args=argv, prog_name="chalice", obj={})
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
