"""The shared results file of benchmarks/: one Markdown section per script run, newest first."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

HEADER = "# Benchmark results\n\nEach section is one run of a script in benchmarks/; newest first.\n\n"


def prepend_section(out: Path, section: str) -> None:
    """Write ``section`` (Markdown starting with ``## ``) under the header of ``out``, above older sections.

    A file that does not start with the header is replaced by header + section. Raises OSError
    when ``out`` cannot be written.
    """
    text = out.read_text() if out.exists() else ""
    old = text.split("\n\n", 2)[2] if text.startswith("# Benchmark results") else ""
    out.write_text(HEADER + section + ("\n" + old if old else ""))


def table_main(
    argv: list[str] | None, script: str, description: str, title: str, header: str, row: Callable[[Path], str], out: Path
) -> int:
    """Command line of a table script: rows (``row(run)``) for the run folders given, printed under
    ``header`` and prepended to ``--out`` (default ``out``) with the command and the time. Returns 0.

    Args:
        argv: the arguments (``None``: sys.argv).
        script: the script's path as typed (``benchmarks/mri_table.py``), quoted in the section.
        description: the parser's description.
        title: the default section title (``--title``).
        header: the Markdown table header.
        row: one row per run folder; raises SystemExit for a run it cannot read.
        out: the default results file.
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    ap.add_argument("--title", default=title)
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args(argv)
    table = header + "".join(row(r) for r in args.runs)
    print(table)
    command = f"python {script} " + " ".join(str(r) for r in args.runs)
    section = f"## {args.title}\n\nWritten {time.strftime('%Y-%m-%d %H:%M')} by `{command}`.\n\n{table}\n"
    prepend_section(args.out, section)
    return 0
