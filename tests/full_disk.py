"""A disk that fills up under one folder, for the full-disk test (tests/test_edges.py).

Not a test module: ``python tests/full_disk.py FOLDER AFTER -- rsd-engine arguments`` runs the engine
in a process where, once ``AFTER`` files under FOLDER have been synced, every later write under FOLDER
fails as on a full disk (``OSError(ENOSPC)``): ``os.fsync`` (the atomic writes of status.json,
checkpoints and grids), ``open`` for writing or appending (events.jsonl, log lines) and the open
log file's writes. Portable and independent of the user (root included): no mount is needed.
"""

from __future__ import annotations

import builtins
import errno
import io
import logging
import os
import sys
from pathlib import Path


def install(folder: Path, after: int) -> None:
    """Patch the process so that writes under ``folder`` fail with ENOSPC after ``after`` fsyncs there."""
    folder = Path(folder).resolve()
    state = {"synced": 0}
    real_fsync, real_open = os.fsync, builtins.open

    def under(path) -> bool:
        try:
            return Path(os.path.abspath(path)).is_relative_to(folder)
        except TypeError:
            return False

    def full() -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fill_logs() -> None:
        for handler in logging.getLogger("rsd_engine").handlers:
            if isinstance(handler, logging.FileHandler) and under(handler.baseFilename) and handler.stream is not None:
                handler.stream = _FullStream()

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if under(path):
            if state["synced"] >= after:
                fill_logs()
                raise full()
            state["synced"] += 1
        return real_fsync(fd)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and under(file) and state["synced"] >= after:
            fill_logs()
            raise full()
        return real_open(file, mode, *args, **kwargs)

    os.fsync = fsync
    builtins.open = open_
    io.open = open_


class _FullStream(io.StringIO):
    """A log stream on a full disk."""

    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


if __name__ == "__main__":
    install(Path(sys.argv[1]), int(sys.argv[2]))
    from rsd_engine.cli import main

    sys.exit(main(sys.argv[4:]))
