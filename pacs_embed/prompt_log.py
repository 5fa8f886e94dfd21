"""Prompts added after extraction: an append-only log beside the cache (``<cache>.prompts``).

An append costs what it adds: the new prompts are written at the end of the log as one record that ends in the
SHA-256 of its header and vectors — the record's commit marker. A reader takes records up to the first one that
is incomplete or whose digest does not match, so a writer killed at any point (``kill -9``, power loss, a full
disk) leaves either the old prompts or the old and the new ones; the next append cuts such a torn tail off
before it writes. The image embeddings (the HDF5 file) are never rewritten by an append.

Record layout (little-endian)::

    b"PEPROMPT"  u64 header length  header (JSON: texts, dim, model_id, revision, tokenizer_sha256)
    float32 vectors (len(texts) x dim)  sha256(header + vectors)

Usage::

    log = PromptLog(Path("c.h5.prompts"))
    for rec in log.read_new(): rec.texts, rec.vectors, rec.model
    log.append(["a watercolor"], vectors, model={"model_id": ..., "revision": ..., "tokenizer_sha256": ...})
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def encode(texts, vectors: np.ndarray, model: dict) -> bytes:
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    header = json.dumps({"texts": list(texts), "dim": int(vectors.shape[1]),
                         **{k: model.get(k) for k in MODEL_KEYS}}, ensure_ascii=False).encode()
    body = header + vectors.tobytes()
    return MAGIC + struct.pack("<Q", len(header)) + body + hashlib.sha256(body).digest()


def decode(data: bytes, start: int = 0) -> tuple[list[Record], int]:
    """(the whole records in ``data[start:]``, the offset after the last of them)."""
    out, at = [], start
    while len(data) - at >= 16 and data[at:at + 8] == MAGIC:
        (h,) = struct.unpack("<Q", data[at + 8:at + 16])
        if len(data) - at - 16 < h:
            break
        try:
            header = json.loads(data[at + 16:at + 16 + h])
            n, dim = len(header["texts"]), int(header["dim"])
        except (ValueError, KeyError, TypeError):
            break
        end = at + 16 + h + 4 * n * dim
        if len(data) < end + 32 or hashlib.sha256(data[at + 16:end]).digest() != data[end:end + 32]:
            break
        vectors = np.frombuffer(data[at + 16 + h:end], "<f4").reshape(n, dim).astype(np.float32)
        out.append(Record([str(t) for t in header["texts"]], vectors, {k: header.get(k) for k in MODEL_KEYS}))
        at = end + 32
    return out, at


class PromptLog:
    """The log at ``path``; ``read_new`` returns the records committed since the last call (none re-read)."""

    def __init__(self, path: Path):
        self.path, self.offset, self._identity = Path(path), 0, None

    def _stat(self):
        try:
            s = self.path.stat()
        except FileNotFoundError:
            return None
        return s

    def read_new(self) -> list[Record]:
        s = self._stat()
        if s is None:
            self.offset, self._identity = 0, None
            return []
        identity = (s.st_ino, s.st_dev)
        if identity != self._identity or s.st_size < self.offset:   # replaced (rewritten without stale records)
            self.offset, self._identity = 0, identity
        if s.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        records, used = decode(data)
        self.offset += used
        return records

    def append(self, texts, vectors: np.ndarray, model: dict) -> None:
        """Add one record at the end (the caller holds the cache's lock); a torn tail left by a crash is cut off
        first. A full disk leaves the log as it was."""
        record = encode(texts, vectors, model)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            f.seek(0)
            _, end = decode(f.read())
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

    def rewrite(self, records: list[Record]) -> None:
        """Replace the log atomically with ``records`` (e.g. without another model's stale ones)."""
        if not records:
            self.path.unlink(missing_ok=True)
        else:
            atomic_write(self.path, b"".join(encode(r.texts, r.vectors, r.model) for r in records), durable=True)
        self.offset, self._identity = 0, None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.offset, self._identity = 0, None
