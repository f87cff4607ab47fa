"""Stop requests: SIGTERM/SIGINT set one process-wide flag that the training loop polls (CASES.md 18).

Kept free of heavy imports so the CLI can install the handlers before torch loads.
"""

from __future__ import annotations

import logging
import signal
import threading

__all__ = ["STOP", "install_signal_handlers"]

STOP = threading.Event()


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGINT request a stop: the running stage checkpoints after its current step and the
    run ends ``stopped``. A signal that arrives before training starts stops at the first step."""

    def handler(signum, frame):
        STOP.set()
        logging.getLogger("rsd_engine").warning("signal %s received: stopping after this step", signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
