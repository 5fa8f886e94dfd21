"""The HDF5 format of the cache: its layout, the one writer and the one validating reader (the only h5py importer).

Layout (format version 1; all vectors are raw projected CLIP embeddings, float32, *not* L2-normalised)::

    /                    attrs: provenance (model_id, revision, dtype, versions, manifest_sha256, ...)
    /domains, /classes   name tables (str)
    /images/embedding    (N, D) float32; NaN rows for images that failed to decode
    /images/path         (N,) str, relative to the dataset root
    /images/domain       (N,) int16 index into /domains
    /images/label        (N,) int16 index into /classes
    /images/ok           (N,) bool
    /images/sha256, size, mtime_ns   per-file content hash and stat, for staleness checks
    /failures/path, /failures/reason  images that could not be read, and why
    /prompts/text        (P,) str        prompts encoded at extraction (later ones: ``prompt_log``)
    /prompts/embedding   (P, D) float32

A file written by another tool is read by what each array must be — strings as strings, indices as integers
within their table, ``ok`` as booleans (0/1 integers are taken as such), vectors as floats — and refused
otherwise, naming the file and the array. A second format would be one more module beside this one.

Usage::

    write(path, attrs, domains, classes, records, embeddings, ok, failures, prompts, prompt_vectors)
    f = HDF5File(path)          # opened and checked once
    f.attrs, f.index(), f.embedding(rows)
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import CacheError
from .files import atomic_write

FORMAT_VERSION = 1
SUFFIXES = (".h5", ".hdf5")
EMBEDDING_NOTE = ("raw projected CLIP embeddings (output of the visual/text projection), float32, "
                  "not L2-normalised")
STR = h5py.string_dtype()
GROUPS = ("domains", "classes", "images/embedding", "images/path", "images/domain", "images/label", "images/ok",
          "images/sha256", "images/size", "images/mtime_ns", "failures/path", "failures/reason", "prompts/text",
          "prompts/embedding")
PROVENANCE = ("model_id", "revision")   # which model made the vectors: a cache must say (prompts are checked against it)
REBUILD = "Re-run `pacs-embed extract --force` to rebuild it"


def write(path, attrs: dict, domains, classes, records, embeddings: np.ndarray, ok: np.ndarray,
          failures: list[tuple[str, str]], prompts: list[str], prompt_embeddings: np.ndarray) -> None:
    """Write a complete cache to ``<path>.partial``, then rename it to ``path`` (atomic). It is built in memory and
    written with plain file I/O: a full disk is a clean error, not a crash of HDF5's writer."""
    path = Path(path)
    embeddings, prompt_embeddings = np.asarray(embeddings), np.asarray(prompt_embeddings)
    n = len(records)
    if embeddings.ndim != 2 or len(embeddings) != n or len(ok) != n:
        raise ValueError(f"{str(path)!r}: {n} records need an (n, D) embedding matrix and n ok flags; got "
                         f"{embeddings.shape} and {len(ok)}")
    if prompt_embeddings.shape != (len(prompts), embeddings.shape[1]):
        raise ValueError(f"{str(path)!r}: {len(prompts)} prompts need a ({len(prompts)}, {embeddings.shape[1]}) "
                         f"matrix of vectors (the images' dimension); got {prompt_embeddings.shape}")
    if any(not 0 <= r.domain < len(domains) or not 0 <= r.label < len(classes) for r in records):
        raise ValueError(f"{str(path)!r}: a record's domain or label index is outside the {len(domains)} domains "
                         f"and {len(classes)} classes")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses: h5py fails
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["pacs_embed_version"] = __version__
        f.attrs["embedding"] = EMBEDDING_NOTE
        f.attrs["n_images"] = len(records)
        f.attrs["embed_dim"] = embeddings.shape[1]
        f.create_dataset("domains", data=np.array(domains, dtype=object), dtype=STR)
        f.create_dataset("classes", data=np.array(classes, dtype=object), dtype=STR)
        g = f.create_group("images")
        g.create_dataset("embedding", data=embeddings.astype(np.float32))
        g.create_dataset("path", data=np.array([r.path for r in records], dtype=object), dtype=STR)
        g.create_dataset("domain", data=np.array([r.domain for r in records], np.int16))
        g.create_dataset("label", data=np.array([r.label for r in records], np.int16))
        g.create_dataset("ok", data=np.asarray(ok).astype(bool))
        g.create_dataset("sha256", data=np.array([r.sha256 for r in records], dtype=object), dtype=STR)
        g.create_dataset("size", data=np.array([r.size for r in records], np.int64))
        g.create_dataset("mtime_ns", data=np.array([r.mtime_ns for r in records], np.int64))
        fg = f.create_group("failures")
        fg.create_dataset("path", data=np.array([p for p, _ in failures], dtype=object), dtype=STR)
        fg.create_dataset("reason", data=np.array([r for _, r in failures], dtype=object), dtype=STR)
        pg = f.create_group("prompts")
        pg.attrs["embedding"] = EMBEDDING_NOTE + "; text tower run in float32"
        pg.create_dataset("text", data=np.array(prompts, dtype=object), dtype=STR)
        pg.create_dataset("embedding", data=prompt_embeddings.astype(np.float32))
    atomic_write(path, buffer.getvalue(), durable=True)


