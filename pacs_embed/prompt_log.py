"""Prompts added after extraction: an append-only log beside the cache (``<cache>.prompts``).

An append costs what it adds: the new prompts are written at the end of the log as one record that ends in the
SHA-256 of its header and vectors — the record's commit marker. A reader takes every whole record (its digest
matches); a writer killed at any point (``kill -9``, power loss, a full disk) leaves either the old prompts or the
old and the new ones, and the next append cuts such a torn tail (an incomplete last record) off before it writes.
Damage anywhere else (a flipped bit, a user's own file at that name) is skipped with a warning, every whole record
after it still read; the next append sets the damaged log aside (``<log>.damaged-<time>``) and rewrites it with
every whole record — no valid record is ever lost. The log is never opened through a link (``O_NOFOLLOW``), and a
log that is not a regular file is an error naming it. The image embeddings (the HDF5 file) are never rewritten by
an append.

Record layout (little-endian)::

    b"PEPROMPT"  u64 header length  header (JSON: texts, dim, model_id, revision, tokenizer_sha256)
    float32 vectors (len(texts) x dim)  sha256(header + vectors)

Usage::

    log = PromptLog(Path("c.h5.prompts"))
    for rec in log.read_new(): rec.texts, rec.vectors, rec.model
    log.append(["a watercolor"], vectors, model={"model_id": ..., "revision": ..., "tokenizer_sha256": ...})
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CacheError
from .files import NO_SPACE, NoSpaceError, atomic_write

MAGIC = b"PEPROMPT"
MODEL_KEYS = ("model_id", "revision", "tokenizer_sha256")


def log_path(cache_path) -> Path:
    """``<cache>.prompts``: where prompts added after extraction are kept."""
    return Path(cache_path).with_name(Path(cache_path).name + ".prompts")


@dataclass
class Record:
    texts: list[str]
    vectors: np.ndarray     # (len(texts), dim) float32
    model: dict             # MODEL_KEYS -> str (or None): which text tower encoded them
    templates: dict | None = None   # the prompt set a later `extract --prompts FILE` chose for the cache, if any


def encode(texts, vectors: np.ndarray, model: dict, templates: dict | None = None) -> bytes:
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    fields = {"texts": list(texts), "dim": int(vectors.shape[1]), **{k: model.get(k) for k in MODEL_KEYS}}
    if templates is not None:
        fields["templates"] = templates
    header = json.dumps(fields, ensure_ascii=False).encode()
    body = header + vectors.tobytes()
    return MAGIC + struct.pack("<Q", len(header)) + body + hashlib.sha256(body).digest()


def _record_at(data: bytes, at: int):
    """(the record starting at ``data[at]``, the offset after it), or (None, why): "torn" when the bytes from ``at``
    to the end are the start of a record cut short (a writer killed mid-append), "damaged" otherwise."""
    rest = len(data) - at
    if rest < 16:
        return None, "torn" if MAGIC.startswith(data[at:at + 8][:rest]) else "damaged"
    if data[at:at + 8] != MAGIC:
        return None, "damaged"
    (h,) = struct.unpack("<Q", data[at + 8:at + 16])
    if rest - 16 < h:
        return None, "torn"
    try:
        header = json.loads(data[at + 16:at + 16 + h])
        n, dim = len(header["texts"]), int(header["dim"])
        texts = [t for t in header["texts"] if isinstance(t, str)]
    except (ValueError, KeyError, TypeError):
        return None, "damaged"
    end = at + 16 + h + 4 * n * dim
    templates = header.get("templates")
    if len(texts) != n or (n <= 0 and not isinstance(templates, dict)) or dim <= 0 or not (
            templates is None or isinstance(templates, dict)):
        return None, "damaged"
    if len(data) < end + 32:
        return None, "torn"
    if hashlib.sha256(data[at + 16:end]).digest() != data[end:end + 32]:
        return None, "damaged"
    vectors = np.frombuffer(data[at + 16 + h:end], "<f4").reshape(n, dim).astype(np.float32)
    return Record(texts, vectors, {k: header.get(k) for k in MODEL_KEYS}, templates), end + 32


@dataclass
class Scan:
    """What a log's bytes hold: its whole records, the byte ranges that are not records (``damaged``), and where a
    torn tail (an append cut short) starts (``end``: the log's length when there is none)."""
    records: list
    damaged: list           # [(start, stop)] byte ranges skipped
    end: int                # bytes up to here are whole records or skipped damage; after it: a torn tail


def scan(data: bytes, start: int = 0) -> Scan:
    """Every whole record of ``data[start:]``. Damage (bytes that are not a record whose digest matches) is skipped
    up to the next record that is whole, so that no valid record after it is lost; only a torn tail — an
    incomplete last record — ends the scan."""
    records, damaged, at = [], [], start
    while at < len(data):
        record, nxt = _record_at(data, at)
        if record is not None:
            records.append(record)
            at = nxt
            continue
        later = _next_whole(data, at)
        if later == -1:   # nothing whole after it: a record cut short is a torn tail, anything else damage
            if nxt == "torn":
                return Scan(records, damaged, at)
            damaged.append((at, len(data)))
            return Scan(records, damaged, len(data))
        damaged.append((at, later))
        at = later
    return Scan(records, damaged, at)


def _next_whole(data: bytes, at: int) -> int:
    """The offset of the first whole record after ``at``, or -1."""
    p = data.find(MAGIC, at + 1)
    while p != -1 and _record_at(data, p)[0] is None:
        p = data.find(MAGIC, p + 1)
    return p


def decode(data: bytes, start: int = 0) -> tuple[list[Record], int]:
    """(the whole records in ``data[start:]``, the offset after the last of them, or of skipped damage)."""
    found = scan(data, start)
    return found.records, found.end


class PromptLogError(CacheError):
    """The prompt log is not a regular file (a link, a folder, a device): never read or written through."""


def _open(path: Path, write: bool):
    """``path`` opened without following a link (O_NOFOLLOW) and checked to be a regular file; None when missing
    and not ``write``."""
    flags = (os.O_RDWR | os.O_CREAT if write else os.O_RDONLY) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        if write:
            raise
        return None
    except OSError as e:
        if path.is_symlink():
            raise PromptLogError(f"the prompt log {path} is a symbolic link (to {os.readlink(path)!r}); pacs_embed never "
                                 f"reads or writes prompts through a link. Move it away (the prompts it held are "
                                 f"encoded again when needed).") from None
        raise PromptLogError(f"cannot open the prompt log {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PromptLogError(f"the prompt log {path} is not a regular file; move it away (the prompts it held are "
                             f"encoded again when needed)")
    return os.fdopen(fd, "r+b" if write else "rb")


class PromptLog:
    """The log at ``path``; ``read_new`` returns the records committed since the last call (none re-read)."""

    def __init__(self, path: Path):
        self.path, self.offset, self._identity = Path(path), 0, None
        self._said: set = set()   # damaged ranges already warned about

    def read_new(self) -> list[Record]:
        f = _open(self.path, write=False)
        if f is None:
            self.offset, self._identity = 0, None
            return []
        with f:
            s = os.fstat(f.fileno())
            identity = (s.st_ino, s.st_dev)
            if identity != self._identity or s.st_size < self.offset:   # replaced (rewritten without stale records)
                self.offset, self._identity = 0, identity
            if s.st_size == self.offset:
                return []
            f.seek(self.offset)
            data = f.read()
        found = scan(data)
        self._warn(found, self.offset)
        self.offset += found.end
        return found.records

    def _warn(self, found: Scan, base: int) -> None:
        new = [(base + a, base + b) for a, b in found.damaged if (base + a, base + b) not in self._said]
        if new:
            self._said.update(new)
            where = ", ".join(f"bytes {a}-{b}" for a, b in new[:3])
            warnings.warn(f"the prompt log {self.path} is damaged at {where}: skipped; the {len(found.records)} whole "
                          f"record(s) around it are used. The next prompt added sets the damaged log aside (as "
                          f"{self.path.name}.damaged-<time>) and keeps every whole record.", PromptLogWarning,
                          stacklevel=3)

    def append(self, texts, vectors: np.ndarray, model: dict, templates: dict | None = None) -> None:
        """Add one record at the end (the caller holds the cache's lock). A torn tail left by a crash is cut off
        first; a log with damage elsewhere is first set aside whole (``<log>.damaged-<time>``) and rewritten with
        every whole record, so no valid record is ever lost. A full disk leaves the log as it was."""
        record = encode(texts, vectors, model, templates)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _open(self.path, write=True) as f:
            found = scan(f.read())
            if found.damaged:
                kept = self._set_aside(f, found)
                self.rewrite(found.records + [Record(list(texts), np.asarray(vectors, np.float32), dict(model),
                                                     templates)])
                warnings.warn(f"the prompt log {self.path} was damaged: set aside as {kept.name}; the "
                              f"{len(found.records)} whole record(s) and the new one are in {self.path.name}",
                              PromptLogWarning, stacklevel=3)
                return
            end = found.end
            try:
                f.truncate(end)
                f.seek(end)
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                f.truncate(end)
                if e.errno in NO_SPACE:
                    raise NoSpaceError(f"no space to add prompts to {self.path} ({os.strerror(e.errno)}); it is as it "
                                       f"was. Free some space and run the command again.") from e
                raise

    def set_aside(self) -> Path:
        """A copy of the log's bytes beside it (``<log>.damaged-<time>``), before it is rewritten."""
        with _open(self.path, write=False) as f:
            return self._set_aside(f, None)

    def _set_aside(self, f, found) -> Path:
        """A copy of the damaged log's bytes beside it, named for the time: nothing of it is lost."""
        f.seek(0)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        k = 1
        while kept.exists() or kept.is_symlink():
            k += 1
            kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{k}")
        atomic_write(kept, f.read(), durable=True)
        return kept

    def rewrite(self, records: list[Record]) -> None:
        """Replace the log atomically with ``records`` (e.g. without another model's stale ones); a link at its
        place is replaced, never written through."""
        if not records:
            self.path.unlink(missing_ok=True)
        else:
            atomic_write(self.path, b"".join(encode(r.texts, r.vectors, r.model, r.templates) for r in records),
                         durable=True)
        self.offset, self._identity = 0, None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.offset, self._identity = 0, None


class PromptLogWarning(UserWarning):
    """The prompt log held damage: it was skipped (reading) or set aside (appending); no whole record was lost."""
