"""The HDF5 format of the cache (a ``storage`` format): its layout, its writer and its validating reader (the only h5py
importer).

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
otherwise, naming the file and the array. Damage is found, never read as data: the file is written in HDF5's newest
object format (its metadata checksummed by the library), vectors in chunks with HDF5's fletcher32 checksum, every
other table with the SHA-256 of its content beside it (attribute ``sha256``; strings live in HDF5's global heap,
which has no checksum); any error HDF5 raises on a read is one CacheError naming the file. A cache is read from its
own bytes only: soft and external links, virtual datasets, external storage and objects the layout does not name
are refused.

Usage::

    write(path, attrs, domains, classes, records, embeddings, ok, failures, prompts, prompt_vectors)  # storage.write
    f = open_file(path)         # opened and checked once: a storage.Store
    f.attrs, f.index(), f.embedding(rows)
"""
from __future__ import annotations

import functools
import hashlib
import io
import time
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import CacheError
from .files import atomic_write

FORMAT_VERSION = 1
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
    written with plain file I/O: a full disk is a clean error, not a crash of HDF5's writer. Called through
    ``storage.write``, which checks the tables first."""
    path = Path(path)
    embeddings, prompt_embeddings = np.asarray(embeddings), np.asarray(prompt_embeddings)
    buffer = io.BytesIO()
    # the newest object-header format: HDF5 checksums the file's metadata itself (headers, attributes, indices)
    with h5py.File(buffer, "w", libver="latest") as f:
        for key, value in attrs.items():
            f.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses: h5py fails
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["pacs_embed_version"] = __version__
        f.attrs["embedding"] = EMBEDDING_NOTE
        f.attrs["n_images"] = len(records)
        f.attrs["embed_dim"] = embeddings.shape[1]
        _table(f, "domains", list(domains))
        _table(f, "classes", list(classes))
        g = f.create_group("images")
        _vectors(g, "embedding", embeddings)
        _table(g, "path", [r.path for r in records])
        _table(g, "domain", np.array([r.domain for r in records], np.int16))
        _table(g, "label", np.array([r.label for r in records], np.int16))
        _table(g, "ok", np.asarray(ok).astype(bool))
        _table(g, "sha256", [r.sha256 for r in records])
        _table(g, "size", np.array([r.size for r in records], np.int64))
        _table(g, "mtime_ns", np.array([r.mtime_ns for r in records], np.int64))
        fg = f.create_group("failures")
        _table(fg, "path", [p for p, _ in failures])
        _table(fg, "reason", [r for _, r in failures])
        pg = f.create_group("prompts")
        pg.attrs["embedding"] = EMBEDDING_NOTE + "; text tower run in float32"
        _table(pg, "text", list(prompts))
        _vectors(pg, "embedding", prompt_embeddings)
    atomic_write(path, buffer.getvalue(), durable=True)


CHUNK_BYTES = 1 << 20   # vectors are stored in chunks of about this size, each with its checksum


def _vectors(group, name: str, vectors: np.ndarray) -> None:
    """Float32 vectors in row chunks, each checksummed (HDF5's fletcher32 filter: a read of a damaged chunk fails)."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.size == 0:
        group.create_dataset(name, data=vectors)
        return
    rows = max(1, min(len(vectors), CHUNK_BYTES // (4 * vectors.shape[1])))
    group.create_dataset(name, data=vectors, chunks=(rows, vectors.shape[1]), fletcher32=True)


def _table(group, name: str, values) -> None:
    """A table of strings (a list) or numbers (an array), with the SHA-256 of its content as its attribute
    ``sha256``: strings live in HDF5's global heap, which carries no checksum of its own."""
    if isinstance(values, list):
        d = group.create_dataset(name, data=np.array(values, dtype=object), dtype=STR)
    else:
        d = group.create_dataset(name, data=values)
    d.attrs[DIGEST] = _content_digest(values)


DIGEST = "sha256"


def _content_digest(values) -> str:
    """SHA-256 of a table's content as read back: strings as UTF-8 joined by NUL, numbers as little-endian int64
    (booleans as 0/1)."""
    h = hashlib.sha256()
    if isinstance(values, list):
        h.update(f"str {len(values)}\0".encode())
        h.update("\0".join(values).encode("utf-8", "surrogatepass"))
    else:
        v = np.asarray(values)
        h.update(f"int {v.shape}\0".encode())
        h.update(np.ascontiguousarray(v.astype("<i8")).tobytes())
    return h.hexdigest()


def _guarded(method):
    """HDF5's own errors on a read (a damaged chunk, heap or header) become one CacheError naming the file."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except CacheError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError) as e:
            raise self.error(f"HDF5 could not read it ({_first_line(e)})") from None
    return wrapper


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


class HDF5File:
    """A cache file opened and checked once (format, groups, provenance, shapes); ``index`` and ``prompts`` read
    and check the small arrays, ``embedding`` reads vectors through the same handle."""

    def __init__(self, path):
        self.path = Path(path)
        self.f = _open(self.path)
        try:
            try:
                self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.f.attrs.items()}
                problem = _foreign(self.f) or _layout_problem(self.f)
            except (OSError, RuntimeError, KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
                raise self.error(f"HDF5 could not read its layout ({_first_line(e)})") from None
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
    def is_open(self) -> bool:
        return bool(self.f)

    def identity(self) -> tuple:
        """The file's inode, device, size and modification time: another file at the path (re-extracted, copied over)
        has another (FileNotFoundError: none is there)."""
        s = self.path.stat()
        return s.st_ino, s.st_dev, s.st_size, s.st_mtime_ns

    def reference(self) -> str:
        return str(self.path)

    @property
    @_guarded
    def shape(self) -> tuple[int, int]:
        return tuple(self.f["images/embedding"].shape)

    def _checked(self, name: str, d, values):
        """``values`` read from dataset ``d``, checked against the digest written beside them (caches made before
        digests were written have none: read as they are)."""
        stored = d.attrs.get(DIGEST)
        if stored is not None:
            stored = stored.decode() if isinstance(stored, bytes) else str(stored)
            if _content_digest(values) != stored:
                raise self.error(f"/{name} does not match the checksum written with it (its bytes were changed)")
        return values

    @_guarded
    def strings(self, name: str) -> list[str]:
        d = self.f[name]
        if h5py.check_string_dtype(d.dtype) is None:
            raise self.error(f"/{name} must hold strings; it holds {d.dtype} values")
        try:
            return self._checked(name, d, d.asstr()[:].tolist())
        except UnicodeDecodeError as e:
            raise self.error(f"/{name} holds text that is not UTF-8 ({e})") from None

    @_guarded
    def integers(self, name: str, below: int | None = None, what: str = "") -> np.ndarray:
        d = self.f[name]
        if d.dtype.kind not in "iu":
            raise self.error(f"/{name} must hold integers{what}; it holds {d.dtype} values"
                             + (f" (e.g. {d[:1].tolist()})" if d.shape[0] else ""))
        raw = d[:]
        v = raw.astype(np.int64)
        if below is not None and len(v) and (v.min() < 0 or v.max() >= below):
            bad = int(np.flatnonzero((v < 0) | (v >= below))[0])
            raise self.error(f"/{name} holds index {int(v[bad])} at row {bad}, outside the {below} entries of its table")
        self._checked(name, d, raw)
        return v

    @_guarded
    def booleans(self, name: str) -> np.ndarray:
        d = self.f[name]
        if d.dtype.kind == "b":
            return self._checked(name, d, d[:]).astype(bool)
        if d.dtype.kind in "iu":   # 0/1 as integers: read as flags, never as row indices
            v = d[:]
            if len(v) and not np.isin(v, (0, 1)).all():
                bad = int(np.flatnonzero(~np.isin(v, (0, 1)))[0])
                raise self.error(f"/{name} must hold booleans (or 0/1); row {bad} holds {v[bad]}")
            return self._checked(name, d, v).astype(bool)
        raise self.error(f"/{name} must hold booleans; it holds {d.dtype} values")

    @_guarded
    def floats(self, name: str) -> h5py.Dataset:
        d = self.f[name]
        if d.dtype.kind != "f":
            raise self.error(f"/{name} must hold floating-point vectors; it holds {d.dtype} values")
        return d

    @_guarded
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

    @_guarded
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

    @_guarded
    def failures(self) -> list[tuple[str, str]]:
        return list(zip(self.strings("failures/path"), self.strings("failures/reason")))

    @_guarded
    def prompts(self) -> tuple[list[str], np.ndarray]:
        return self.strings("prompts/text"), self.floats("prompts/embedding")[:].astype(np.float32)

    @_guarded
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
        n = self.shape[0]
        for i in range(0, n, block):
            yield i, self._rows(i, block)

    @_guarded
    def _rows(self, start: int, count: int) -> np.ndarray:
        return self.f["images/embedding"][start:start + count]


def open_file(path) -> HDF5File:
    """The cache file at ``path``, opened and checked once (``storage.open_store``)."""
    return HDF5File(path)


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
    try:
        version = f.attrs.get("format_version")
        ours = "pacs_embed_version" in f.attrs
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        f.close()
        raise CacheError(f"{str(path)!r} is damaged: HDF5 could not read its attributes ({_first_line(e)}). "
                         f"{REBUILD}.") from None
    if version is None or not ours:
        f.close()
        raise CacheError(f"{str(path)!r} is an HDF5 file but not a pacs_embed cache (no pacs_embed attributes)")
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        f.close()
        raise CacheError(f"{str(path)!r} has a format_version attribute of {type(version).__name__} {version!r}; a "
                         f"pacs_embed cache's is the integer {FORMAT_VERSION}. {REBUILD}.")
    if version != FORMAT_VERSION:
        f.close()
        raise CacheError(f"{str(path)!r} has cache format {int(version)}; this pacs_embed reads {FORMAT_VERSION}. "
                         f"Re-run `pacs-embed extract --force`.")
    return f


LAYOUT_GROUPS = ("images", "failures", "prompts")


def _foreign(f) -> str:
    """An object or link the layout does not have, or one that points outside the file, or ""; a cache is read
    from its own bytes only: no soft or external links, virtual datasets, external storage, or extra objects."""
    allowed = set(GROUPS) | set(LAYOUT_GROUPS)
    for where, group in [("", f)] + [(g + "/", f[g]) for g in LAYOUT_GROUPS if isinstance(f.get(g, getlink=True),
                                                                                        h5py.HardLink) and g in f]:
        for name in group:
            full = where + name
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
                target = getattr(link, "filename", "") + ":" + getattr(link, "path", "")
                return f"/{full} is {kind} (to {target}); a cache holds its own data only. Refusing to follow it"
            if full not in allowed:
                return f"it holds /{full}, which a pacs_embed cache does not have"
            obj = group[name]
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    return f"/{full} is a virtual dataset (its data lie in other files or places); refusing to read it"
                if obj.external:
                    return (f"/{full} stores its data in external file(s) ({obj.external[0][0]!r}...); refusing to "
                            f"read it")
            elif full not in LAYOUT_GROUPS:
                return f"/{full} is a {type(obj).__name__}, not what the layout has"
    return ""


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