class HDF5File:
    """A cache file opened and checked once (format, groups, provenance, shapes); ``index`` and ``prompts`` read
    and check the small arrays, ``embedding`` reads vectors through the same handle."""

    def __init__(self, path):
        self.path = Path(path)
        self.f = _open(self.path)
        try:
            self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.f.attrs.items()}
            problem = _layout_problem(self.f)
            if not problem and (unsaid := [a for a in PROVENANCE if a not in self.attrs]):
                problem = (f"it does not say which model made its vectors (no attribute {', '.join(unsaid)}; add it), "
                           f"so no prompt can be checked against them")
            if problem:
                raise self.error(problem)
        except BaseException:
            self.f.close()
            raise

    def error(self, problem: str) -> CacheError:
        return CacheError(f"{str(self.path)!r} is damaged or inconsistent: {problem}. {REBUILD}.")

    def close(self) -> None:
        """Let the file go (other writers and readers of this process may open it); ``reopen`` takes it back."""
        self.f.close()

    def reopen(self) -> None:
        if not self.f:
            self.f = _open(self.path)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.f["images/embedding"].shape)

    def strings(self, name: str) -> list[str]:
        d = self.f[name]
        if h5py.check_string_dtype(d.dtype) is None:
            raise self.error(f"/{name} must hold strings; it holds {d.dtype} values")
        try:
            return d.asstr()[:].tolist()
        except UnicodeDecodeError as e:
            raise self.error(f"/{name} holds text that is not UTF-8 ({e})") from None

    def integers(self, name: str, below: int | None = None, what: str = "") -> np.ndarray:
        d = self.f[name]
        if d.dtype.kind not in "iu":
            raise self.error(f"/{name} must hold integers{what}; it holds {d.dtype} values"
                             + (f" (e.g. {d[:1].tolist()})" if d.shape[0] else ""))
        v = d[:].astype(np.int64)
        if below is not None and len(v) and (v.min() < 0 or v.max() >= below):
            bad = int(np.flatnonzero((v < 0) | (v >= below))[0])
            raise self.error(f"/{name} holds index {int(v[bad])} at row {bad}, outside the {below} entries of its table")
        return v

    def booleans(self, name: str) -> np.ndarray:
        d = self.f[name]
        if d.dtype.kind == "b":
            return d[:].astype(bool)
        if d.dtype.kind in "iu":   # 0/1 as integers: read as flags, never as row indices
            v = d[:]
            if len(v) and not np.isin(v, (0, 1)).all():
                bad = int(np.flatnonzero(~np.isin(v, (0, 1)))[0])
                raise self.error(f"/{name} must hold booleans (or 0/1); row {bad} holds {v[bad]}")
            return v.astype(bool)
        raise self.error(f"/{name} must hold booleans; it holds {d.dtype} values")

    def floats(self, name: str) -> h5py.Dataset:
        d = self.f[name]
        if d.dtype.kind != "f":
            raise self.error(f"/{name} must hold floating-point vectors; it holds {d.dtype} values")
        return d

    def names(self) -> tuple[list[str], list[str]]:
        """(domains, classes), each without repeats."""
        out = []
        for table in ("domains", "classes"):
            names = self.strings(table)
            if len(set(names)) < len(names):
                twice = next(n for i, n in enumerate(names) if n in names[:i])
                raise self.error(f"/{table} names {twice!r} twice")
            out.append(names)
        return out[0], out[1]

    def index(self, n_domains: int, n_classes: int) -> dict:
        """Every image's path, domain, label, ok, sha256, size, mtime_ns — checked, paths without repeats."""
        g = "images/"
        out = {"path": self.strings(g + "path"), "domain": self.integers(g + "domain", n_domains, " (domain indices)"),
               "label": self.integers(g + "label", n_classes, " (class indices)"), "ok": self.booleans(g + "ok"),
               "sha256": self.strings(g + "sha256"), "size": self.integers(g + "size"),
               "mtime_ns": self.integers(g + "mtime_ns")}
        if len(set(out["path"])) < len(out["path"]):
            seen = set()
            first = next(i for i, p in enumerate(out["path"]) if p in seen or seen.add(p))
            raise self.error(f"/images/path holds {out['path'][first]!r} twice (row {first}): one row per image file")
        self.floats(g + "embedding")
        return out

    def failures(self) -> list[tuple[str, str]]:
        return list(zip(self.strings("failures/path"), self.strings("failures/reason")))

    def prompts(self) -> tuple[list[str], np.ndarray]:
        return self.strings("prompts/text"), self.floats("prompts/embedding")[:].astype(np.float32)

    def embedding(self, rows=None, block: int = 1 << 16) -> np.ndarray:
        """The image vectors (all, or a boolean mask / index array of ``rows``), as stored, read straight into one
        array (no copy of the whole matrix)."""
        e = self.f["images/embedding"]
        if rows is not None and np.asarray(rows).dtype != bool:
            rows = np.sort(np.asarray(rows))
            return e[rows] if len(rows) else np.zeros((0, e.shape[1]), e.dtype)
        if rows is None or np.all(rows):
            out = np.empty(e.shape, e.dtype)
            if out.size:
                e.read_direct(out)
            return out
        out, at = np.empty((int(np.count_nonzero(rows)), e.shape[1]), e.dtype), 0
        for i in range(0, len(rows), block):
            part = e[i:i + block][rows[i:i + block]]
            out[at:at + len(part)] = part
            at += len(part)
        return out

    def blocks(self, block: int = 1 << 16):
        """(start, vectors) in blocks of ``block`` rows: no copy of the whole matrix."""
        e = self.f["images/embedding"]
        for i in range(0, e.shape[0], block):
            yield i, e[i:i + block]


