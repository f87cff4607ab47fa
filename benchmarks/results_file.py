"""The shared results file of benchmarks/: one Markdown section per script run, newest first."""

from __future__ import annotations

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
