"""Cache -> arrays for analysis, with L2 normalisation as an explicit choice.

Usage::

    emb = load("data/embeddings/PACS/openai__clip-vit-base-patch32.h5")   # unit-norm image vectors
    emb.x[emb.domain == emb.domains.index("photo")]
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, UnknownName
from ..cache import NOT_RECORDED, Cache, CacheError
from ..registry import match


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x / ||x|| along ``axis`` (zero vectors stay zero)."""
    x = np.asarray(x)
    if x.ndim == 0 or not np.issubdtype(x.dtype, np.floating):
        x = np.asarray(x, np.float64)
    last = np.moveaxis(x, axis, -1)
    norm = np.expand_dims(np.sqrt(np.einsum("...i,...i->...", last, last)), axis)
    norm[norm == 0] = 1
    return x / norm


def group_means(x: np.ndarray, group: np.ndarray, n_groups: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(n_groups, D) float64: the mean of the rows of ``x`` in each group (optionally each row scaled by
    ``weights``), by one (n_groups x n) @ (n x D) product in x's precision: no per-group copy of the rows (at
    DomainNet size a copy per class costs seconds). A group with no rows has a zero mean."""
    x = np.asarray(x)
    group = np.asarray(group)
    counts = np.bincount(group, minlength=n_groups).astype(np.float64)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    onehot = np.zeros((n_groups, len(group)), dtype)
    onehot[group, np.arange(len(group))] = 1 if weights is None else weights
    sums = (onehot @ x).astype(np.float64)
    return sums / np.maximum(counts, 1)[:, None]


@dataclass
class Embeddings:
    """Image embeddings of the readable images of a cache, with their labels."""
    x: np.ndarray            # (N, D) float32; L2-normalised unless loaded with normalize=False
    label: np.ndarray        # (N,) class index
    domain: np.ndarray       # (N,) domain index
    domains: list[str]
    classes: list[str]
    paths: list[str]
    cache: Cache | None = None   # the open cache they came from (prompt vectors are read through it); None: in memory
    n_failed: int = 0        # images left out because extraction could not read them

    def __post_init__(self):
        """Arrays that agree (one label, domain and path — or no paths — per row; indices within domains and classes)."""
        x, n = np.asarray(self.x), len(self.x)
        if x.ndim != 2 or np.shape(self.label) != (n,) or np.shape(self.domain) != (n,) or len(self.paths) not in (0, n):
            raise ArgumentError(f"Embeddings: x must be (n, D) with one label, domain and path per row; got x {x.shape}, "
                             f"label {np.shape(self.label)}, domain {np.shape(self.domain)}, {len(self.paths)} paths")
        for what, idx, names in (("domain", self.domain, self.domains), ("label", self.label, self.classes)):
            if n and (np.min(idx) < 0 or np.max(idx) >= len(names)):
                raise ArgumentError(f"Embeddings: {what} indices must lie in [0, {len(names)}) ({len(names)} names); "
                                 f"they run from {np.min(idx)} to {np.max(idx)}")

    def in_domain(self, name: str) -> np.ndarray:
        """Row indices of the images of domain ``name``."""
        if name not in self.domains:
            raise UnknownName(f"domain {name!r} is not in {self.domains}")
        return np.flatnonzero(self.domain == self.domains.index(name))


def domain_order(domains, classes=None) -> list[str]:
    """The one order every table and figure uses: the dataset's display order (``registry.match``: the paper's
    for PACS) when its domains are all of one registered dataset's, else the cache's order."""
    domains = list(domains)
    entry = match(domains, classes) if classes is not None else _by_domains(domains)
    return entry.order(domains) if entry is not None and set(domains) == set(entry.domains) else domains


def _by_domains(domains):
    """The registered dataset that has exactly these domains (results tables do not carry the classes)."""
    from ..registry import registry
    return next((e for e in registry().values() if set(e.domains) == set(domains)), None)


def table_domains(table, column: str) -> list[str]:
    """The domains in a results table's ``column`` ("source" or "target"), in the one order: the cache's
    (``evaluate`` keeps it in ``table.attrs["domains"]``), then any other in order of appearance."""
    present = list(dict.fromkeys(table[column]))
    known = [d for d in table.attrs.get("domains", []) if d in present]
    return domain_order(known + [d for d in present if d not in known])


class StaleCacheWarning(UserWarning):
    """The dataset files changed since the cache was made."""


def dataset_status(cache) -> str:
    """'unchanged', 'CHANGED since extraction: ...', or why it could not be checked."""
    cache = Cache.open(cache)
    root = cache.attrs["dataset_root"]
    if root == NOT_RECORDED:
        return "not checked (the cache does not record its dataset folder)"
    if not Path(root).is_dir():
        return f"not checked (dataset folder {root} is not on this machine)"
    changes = cache.changes(root)
    return f"CHANGED since extraction:\n{changes.summary()}" if changes else "unchanged"


def load(cache, normalize: bool = True, check: bool = True) -> Embeddings:
    """Read a cache's image embeddings; ``normalize`` L2-normalises each row (as CLIP's cosine does).

    Images that failed extraction are left out, and counted in ``n_failed``. With ``check``, the
    dataset files (where present) are compared with those extracted, and a StaleCacheWarning says
    exactly what changed.
    """
    if isinstance(cache, Embeddings):
        raise ArgumentTypeError(f"these embeddings are already loaded: load and report take the cache path "
                        f"({str(cache.cache)!r}); the analysis functions take the loaded embeddings")
    cache = Cache.open(cache)   # checked once; every later read goes through it
    try:
        return _read(cache, normalize, check)
    finally:
        cache.close()   # the analysis needs the file no more: one open per load (a later read opens it again)


def _read(cache: Cache, normalize: bool, check: bool) -> Embeddings:
    a = cache.index
    if check:
        status = dataset_status(cache)
        if status.startswith("CHANGED"):
            warnings.warn(f"{cache}: dataset {status}\nRe-run `pacs-embed extract`.", StaleCacheWarning, stacklevel=3)
    ok = a["ok"]
    x = np.asarray(cache.image_vectors(ok), np.float32)   # float32 however it was stored (as the docstring says)
    paths = [p for p, keep in zip(a["path"], ok) if keep]
    norm = np.sqrt(np.einsum("nd,nd->n", x, x, dtype=np.float64))   # one pass: a NaN or inf makes the norm one
    bad = np.flatnonzero(~np.isfinite(norm))
    if len(bad):
        raise CacheError(f"{cache}: {len(bad)} image embedding(s) are not finite (NaN or inf), e.g. "
                         f"{', '.join(paths[i] for i in bad[:3])}; no analysis can use them. Re-run `pacs-embed extract` "
                         f"for this cache: it encodes them again and records any still not finite as failures "
                         f"(--dtype float32 avoids a float16 overflow).")
    zero = np.flatnonzero(norm == 0)   # all finite by now: the rows with no direction
    if len(zero):   # no direction, so no cosine: normalised it would stay zero and be scored as if it were an image
        raise CacheError(f"{cache}: {len(zero)} image embedding(s) marked readable (/images/ok) are all zeros, e.g. "
                         f"{', '.join(paths[i] for i in zero[:3])}; a CLIP embedding never is. If the tool that wrote "
                         f"the cache stores failed images so, mark them failed (ok False), or re-run `pacs-embed extract`.")
    domain, domains = a["domain"][ok], list(cache.domains)
    empty = [d for i, d in enumerate(domains) if not (domain == i).any()]
    if empty:   # every image of the domain failed extraction: nothing to train or score on
        warnings.warn(f"{cache}: domain(s) {empty} have no readable images (see `pacs-embed info {cache}`); they are "
                      f"left out of the analysis", stacklevel=3)
        keep = [i for i, d in enumerate(domains) if d not in empty]
        domain = np.searchsorted(keep, domain).astype(domain.dtype)
        domains = [domains[i] for i in keep]
        if not domains:
            raise CacheError(f"{cache}: no image could be read; there is nothing to analyse")
    cache.prompts   # the prompt table, read now while the file is open
    if normalize:   # in place: x is this function's own array (a DomainNet-size copy costs seconds)
        x /= norm.astype(np.float32)[:, None]
    return Embeddings(x, a["label"][ok], domain, domains,
                      list(cache.classes), paths, cache, int((~ok).sum()))
