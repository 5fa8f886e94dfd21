"""What checking a cache costs at DomainNet size (586,575 x 512), side by side in one run: the same file read through
``Cache`` (layout and link checks, every table's SHA-256, the vectors' fletcher32 checksums, verified by HDF5 on read)
and read raw with h5py (no check). Prints seconds per step and the difference.

    .venv/bin/python benchmarks/cache_open.py [--cache data/bench/DomainNet.h5] [--rounds 2]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np

from pacs_embed.cache import Cache
from pacs_embed.synthetic import make_cache


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def checked(path):
    c, t_open = timed(lambda: Cache.open(path))
    _, t_index = timed(lambda: c.index)
    _, t_x = timed(lambda: c.image_vectors())
    c.close()
    return t_open, t_index, t_x


def raw(path):
    f, t_open = timed(lambda: h5py.File(path, "r"))
    g = f["images"]
    _, t_index = timed(lambda: [g["path"].asstr()[:], g["sha256"].asstr()[:], g["domain"][:], g["label"][:],
                                g["ok"][:], g["size"][:], g["mtime_ns"][:]])
    _, t_x = timed(lambda: np.asarray(g["embedding"]))
    f.close()
    return t_open, t_index, t_x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="data/bench/DomainNet.h5")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    path = Path(args.cache)
    if not path.is_file():
        print(f"writing {path} (DomainNet-shaped, random vectors) ...", flush=True)
        make_cache(path, "DomainNet")
    print(f"{path}: {path.stat().st_size / 2**30:.2f} GiB")
    print(f"{'round':>5} {'read':>8} {'open s':>8} {'index s':>8} {'vectors s':>10}")
    for r in range(args.rounds):
        for name, fn in (("checked", checked), ("raw", raw)):
            o, i, x = fn(path)
            print(f"{r + 1:>5} {name:>8} {o:8.3f} {i:8.3f} {x:10.3f}", flush=True)


if __name__ == "__main__":
    main()
