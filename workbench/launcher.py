"""Run processes: launch, stop, resume and delete, each run in its own process group.

A run is started as ``python -m rsd_engine run PRESET --out RUN_DIR`` (one process) or
``accelerate launch --num_processes N [--mixed_precision M] -m rsd_engine run …`` (several), with
``start_new_session=True`` so the run and every process it spawns share one process group whose id
is the leader's pid. The run outlives the page and the workbench server: everything the page shows
comes from the run folder.

Beside the engine's own files the workbench keeps, in the run folder:

- ``workbench.json``  launch record: pid/pgid, the leader's start time (guards against pid reuse),
  the command, who asked for a stop, and the exit code once the workbench saw the process end;
- ``console.txt``     the processes' stdout and stderr (tracebacks of a crash before logging starts).

The preset handed to the engine is written to ``RUNS/.workbench/launch/<run>.toml``; the engine
freezes the effective preset into ``RUN/preset.toml`` itself.

Stop sends SIGTERM to the whole group (the engine writes a final checkpoint and sets state
"stopped"), waits ``grace_s`` seconds and then sends SIGKILL to whatever is left. When a process
ends without a final state in status.json, the workbench has the engine's run folder record one
(:meth:`rsd_engine.io.runs.RunDir.mark_ended`: ``stopped`` when a stop was asked for, ``failed``
otherwise) so the page never shows a dead run as running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rsd_engine.io.processes import proc_stat, process_alive
from rsd_engine.io.runs import FINAL_STATES, RunDir, atomic_write_json, read_json_object

from .names import BadName, check_name, inside

__all__ = ["Launcher", "LaunchError", "RECORD_NAME", "describe_exit"]

#: The launch record the workbench keeps in each run folder it started.
RECORD_NAME = "workbench.json"

_REPO_ROOT = Path(__file__).resolve().parent.parent


class LaunchError(RuntimeError):
    """A launch/stop/resume/delete was refused or failed; the message says why."""


def describe_exit(code: Any) -> str:
    """``"exit code 1"``, ``"killed by SIGKILL"`` (a negative code: the signal), or ``""`` when unknown."""
    if not isinstance(code, int) or isinstance(code, bool):
        return ""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Launcher:
    """Starts and stops runs under ``runs_dir``.

    Args:
        runs_dir: the runs folder (created if missing).
        engine_cmd: how to call the engine CLI; default ``[python, "-m", "rsd_engine"]``.
            Tests pass a fake engine here.
        grace_s: seconds between SIGTERM and SIGKILL on stop.
        poll_s: how often the watcher thread reaps finished processes.
    """

    def __init__(self, runs_dir: str | Path, engine_cmd: list[str] | None = None, grace_s: float = 60.0, poll_s: float = 0.5):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.engine_cmd = list(engine_cmd) if engine_cmd else [sys.executable, "-m", "rsd_engine"]
        self.uses_real_engine = engine_cmd is None
        self.grace_s = float(grace_s)
        self.poll_s = float(poll_s)
        self._procs: dict[str, subprocess.Popen] = {}
        self._stoppers: dict[str, threading.Thread] = {}
        self._lock = threading.RLock()
        self._finalizing = threading.Lock()  # one _finalize at a time: the watcher and page refreshes race
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="rsd-workbench-watcher", daemon=True)
        self._watcher.start()

    # -- paths ---------------------------------------------------------------------------------
    def run_dir(self, run: str) -> Path:
        """The folder of run ``run`` (checked name, inside the runs folder).

        Raises:
            BadName: not a plain name.
        """
        return inside(self.runs_dir, check_name(run, "run name"))

    def _existing_run(self, run: str) -> tuple[str, Path]:
        """(checked name, folder) of an existing run.

        Raises:
            BadName: not a plain name.
            LaunchError: no such run.
        """
        run = check_name(run, "run name")
        run_dir = self.run_dir(run)
        if not run_dir.is_dir():
            raise LaunchError(f"no run named {run!r}")
        return run, run_dir

    def _launch_preset_path(self, run: str) -> Path:
        folder = self.runs_dir / ".workbench" / "launch"
        folder.mkdir(parents=True, exist_ok=True)
        return inside(folder, f"{check_name(run, 'run name')}.toml")

    # -- commands ------------------------------------------------------------------------------
    def command(self, engine_args: list[str], num_processes: int = 1, mixed_precision: str = "no") -> list[str]:
        """The command line for ``rsd_engine <engine_args>`` with the preset's processes and precision.

        One process: ``engine_cmd + engine_args`` (the engine reads its precision from the preset).
        Several (real engine): ``python -m accelerate.commands.launch --multi_gpu --num_processes N
        --num_machines 1 --mixed_precision M --dynamo_backend no --main_process_port P -m rsd_engine …``.
        ``--multi_gpu`` is accelerate's switch for "several local processes"; on a machine without
        GPUs they run on the CPU over gloo (accelerate's ``--cpu`` would start only one). ``P`` is a
        free port, so that two runs can rendezvous side by side.
        """
        if num_processes > 1 and self.uses_real_engine:
            return [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_processes",
                str(num_processes),
                "--num_machines",
                "1",
                "--mixed_precision",
                mixed_precision or "no",
                "--dynamo_backend",
                "no",
                "--main_process_port",
                str(_free_port()),
                "-m",
                "rsd_engine",
                *engine_args,
            ]
        return [*self.engine_cmd, *engine_args]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("GRADIO_TEMP_DIR", None)
        path = env.get("PYTHONPATH", "")
        if str(_REPO_ROOT) not in path.split(os.pathsep):
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), path) if p)
        return env

    def _spawn(self, run: str, cmd: list[str], action: str) -> int:
        run_dir = self.run_dir(run)
        run_dir.mkdir(parents=True, exist_ok=True)
        console = open(run_dir / "console.txt", "ab")
        console.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} workbench {action}: {' '.join(cmd)}\n".encode())
        console.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env(),
                close_fds=True,
            )
        except OSError as e:
            raise LaunchError(f"could not start the engine ({cmd[0]}): {e}") from None
        finally:
            console.close()
        now = round(time.time(), 3)
        earlier = read_json_object(run_dir / RECORD_NAME)
        record = {
            "pid": proc.pid,
            "pgid": proc.pid,
            "start_ticks": _start_ticks(proc.pid),
            "command": cmd,
            "action": action,
            "launched": now,
            "first_launched": earlier.get("first_launched") or earlier.get("launched") or now,  # kept across resumes
            "stop_requested": False,
        }
        atomic_write_json(run_dir / RECORD_NAME, record)
        with self._lock:
            self._procs[run] = proc
        return proc.pid

    # -- actions -------------------------------------------------------------------------------
    def launch(self, preset_text: str, run: str, num_processes: int = 1, mixed_precision: str = "no") -> dict:
        """Start a new run named ``run`` from validated preset text.

        Returns:
            ``{"run", "pid", "command"}``.

        Raises:
            BadName: ``run`` is not a plain name.
            LaunchError: the run folder exists already, or the engine could not be started.
        """
        run = check_name(run, "run name")
        run_dir = self.run_dir(run)
        if run_dir.exists():
            raise LaunchError(f"a run named {run!r} exists already; choose another run name")
        preset_path = self._launch_preset_path(run)
        preset_path.write_text(preset_text, encoding="utf-8")
        run_dir.mkdir(parents=True)
        cmd = self.command(["run", str(preset_path), "--out", str(run_dir)], num_processes, mixed_precision)
        pid = self._spawn(run, cmd, "launch")
        return {"run": run, "pid": pid, "command": cmd}

    def resume(self, run: str, num_processes: int = 1, mixed_precision: str = "no") -> dict:
        """Resume a stopped or failed run from its latest checkpoints (``run --resume RUN_DIR``; the
        engine reads the frozen ``RUN_DIR/preset.toml``).

        Raises:
            BadName: not a plain name.
            LaunchError: no such run, the run is still running, it has no frozen preset, or no
                checkpoint to continue from (:meth:`rsd_engine.io.runs.RunDir.has_checkpoint`).
        """
        run, run_dir = self._existing_run(run)
        if self.is_alive(run):
            raise LaunchError(f"run {run!r} is still running; stop it before resuming")
        state = RunDir(run_dir).read_status().get("state")
        if state == "done":
            raise LaunchError(f"run {run!r} is done; nothing to resume")
        if not (run_dir / "preset.toml").is_file():
            raise LaunchError(f"run {run!r} has no preset.toml; it never started and cannot be resumed (launch it again)")
        if not RunDir(run_dir).has_checkpoint():
            raise LaunchError(
                f"run {run!r} has no checkpoint yet, so a resume would only start it over; launch its preset again "
                f"(the frozen copy is {run_dir / 'preset.toml'})"
            )
        cmd = self.command(["run", "--resume", str(run_dir)], num_processes, mixed_precision)
        pid = self._spawn(run, cmd, "resume")
        return {"run": run, "pid": pid, "command": cmd}

    def stop(self, run: str, wait_s: float = 0.0) -> str:
        """Stop run ``run``: SIGTERM to its process group, SIGKILL after ``grace_s``.

        Returns at once (or after at most ``wait_s`` seconds) with the state then known:
        ``"stopping"`` while the processes are still ending, else the final state.

        Raises:
            BadName: not a plain name.
            LaunchError: no such run, or it is not running.
        """
        run, run_dir = self._existing_run(run)
        if not self.is_alive(run):
            raise LaunchError(f"run {run!r} is not running (state: {self.state(run)})")
        record = read_json_object(run_dir / RECORD_NAME)
        if not record:
            raise LaunchError(f"run {run!r} was not started by a workbench; stop it where it was started (Ctrl-C)")
        record["stop_requested"] = True
        record["stop_requested_at"] = round(time.time(), 3)
        atomic_write_json(run_dir / RECORD_NAME, record)
        with self._lock:
            thread = self._stoppers.get(run)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._stop_group, args=(run, int(record["pgid"])), daemon=True)
                self._stoppers[run] = thread
                thread.start()
        thread.join(timeout=max(0.0, wait_s))
        return "stopping" if thread.is_alive() else self.state(run)

    def _stop_group(self, run: str, pgid: int) -> None:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and self.is_alive(run):
            time.sleep(0.1)
        if self.is_alive(run):
            _signal_group(pgid, signal.SIGKILL)
            end = time.monotonic() + 10
            while time.monotonic() < end and self.is_alive(run):
                time.sleep(0.05)
        self._finalize(run)

    def delete(self, run: str) -> None:
        """Delete run ``run`` and everything in its folder.

        Raises:
            BadName: not a plain name.
            LaunchError: no such run, or it is still running.
        """
        run, run_dir = self._existing_run(run)
        if self.is_alive(run):
            raise LaunchError(f"run {run!r} is still running; stop it first")
        with self._finalizing:  # not while the watcher records the run's end in its folder
            shutil.rmtree(run_dir)
            with self._lock:
                self._procs.pop(run, None)
        preset = self.runs_dir / ".workbench" / "launch" / f"{run}.toml"
        preset.unlink(missing_ok=True)

    # -- state ---------------------------------------------------------------------------------
    def is_alive(self, run: str) -> bool:
        """Whether any process of the run's group is still running.

        For runs launched by this workbench the launch record's process group is checked; for runs
        started elsewhere (the CLI), the ``pid`` in status.json.
        """
        with self._lock:
            proc = self._procs.get(run)
        if proc is not None and proc.poll() is None:
            return True
        run_dir = self.run_dir(run)
        record = read_json_object(run_dir / RECORD_NAME)
        if record.get("pgid"):
            pgid = int(record["pgid"])
            if proc is None and _pid_reused(pgid, record.get("start_ticks")):
                return False
            return _group_exists(pgid)
        pid = RunDir(run_dir).read_status().get("pid")
        return bool(pid) and process_alive(int(pid))

    def state(self, run: str) -> str:
        """The run's state for the page: the status.json state as the engine reads it (a dead ``running``
        process is ``failed``, :func:`rsd_engine.io.runs.run_state`), or ``starting`` / ``unknown``."""
        state = RunDir(self.run_dir(run)).state()
        if state:
            return state
        return "starting" if self.is_alive(run) else "unknown"

    def reconcile(self, run: str) -> None:
        """Give a dead run without a final state one (see :meth:`_finalize`). Cheap; called on refresh."""
        run_dir = self.run_dir(run)
        status = RunDir(run_dir).read_status()
        record = read_json_object(run_dir / RECORD_NAME)
        if status.get("state") in FINAL_STATES or not (status or record):
            return
        if self.is_alive(run):
            return
        if not record:  # started elsewhere: only mark it after a quiet minute
            if time.time() - float(status.get("updated") or 0) < 60:
                return
        else:
            with self._lock:
                stopping = run in self._stoppers and self._stoppers[run].is_alive()
            if stopping:
                return
        self._finalize(run)

    def _finalize(self, run: str) -> None:
        with self._finalizing:
            self._finalize_locked(run)

    def _finalize_locked(self, run: str) -> None:
        run_dir = self.run_dir(run)
        if not run_dir.is_dir():
            return
        with self._lock:
            proc = self._procs.pop(run, None)
        code = proc.poll() if proc is not None else None
        record = read_json_object(run_dir / RECORD_NAME)
        if code is not None and record:
            atomic_write_json(run_dir / RECORD_NAME, {**record, "exit_code": code})
        folder = RunDir(run_dir)
        status = folder.read_status()
        if status.get("state") in FINAL_STATES:
            return
        if record.get("stop_requested"):
            folder.mark_ended(
                "stopped", status.get("error") or "stopped from the workbench; the engine ended before writing its final state"
            )
        else:
            where = "before writing its first status" if not status else "without writing a final state"
            code_text = f" ({describe_exit(code)})" if code is not None else ""
            folder.mark_ended("failed", f"the engine process ended{code_text} {where}; see console.txt")

    def _watch(self) -> None:
        while not self._closed.wait(self.poll_s):
            with self._lock:
                items = list(self._procs.items())
            for run, proc in items:
                if proc.poll() is None:
                    continue
                with self._lock:
                    stopping = run in self._stoppers and self._stoppers[run].is_alive()
                if stopping:
                    continue
                try:
                    if not self.is_alive(run):
                        self._finalize(run)
                except (OSError, BadName):
                    with self._lock:
                        self._procs.pop(run, None)

    def close(self) -> None:
        """Stop the watcher thread. Runs keep going: they outlive the workbench."""
        self._closed.set()
        self._watcher.join(timeout=2)

    def running(self) -> list[str]:
        """Names of runs this workbench started whose processes are still alive."""
        with self._lock:
            return [run for run, proc in self._procs.items() if proc.poll() is None]


# -- process helpers ------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _send(send, target: int, sig: int) -> str:
    """Send ``sig`` with ``send`` (``os.kill`` or ``os.killpg``): ``"sent"``, ``"gone"`` (no such
    process) or ``"denied"`` (it exists but belongs to someone else)."""
    try:
        send(target, sig)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "denied"
    return "sent"


def _signal_group(pgid: int, sig: int) -> None:
    _send(os.killpg, pgid, sig)


def _group_exists(pgid: int) -> bool:
    """Whether a live (non-zombie) process of group ``pgid`` exists."""
    reached = _send(os.killpg, pgid, 0)
    if reached != "sent":
        return reached == "denied"
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat and len(stat) > 2 and stat[2] == str(pgid) and stat[0] != "Z":
            return True
    return False


def _start_ticks(pid: int) -> int | None:
    stat = proc_stat(pid)
    return int(stat[19]) if stat and len(stat) > 19 else None


def _pid_reused(pid: int, start_ticks: Any) -> bool:
    """True when ``pid`` now belongs to another process than the one recorded at launch."""
    if start_ticks is None:
        return False
    now = _start_ticks(pid)
    return now is not None and now != start_ticks
