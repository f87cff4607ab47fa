"""Processes of a run: whether one is alive, and how many a run was asked to use against how many
the engine sees.

Liveness (:func:`process_alive`) is the one test the engine and the workbench share, so both read a
run whose status says ``running`` but whose process has ended as failed
(:func:`rsd_engine.io.runs.run_state`).

``accelerate launch --cpu --num_processes 2`` (any launch without ``--multi_gpu``) runs the script
once: Accelerate's simple launcher starts a single process and, for N > 1, only sets ``MASTER_ADDR``
and ``MASTER_PORT``, without ``WORLD_SIZE``. Several processes on one machine need
``--multi_gpu`` (torchrun, which sets ``WORLD_SIZE``; on a machine without GPUs they run on the CPU
over gloo). The engine reads what was asked for from the launcher and the preset and warns when it
sees fewer processes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["requested_processes", "process_shortfall", "parent_command_line", "process_alive", "proc_stat"]

_NUM_FLAGS = ("--num_processes", "--num-processes")


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3… of ``/proc/<pid>/stat`` (the state letter first, the process group third), or ``None``
    where there is no such process or no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running: it exists (or exists and belongs to another
    user) and is not a zombie. ``False`` for pids ≤ 0."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = proc_stat(pid)
    return stat is None or stat[0] != "Z"


def parent_command_line() -> list[str]:
    """Arguments of this process's parent (Linux ``/proc``); ``[]`` where they cannot be read."""
    try:
        content = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in content.split(b"\0") if part]


def _launcher_num_processes(argv: list[str]) -> int | None:
    """N of ``--num_processes N`` (or ``=N``) when ``argv`` is an ``accelerate launch`` command, else ``None``."""
    launch = any(a.endswith("accelerate.commands.launch") for a in argv) or (
        "launch" in argv and any(Path(a).name == "accelerate" for a in argv)
    )
    if not launch:
        return None
    for i, arg in enumerate(argv):
        if arg in _NUM_FLAGS and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.split("=", 1)[0] in _NUM_FLAGS:
            value = arg.split("=", 1)[-1]
        else:
            continue
        if value.isdigit():
            return int(value)
    return None


def requested_processes(environ: Mapping[str, str], parent_argv: list[str]) -> tuple[int, str] | None:
    """How many processes the launcher asked for, and how it said so.

    Sources, the largest wins: ``WORLD_SIZE`` (torchrun, ``accelerate launch --multi_gpu``);
    ``--num_processes N`` on the parent's command line when the parent is ``accelerate launch``;
    at least 2 when ``MASTER_ADDR`` is set without ``WORLD_SIZE`` under ``ACCELERATE_USE_CPU`` (what
    the simple launcher does for N > 1).

    Args:
        environ: the process environment (``os.environ``).
        parent_argv: the parent's arguments (:func:`parent_command_line`).

    Returns:
        (N, source) or ``None`` when no launcher said anything.
    """
    found: list[tuple[int, str]] = []
    world = environ.get("WORLD_SIZE", "")
    if world.isdigit():
        found.append((int(world), "WORLD_SIZE"))
    launched = _launcher_num_processes(parent_argv)
    if launched is not None:
        found.append((launched, f"accelerate launch --num_processes {launched}"))
    if not world and "MASTER_ADDR" in environ and "ACCELERATE_USE_CPU" in environ:
        found.append((2, "accelerate launch set MASTER_ADDR for several processes"))
    return max(found, key=lambda f: f[0]) if found else None


def process_shortfall(seen: int, preset_processes: int, environ: Mapping[str, str], parent_argv: list[str]) -> str | None:
    """The warning for a run that sees fewer processes than were asked for, else ``None``.

    Args:
        seen: processes of the run (``accelerator.num_processes``).
        preset_processes: ``accelerate.num_processes`` of the preset.
        environ, parent_argv: as :func:`requested_processes`.

    Returns:
        one line naming what asked for how many, how many run, and the launch command that gives them.
    """
    asked = requested_processes(environ, parent_argv)
    if preset_processes > 1 and (asked is None or preset_processes > asked[0]):
        asked = (preset_processes, f"accelerate.num_processes = {preset_processes} in the preset")
    if asked is None or asked[0] <= seen:
        return None
    n, how = asked
    return (
        f"{n} processes were asked for ({how}) but this run has {seen}: accelerate launch without --multi_gpu starts one "
        f"process; use `accelerate launch --multi_gpu --num_processes {n} -m rsd_engine run …` "
        "(on a machine without GPUs the processes run on the CPU over gloo)"
    )
