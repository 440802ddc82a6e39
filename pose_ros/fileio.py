"""Atomic file writes: checkpoints, training states, downloads and result files are either the old
file or the complete new one, never half written (a crash, Ctrl-C or power loss mid-write loses
nothing). The one helper for it in the project."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``, on any
    error it is removed and ``path`` is left as it was.

    Durability: the file's data is fsync'ed before ``os.replace`` (so the new name never points at
    unwritten blocks), and the folder is fsync'ed after it (so the rename itself survives a power
    loss).

    Example::

        with atomic_write(target) as stream:
            torch.save(payload, stream)
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, making renames and new entries in it durable (no-op where folders cannot
    be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on folders
        pass
    finally:
        os.close(fd)