def _open(path: Path):
    if not path.is_file():
        raise CacheError(f"no cache at {str(path)!r}; make it with `pacs-embed extract` (see --out).")
    for attempt in range(50):  # another process may hold HDF5's own file lock for a moment
        try:
            f = h5py.File(path, "r")
            break
        except OSError as e:
            if "lock" not in str(e).lower() or attempt == 49:
                raise CacheError(f"cannot open cache {str(path)!r}: {e}") from e
            time.sleep(0.2)
    version = f.attrs.get("format_version")
    if version is None or "pacs_embed_version" not in f.attrs:
        f.close()
        raise CacheError(f"{str(path)!r} is an HDF5 file but not a pacs_embed cache (no pacs_embed attributes)")
    if version != FORMAT_VERSION:
        f.close()
        raise CacheError(f"{str(path)!r} has cache format {version!r}; this pacs_embed reads {FORMAT_VERSION}. "
                         f"Re-run `pacs-embed extract --force`.")
    return f


def _layout_problem(f) -> str:
    """What makes the arrays of an open cache disagree with each other (shapes only: no vector is read), or ""."""
    missing = [g for g in GROUPS if g not in f or not isinstance(f[g], h5py.Dataset)]
    if missing:
        return f"it lacks {', '.join('/' + g for g in missing)}"
    e, n = f["images/embedding"], f["images/path"].shape
    if len(n) != 1:
        return f"/images/path has shape {n}, not one path per image"
    n = n[0]
    if e.ndim != 2 or e.shape[0] != n:
        return f"/images/embedding has shape {e.shape}, not one row per image path ({n})"
    for name in ("domain", "label", "ok", "sha256", "size", "mtime_ns"):
        if f[f"images/{name}"].shape != (n,):
            return f"/images/{name} has shape {f[f'images/{name}'].shape}, not one entry per image ({n})"
    for name in ("domains", "classes", "prompts/text", "failures/path", "failures/reason"):
        if f[name].ndim != 1:
            return f"/{name} has shape {f[name].shape}, not a list"
    p, texts = f["prompts/embedding"], f["prompts/text"].shape[0]
    if p.ndim != 2 or p.shape != (texts, e.shape[1]):
        return (f"/prompts/embedding has shape {p.shape}, not one {e.shape[1]}-dimensional vector (the images' "
                f"dimension) per prompt ({texts})")
    if f["failures/path"].shape != f["failures/reason"].shape:
        return "/failures/path and /failures/reason differ in length"
    return ""
