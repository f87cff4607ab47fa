"""Stop requests: SIGTERM/SIGINT set one process-wide flag (:data:`STOP`), and :class:`StopPolicy`
says where the processes of a run look at it, which of those looks are collectives, and what each
does.

Kept free of heavy imports so the CLI can install the handlers before torch loads.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STOP", "StopRequested", "StopPolicy", "install_signal_handlers"]

STOP = threading.Event()


class StopRequested(Exception):
    """Raised inside a stage after SIGTERM/SIGINT, once the final checkpoint is written; raised by an
    evaluation between its sampling or feature batches (no FID or metric of the interrupted evaluation
    is recorded: the stage checkpoints and stops, a final evaluation restarts from scratch on resume).
    Where it is raised and re-raised: :class:`StopPolicy`."""


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGINT request a stop: the running stage checkpoints after its current step and the
    run ends ``stopped``. A signal that arrives before training starts stops at the first step."""

    def handler(signum, frame):
        STOP.set()
        logging.getLogger("rsd_engine").warning("signal %s received: stopping after this step", signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class StopPolicy:
    """Where the processes of a run check for a stop, whether the check is a collective, and what
    happens then: the one owner of the stop flag's meaning.

    A collective must be reached by every process at the same point, or the run hangs; a local check
    may differ between processes, so it only ever raises inside an :meth:`agree` block, which turns it
    into one decision for all.

    ===================================  ==================  ===========  ==========================================
    place                                check               collective?  what happens
    ===================================  ==================  ===========  ==========================================
    ``StageRunner.run``, once per step   :meth:`agreed` [1]  yes          checkpoint ``<stage>-latest``, no live
                                                                          evaluation, raise :class:`StopRequested`
    ``Evaluation.final``, before each    :meth:`agreed`      yes          raise; metrics.json is left as it was
    model
    sampling batches (``generate``),     :meth:`local`       no           raise on this process only, held by the
    feature batches (``metrics``)                                         enclosing :meth:`agree`
    end of an :meth:`agree` block [2]    :meth:`any_process` yes          every process raises together when any
                                                                          was interrupted or has its flag set
    ``StageRunner`` around the live      (catches it)        no           a stop at this step: checkpoint if not
    evaluation                                                            written yet, raise again
    ``rsd-engine run``                   (catches it)        no           status ``stopped``, a ``stopped`` event,
                                                                          exit code 130
    ===================================  ==================  ===========  ==========================================

    [1] through ``Experiment.stop_requested`` (a test may replace it). [2] after the sampling of
    ``ModelSampler.generate_across``, and around the main process's work (features, files) in
    ``Evaluation`` while the others wait.

    Args:
        accelerator: the run's ``Accelerator`` (its trigger carries the flags between processes).
        flag: this process's stop flag; default :data:`STOP`, which SIGTERM/SIGINT set.
    """

    def __init__(self, accelerator, flag: threading.Event = STOP):
        self.accelerator = accelerator
        self.flag = flag

    def local(self) -> bool:
        """Whether this process received SIGTERM/SIGINT. Not a collective: use it only inside an
        :meth:`agree` block (it is what the sampling and feature loops ask before each batch)."""
        return self.flag.is_set()

    def agreed(self) -> bool:
        """Whether any process of the run received SIGTERM/SIGINT, the same answer on every process
        (a collective)."""
        return self.any_process(self.local())

    def any_process(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process of the run, the same answer on every process.

        A process whose flag is true sets Accelerate's trigger (``set_trigger``); ``check_trigger``
        all-reduces the triggers. Every process must call this at the same points (a collective).
        """
        if flag:
            self.accelerator.set_trigger()
        return bool(self.accelerator.check_trigger())

    @contextmanager
    def agree(self) -> Iterator[None]:
        """Run the block, holding back a :class:`StopRequested` raised inside it on this process (a
        :meth:`local` check); at its end every process learns whether any of them was interrupted or
        has its flag set, and then all raise :class:`StopRequested` together (a collective, which also
        stands for ``wait_for_everyone``). Other exceptions pass through without the collective."""
        interrupted = False
        try:
            yield
        except StopRequested:
            interrupted = True
        if self.any_process(interrupted or self.local()):
            raise StopRequested()
