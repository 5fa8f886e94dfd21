"""Atomic file writes: readers see the old file or the whole new one, never a half-written one.

Usage::

    atomic_write(Path("out.json"), b"{}", durable=True)
"""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``<path>.partial`` and rename it to ``path``; ``durable`` fsyncs first (power loss)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
