"""The journal of an unfinished extraction: one atomically written .npz per finished batch, beside the cache.

Usage::

    journal = Journal(Path("c.h5"))              # c.h5.journal/
    journal.start({"batch_size": 32, ...}); journal.save(0, embedding, ok, reasons); journal.done()
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import ArgumentError
from ..files import atomic_write


class Journal:
    """Finished batches of an unfinished run, one atomically written .npz per batch."""

    def __init__(self, out: Path):
        self.dir = out.with_name(out.name + ".journal")

    def meta(self) -> dict | None:
        try:
            return json.loads((self.dir / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def start(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "meta.json", json.dumps(meta, indent=1).encode(), durable=True)

    def done(self) -> dict[int, Path]:
        """Finished batches by start index; a damaged shard is named, removed, and its batch redone."""
        out = {}
        for p in sorted(self.dir.glob("batch_*.npz")) if self.dir.is_dir() else []:
            try:
                with np.load(p, allow_pickle=False) as f:
                    if len(f["embedding"]) != len(f["ok"]) or len(f["reasons"]) != len(f["ok"]):
                        raise ArgumentError("arrays of different lengths")
                out[int(p.stem.split("_")[1])] = p
            except Exception as e:  # noqa: BLE001 - truncated, empty, not a zip, ...
                print(f"note: journal shard {p} is damaged ({type(e).__name__}: {e}); its batch will be embedded again")
                p.unlink(missing_ok=True)
        return out

    def save(self, start: int, embedding: np.ndarray, ok: np.ndarray, reasons: list[str]) -> None:
        """One batch (named by its first image), written atomically and durably."""
        buf = io.BytesIO()
        np.savez(buf, embedding=embedding, ok=ok, reasons=np.array(reasons, dtype=str))
        atomic_write(self.dir / f"batch_{start:09d}.npz", buf.getvalue(), durable=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
