"""The storage seam: what a ``Cache`` needs of the bytes behind it (``Store``), the one way to write them
(``write``), and the formats that implement both — HDF5 (``hdf5.py``, the format on disk) and ``MemoryStore`` (the same
tables held in memory: tests, and the model of a second format).

A second on-disk format is one module with ``write(path, ...)`` and a ``Store`` class, added to ``FORMATS`` under its
file suffix; nothing else changes (``Cache`` only talks to a ``Store``).

Usage::

    write("c.h5", attrs, domains, classes, records, vectors, ok, failures, prompts, prompt_vectors)
    store = open_store("c.h5")                      # HDF5File, checked once
    store = MemoryStore("mem.h5", attrs, domains, classes, records, vectors, ok, failures, prompts, prompt_vectors)
    Cache.open(store)                               # a Cache over either
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from . import __version__, hdf5
from .errors import ArgumentError, CacheError

REBUILD = hdf5.REBUILD


@runtime_checkable
class Store(Protocol):
    """The tables of one cache, read and checked (every problem one CacheError naming the cache)."""
    path: Path                  # where it is (or, in memory, the name it goes by: its prompt log and heads sit beside)
    attrs: dict                 # provenance: model_id, revision, dtype, ...

    @property
    def shape(self) -> tuple[int, int]: ...                          # (images, dimension)
    @property
    def is_open(self) -> bool: ...
    def names(self) -> tuple[list[str], list[str]]: ...             # (domains, classes)
    def index(self, n_domains: int, n_classes: int) -> dict: ...    # path, domain, label, ok, sha256, size, mtime_ns
    def failures(self) -> list[tuple[str, str]]: ...
    def prompts(self) -> tuple[list[str], np.ndarray]: ...
    def embedding(self, rows=None) -> np.ndarray: ...               # all rows, a boolean mask or an index array
    def blocks(self, block: int = 1 << 16) -> Iterator[tuple[int, np.ndarray]]: ...
    def identity(self) -> tuple: ...     # changes when the bytes behind it are replaced (FileNotFoundError: gone)
    def reference(self): ...             # what opens it again in another process (a path, or the store itself)
    def close(self) -> None: ...
    def reopen(self) -> None: ...


class MemoryStore:
    """A cache's tables held in memory, as ``write`` would store them and a file's reader would return them."""

    def __init__(self, path, attrs: dict, domains, classes, records, embeddings, ok, failures, prompts,
                 prompt_embeddings):
        self.path = Path(path)
        embeddings = np.asarray(embeddings)
        _check_tables(self.path, domains, classes, records, embeddings, ok, prompts, prompt_embeddings)
        if unsaid := [a for a in hdf5.PROVENANCE if a not in attrs]:
            raise CacheError(f"{str(self.path)!r}: it does not say which model made its vectors (no attribute "
                             f"{', '.join(unsaid)})")
        self.attrs = {**attrs, "format_version": hdf5.FORMAT_VERSION, "pacs_embed_version": __version__,
                      "embedding": hdf5.EMBEDDING_NOTE, "n_images": len(records), "embed_dim": int(embeddings.shape[1])}
        self._names = (list(domains), list(classes))
        self._index = {"path": [r.path for r in records], "domain": np.array([r.domain for r in records], np.int64),
                       "label": np.array([r.label for r in records], np.int64), "ok": np.asarray(ok).astype(bool),
                       "sha256": [r.sha256 for r in records], "size": np.array([r.size for r in records], np.int64),
                       "mtime_ns": np.array([r.mtime_ns for r in records], np.int64)}
        self._vectors = embeddings.copy()
        self._vectors.flags.writeable = False
        self._failures = [(str(p), str(r)) for p, r in failures]
        self._prompts = (list(prompts), np.asarray(prompt_embeddings, np.float32).copy())
        self.is_open = True

    @property
    def shape(self) -> tuple[int, int]:
        return self._vectors.shape

    def names(self):
        return list(self._names[0]), list(self._names[1])

    def index(self, n_domains: int, n_classes: int) -> dict:
        return {k: (v.copy() if isinstance(v, np.ndarray) else list(v)) for k, v in self._index.items()}

    def failures(self):
        return list(self._failures)

    def prompts(self):
        return list(self._prompts[0]), self._prompts[1].copy()

    def embedding(self, rows=None) -> np.ndarray:
        if rows is None:
            return self._vectors.copy()
        rows = np.asarray(rows)
        return self._vectors[rows if rows.dtype == bool else np.sort(rows)]

    def blocks(self, block: int = 1 << 16):
        for i in range(0, len(self._vectors), block):
            yield i, self._vectors[i:i + block]

    def identity(self) -> tuple:
        return ("memory", id(self))

    def reference(self):
        return self

    def close(self) -> None:
        self.is_open = False

    def reopen(self) -> None:
        self.is_open = True


FORMATS = {".h5": hdf5, ".hdf5": hdf5}   # suffix -> format module (write, Store class); any other suffix: HDF5


def _format(path):
    return FORMATS.get(Path(path).suffix.lower(), hdf5)


def open_store(source) -> Store:
    """The store at a path (checked once; a missing, damaged or foreign file is a CacheError naming it), or ``source``
    itself when it is one."""
    if isinstance(source, Store):
        return source
    return _format(source).open_file(source)


def write(path, attrs: dict, domains, classes, records, embeddings, ok, failures, prompts, prompt_embeddings) -> None:
    """A complete cache written to ``path`` atomically (by its format: ``FORMATS``, HDF5 by default); tables of
    different lengths or indices outside their tables are refused first."""
    embeddings = np.asarray(embeddings)
    _check_tables(path, domains, classes, records, embeddings, ok, prompts, prompt_embeddings)
    _format(path).write(path, attrs, domains, classes, records, embeddings, ok, failures, prompts, prompt_embeddings)


def _check_tables(path, domains, classes, records, embeddings, ok, prompts, prompt_embeddings) -> None:
    """What every format refuses to write: tables of different lengths, indices outside their tables."""
    n = len(records)
    if embeddings.ndim != 2 or len(embeddings) != n or len(ok) != n:
        raise ArgumentError(f"{str(path)!r}: {n} records need an (n, D) embedding matrix and n ok flags; got "
                            f"{embeddings.shape} and {len(ok)}")
    if np.shape(prompt_embeddings) != (len(prompts), embeddings.shape[1]):
        raise ArgumentError(f"{str(path)!r}: {len(prompts)} prompts need a ({len(prompts)}, {embeddings.shape[1]}) "
                            f"matrix of vectors (the images' dimension); got {np.shape(prompt_embeddings)}")
    if any(not 0 <= r.domain < len(domains) or not 0 <= r.label < len(classes) for r in records):
        raise ArgumentError(f"{str(path)!r}: a record's domain or label index is outside the {len(domains)} domains "
                            f"and {len(classes)} classes")
