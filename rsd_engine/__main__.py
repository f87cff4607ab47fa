"""``python -m rsd_engine …`` (also under ``accelerate launch -m rsd_engine …``)."""

from .cli import main

raise SystemExit(main())
