"""Stop requests: SIGTERM/SIGINT set one process-wide flag; the processes of a run agree on it through
Accelerate's trigger, and the stage that sees it raises :class:`StopRequested` after its checkpoint.

Kept free of heavy imports so the CLI can install the handlers before torch loads.
"""

from __future__ import annotations

import logging
import signal
import threading

__all__ = ["STOP", "StopRequested", "install_signal_handlers", "stop_agreed", "any_process"]

STOP = threading.Event()


class StopRequested(Exception):
    """Raised inside a stage after SIGTERM/SIGINT, once the final checkpoint is written; raised by an
    evaluation between its sampling or feature batches (no FID or metric of the interrupted evaluation
    is recorded: the stage checkpoints and stops, a final evaluation restarts from scratch on resume)."""


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGINT request a stop: the running stage checkpoints after its current step and the
    run ends ``stopped``. A signal that arrives before training starts stops at the first step."""

    def handler(signum, frame):
        STOP.set()
        logging.getLogger("rsd_engine").warning("signal %s received: stopping after this step", signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def stop_agreed(accelerator) -> bool:
    """Whether any process of the run received SIGTERM/SIGINT, the same answer on every process
    (:func:`any_process` of the stop flag; a collective)."""
    return any_process(accelerator, STOP.is_set())


def any_process(accelerator, flag: bool) -> bool:
    """Whether ``flag`` is true on any process of the run, the same answer on every process.

    A process whose flag is true sets Accelerate's trigger (``set_trigger``); ``check_trigger``
    all-reduces the triggers. Every process must call this at the same points (a collective).
    """
    if flag:
        accelerator.set_trigger()
    return bool(accelerator.check_trigger())
