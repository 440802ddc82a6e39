"""The one exception of checkpoint handling (its own module so registry and loader share it)."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint cannot be found, fetched, read or fitted to its architecture.

    The message is one paragraph naming the file (or registry name) and what to do about it.
    """
