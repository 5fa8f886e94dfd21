"""Atomic file writes: readers see the old file or the whole new one, never a half-written one.

Usage::

    atomic_write(Path("out.json"), b"{}", durable=True)
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import PacsEmbedError


def atomic_write(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``<path>.partial`` and rename it to ``path``; ``durable`` fsyncs first (power loss)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)       # nothing half-written is left behind
        if e.errno in NO_SPACE:
            raise NoSpaceError(f"no space to write {path} ({os.strerror(e.errno)}); {path.name} is as it was. "
                               f"Free some space (or raise the file-size limit) and run the command again.") from e
        raise


NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class NoSpaceError(PacsEmbedError, OSError):
    """The disk (or a quota or file-size limit) is full: nothing was half-written."""
