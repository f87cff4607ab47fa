"""``rsd-workbench`` (also ``python -m workbench``): serve the workbench page.

    rsd-workbench [--host 127.0.0.1] [--port 7860] [--runs-dir ./runs] [--presets-dir ~/.rsd-workbench/presets]

Binds to loopback by default. Binding to any other address prints a warning: the page has no
login, and whoever reaches it can launch, stop and delete runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "create_app", "launch_kwargs", "is_loopback"]


def build_parser() -> argparse.ArgumentParser:
    """The command line parser of ``rsd-workbench``."""
    p = argparse.ArgumentParser(
        prog="rsd-workbench", description="RSD Workbench: edit presets, launch and watch runs, compare samples, in a browser."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--runs-dir", default="runs", help="folder of runs (default ./runs)")
    p.add_argument("--presets-dir", default=None, help="folder of your presets (default ~/.rsd-workbench/presets)")
    p.add_argument("--shipped-presets-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--grace", type=float, default=60.0, help="seconds a stopped run gets to write its final checkpoint before SIGKILL (default 60)"
    )
    return p


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host.strip().lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(
    runs_dir: str | Path,
    presets_dir: str | Path | None = None,
    shipped_dir: str | Path | None = None,
    engine_cmd: list[str] | None = None,
    grace_s: float = 60.0,
):
    """Build the workbench for the given folders.

    Gradio's file cache is placed in ``RUNS/.workbench/gradio`` (``GRADIO_TEMP_DIR``) so that the
    page writes nowhere outside the runs and presets folders; analytics are switched off.

    Returns:
        ``(demo, workbench)``: the unlaunched ``gr.Blocks`` and the :class:`workbench.api.Workbench`.
    """
    runs = Path(runs_dir).expanduser().resolve()
    cache = runs / ".workbench" / "gradio"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .api import Workbench
    from .ui import build_blocks

    wb = Workbench(runs, presets_dir, shipped_dir=shipped_dir, engine_cmd=engine_cmd, grace_s=grace_s)
    return build_blocks(wb), wb


def launch_kwargs(wb, host: str, port: int) -> dict:
    """Keyword arguments of ``Blocks.launch`` for the workbench (theme, CSS, the leave-page guard, paths, no SSR)."""
    import gradio as gr

    from .ui import CSS, JS, THEME_KW

    return dict(
        server_name=host,
        server_port=port,
        allowed_paths=[str(wb.runs_dir)],
        theme=gr.themes.Default(**THEME_KW),
        css=CSS,
        js=JS,
        ssr_mode=False,
        show_error=True,
        footer_links=[],
        enable_monitoring=False,
        mcp_server=False,
        run_history=False,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until interrupted. Returns the exit code."""
    args = build_parser().parse_args(argv)
    if not is_loopback(args.host):
        print(
            f"WARNING: serving on {args.host}: the workbench has no login; anyone who can reach this address can launch, stop and "
            "delete runs and edit your presets. Prefer --host 127.0.0.1 with an SSH tunnel (ssh -L 7860:127.0.0.1:7860 host).",
            file=sys.stderr,
        )
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo, wb = create_app(args.runs_dir, args.presets_dir, args.shipped_presets_dir, grace_s=args.grace)
    print(f"RSD Workbench: runs in {wb.runs_dir}, your presets in {wb.store.user_dir}", file=sys.stderr)
    try:
        demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(wb, args.host, args.port))
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(f"RSD Workbench: open http://{shown}:{args.port}/ in a browser (Ctrl-C stops the page; runs keep going)", file=sys.stderr)
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        wb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
