"""The Gradio layout of the workbench: one module per view, wired together by :func:`build_blocks`.

Views (tabs): Presets, Preview, Runs, Live plots, Gallery. Each view module has ``build(...)``
creating its components (returned as a namespace) and ``wire(...)`` attaching its events once
every view exists, because events cross views (the Runs tab launches the preset being edited).
"""

from .layout import CSS, JS, THEME_KW, build_blocks

__all__ = ["build_blocks", "CSS", "JS", "THEME_KW"]
