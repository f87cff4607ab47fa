"""The error every dataset reader raises (:mod:`rsd_engine.data.sources`, :mod:`rsd_engine.data.mri`)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset file or folder is missing or malformed; the message names the path and what is expected."""
