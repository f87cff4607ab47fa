"""RSD Workbench: the Gradio page that edits presets, launches and watches runs, and shows samples.

The workbench talks to the engine only through preset files, run folders and the engine's CLI
(``python -m rsd_engine …``); it reads the preset schema and validates presets with
``rsd_engine.io.config`` so that the form and its error messages are the engine's own, and reads run
folders (and records a dead run's final state) with ``rsd_engine.io.runs``, the folder's one owner.

Modules, one job each:

- :mod:`workbench.names`          safe preset/run names and paths confined to a folder
- :mod:`workbench.presets_store`  shipped (read-only) and user presets on disk
- :mod:`workbench.preset_edit`    schema → form fields, TOML edits, validation
- :mod:`workbench.launcher`       run processes: launch, stop, resume, delete (process groups)
- :mod:`workbench.run_reader`     what a run folder says: table rows, plots, gallery, metrics, log
- :mod:`workbench.api`            the headless API (plain functions behind the named endpoints)
- :mod:`workbench.ui`             the Gradio layout (one module per view)
- :mod:`workbench.app`            command line entry point ``rsd-workbench``
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
