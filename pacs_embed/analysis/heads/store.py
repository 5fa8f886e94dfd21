"""The head cache: fitted heads on disk (``<cache>.heads/<key>.npz``, plain arrays, no pickles), keyed by a hash of
exactly what a head depends on (``model.head_key``), so that a re-run after a prompt edit refits only the heads whose
features changed. Entries are written atomically; a damaged or unwritable one is said once and refitted.

Usage::

    cache = HeadCache("mini.h5.heads")
    cache.get(key, dim, classes) or cache.put(key, head)
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from ...files import atomic_write
from .model import Head


class HeadCacheWarning(UserWarning):
    """A head cache entry was damaged or did not belong to its key: it is refitted."""


_UNWRITABLE = threading.Lock()   # one "cannot write the head cache" warning per cache, whatever the threads


class HeadCache:
    """Fitted heads by key: in memory, and in ``folder`` (``None``: memory only). Unreadable entries are refitted."""

    def __init__(self, folder=None):
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, Head] = {}
        self.hits = self.fits = 0

    def get(self, key: str, dim: int, classes: np.ndarray) -> Head | None:
        """The head stored for ``key`` (``dim``-dimensional features, ``classes`` present in training), or None. An
        entry that is unreadable or does not prove it belongs to its key (``Head.from_file``) is refitted and
        rewritten, with a one-line warning; a forged entry that passes every check is out of scope."""
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        path = self.folder / f"{key}.npz" if self.folder else None
        if path and path.is_file():
            try:
                head = Head.from_file(path, key, dim, classes)
            except Exception as e:  # noqa: BLE001 - any damage: refitted and rewritten
                warnings.warn(f"head cache entry {path} is refitted: {e if isinstance(e, ValueError) else type(e).__name__}",
                              HeadCacheWarning, stacklevel=2)
                return None
            self.memory[key] = head
            self.hits += 1
            return head
        return None

    def put(self, key: str, head: Head) -> None:
        self.memory[key] = head
        self.fits += 1
        folder = self.folder
        if folder:
            entry = folder / f"{key}.npz"
            try:   # a temporary name of its own: two threads may fit the same head
                atomic_write(entry, head.to_bytes(), private=True)
            except OSError as e:  # a read-only folder or a full disk must not stop an analysis: said once
                with _UNWRITABLE:
                    if self.folder is not None:
                        self.folder = None
                        warnings.warn(f"cannot write the head cache entry {entry}: {e.strerror or e}; heads are kept "
                                      f"in memory only", HeadCacheWarning, stacklevel=2)
