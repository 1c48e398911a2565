"""``python -m serving.gateway``: the gateway process ``flywheel up`` starts.

All configuration comes from ``FLYWHEEL_*`` settings (the stack passes them in the environment,
so secrets never appear in ``ps``); the admin token must be set. With ``FLYWHEEL_GATEWAY_WORKERS``
above 1 this process starts that many workers on its ports (``serving.gateway.workers``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from flywheel.settings import FlywheelSettings
from serving.gateway.workers import run_workers


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m serving.gateway", description=__doc__)
    parser.add_argument(
        "--worker", type=int, metavar="INDEX", help="run as worker INDEX of a replica (its parent sets this)"
    )
    arguments = parser.parse_args()
    settings = FlywheelSettings()
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        print(
            "gateway: FLYWHEEL_ADMIN_TOKEN is not set; refusing to start an unprotected admin API",
            file=sys.stderr,
        )
        return 2
    # uvloop: the gateway's CPU per request is mostly event-loop and socket work (profiled).
    # With an Airflow password the retrain bridge (/admin/alerts) is on; without one it is absent.
    password = settings.airflow_password.get_secret_value() if settings.airflow_password else None
    if arguments.worker is None and settings.gateway_workers > 1:
        # The parent imports no more than this: numpy and pyarrow would start threads, and a
        # thread with the signals unblocked would take the SIGTERM or SIGCHLD it waits for.
        return run_workers(settings)
    import uvloop

    from serving.gateway.app import serve

    worker = arguments.worker is not None
    uvloop.run(serve(settings, settings.admin_token.get_secret_value(), password or None, share_ports=worker))
    return 0


if __name__ == "__main__":
    sys.exit(main())
