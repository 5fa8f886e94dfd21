"""Caches of random vectors shaped like a registered dataset: its real domain and class names and image counts.

For tests, benchmarks and trying the analysis without a GPU: the vectors carry a weak class and domain structure
(so heads learn something), no image files exist, and the model is named ``synthetic/random``, which cannot encode
a prompt — give ``prompts="report"`` to cache every prompt a default report needs.

Usage::

    make_cache("data/bench/DomainNet.h5", "DomainNet")                   # 586,575 x 512
    make_cache("tiny.h5", "OfficeHome", scale=0.01, prompts="report")     # 1% of the images, every prompt cached
    emb = pa.load(make_store("mem.h5", "PACS", scale=0.01, dim=16))        # the same, in memory: no file
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .datasets import Record
from .storage import MemoryStore, write
from .templates import default_prompts
from .registry import registry

MODEL = "synthetic/random"


def make_cache(path, dataset: str, scale: float = 1.0, dim: int = 512, seed: int = 0, prompts: str = "default",
               signal: float = 0.9,
               descriptions=("paper", "ensemble", "nouns"), block: int = 1 << 16) -> Path:
    """Write a cache of ``dataset`` (a registry name) with ``scale`` x its published image count per domain (at least
    one image per class). ``prompts``: "default" (what extraction encodes), "report" (also every prompt of a
    report with ``descriptions``), or "none"."""
    write(path, *_tables(dataset, scale, dim, seed, prompts, signal, descriptions, block))
    return Path(path)


def make_store(name, dataset: str, scale: float = 1.0, dim: int = 512, seed: int = 0, prompts: str = "default",
               signal: float = 0.9, descriptions=("paper", "ensemble", "nouns")) -> MemoryStore:
    """``make_cache``'s cache held in memory (``storage.MemoryStore``; ``pa.load(store)`` reads it): no file is
    written. ``name``: the path it goes by (a prompt log or head cache would sit beside it)."""
    return MemoryStore(name, *_tables(dataset, scale, dim, seed, prompts, signal, descriptions, 1 << 16))


def _tables(dataset, scale, dim, seed, prompts, signal, descriptions, block) -> tuple:
    """(attrs, domains, classes, records, vectors, ok, failures, prompts, prompt vectors) of a synthetic cache."""
    entry = registry()[dataset]
    rng = np.random.default_rng(seed)
    domains, classes = list(entry.domains), list(entry.classes)
    counts = {d: max(len(classes), int(round(n * scale))) for d, n in entry.domains.items()}
    n = sum(counts.values())
    class_dirs = rng.standard_normal((len(classes), dim)).astype(np.float32)
    domain_dirs = rng.standard_normal((len(domains), dim)).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    records, at = [], 0
    for di, d in enumerate(domains):
        labels = np.sort(np.arange(counts[d]) % len(classes))
        for lo in range(0, counts[d], block):
            k = labels[lo:lo + block]
            x[at + lo:at + lo + len(k)] = (signal * class_dirs[k] + 0.6 * domain_dirs[di]
                                           + 2.0 * rng.standard_normal((len(k), dim), dtype=np.float32))
        for i, c in enumerate(labels):
            p = f"{d}/{classes[c]}/{i:07d}.jpg"
            records.append(Record(p, di, int(c), 0, 0, hashlib.sha256(p.encode()).hexdigest()))
        at += counts[d]
    texts = [] if prompts == "none" else default_prompts(domains, classes)
    if prompts == "report":
        from .analysis.text import needed_prompts
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            texts += needed_prompts(domains, classes, descriptions)[1]
    texts = list(dict.fromkeys(texts))
    tv = rng.standard_normal((len(texts), dim)).astype(np.float32)
    attrs = {"model_id": MODEL, "revision": f"seed-{seed}", "dtype": "float32", "device": "none",
             "dataset_name": dataset, "dataset_root": "not recorded", "n_failed": 0,
             "created": "synthetic", "processor": "none", "processor_class": "none"}
    return attrs, domains, classes, records, x, np.ones(n, bool), [], texts, tv
