"""The one evaluation loop: every source -> target pair, every registered method, every seed.

Each method (``methods.METHODS``) is fitted on a ``Source`` once per (source domain, seed,
description) and scored on all images of every other domain; all methods of a pair are scored on
the same images. Heads are cached on disk beside the embedding cache (``<cache>.heads/``), so a
re-run after a prompt edit refits only the heads whose training features changed.

Usage::

    res = evaluate(emb, seeds=range(5), descriptions=("paper", "nouns"),
                   domain_prompts={"cartoon": "a comic strip"})
    res.table          # source, target, method, description, seed, accuracy, n
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .embeddings import Embeddings
from .heads import C_GRID, HeadCache, split
from .methods import Source, default_methods, make
from .text import NO_DESCRIPTION, TextSide, text_side

COLUMNS = ["source", "target", "method", "description", "seed", "accuracy", "n"]


@dataclass
class Results:
    table: pd.DataFrame     # one row per (source, target, method, description, seed); in_domain rows: target == source
    correct: dict           # (source, target, method, description) -> (n_seeds, n_target) bool, same images for all methods
    fitted: dict            # (source, seed, method, description) -> the fitted method
    heads: dict             # (source, seed) -> the plain head (trained on the images as they are)
    head_cache: HeadCache | None = field(default=None, repr=False)


def head_cache_for(emb: Embeddings, head_cache) -> HeadCache:
    """True: ``<cache>.heads/`` beside the embedding cache; False/None: memory only; a folder or a HeadCache."""
    if isinstance(head_cache, HeadCache):
        return head_cache
    if head_cache is True:
        cache = Path(emb.cache) if emb.cache else None
        return HeadCache(cache.with_name(cache.name + ".heads") if cache and cache.is_file() else None)
    return HeadCache(head_cache or None)


def evaluate(emb: Embeddings, methods=None, seeds=range(5), descriptions=None, domain_prompts: dict | None = None,
             n_nouns: int | None = None, text: TextSide | None = None, sources=None, head_cache=True,
             Cs=C_GRID, solver: str = "fast", progress: bool = True) -> Results:
    """Fit every method per (source, seed, description) and score it on every other domain.

    ``methods``: names in METHODS (default: every default method). ``descriptions``: strategies in
    DESCRIPTIONS (default: ``paper``, or every one ``text`` holds). ``domain_prompts``:
    {domain: prompt or [prompts]} replacing the packaged descriptions. ``sources`` limits the source
    domains. ``head_cache``: see ``head_cache_for``. ``solver="sklearn"`` fits heads with scikit-learn.
    """
    if text is None:
        text = text_side(emb, tuple(descriptions or ("paper",)), domain_prompts, n_nouns)
    elif domain_prompts:
        raise ValueError("give domain_prompts or a ready text side, not both")
    descriptions = list(descriptions or text.descriptions)
    missing = [d for d in descriptions if d not in text.descriptions]
    if missing:
        raise KeyError(f"the text side has no description(s) {missing}; it has {list(text.descriptions)}")
    methods = list(methods or default_methods())
    for m in methods:
        make(m)  # unknown names fail before any work
    seeds, domains = list(seeds), emb.domains
    unknown = [s for s in (sources or []) if s not in domains]
    if unknown:
        raise KeyError(f"unknown source domain(s) {unknown}; the cache's domains are {domains}")
    if len(domains) < 2:
        raise ValueError(f"{emb.cache}: cross-domain evaluation needs at least two domains; this cache has {domains}")
    cache = head_cache_for(emb, head_cache)
    rows, correct, fitted, heads = [], {}, {}, {}
    targets = {t: (emb.x[i], emb.label[i]) for t, i in ((t, emb.in_domain(t)) for t in domains)}

    jobs = [(s, seed) for s in (sources or domains) for seed in seeds]
    for s, seed in tqdm(jobs, desc="fitting methods", unit="source x seed", disable=not progress):
        idx = emb.in_domain(s)
        train, holdout = split(len(idx), seed, s)

        def source(how):
            descs = text.descriptions[how if how != NO_DESCRIPTION else next(iter(text.descriptions))]
            return Source(emb.x[idx], emb.label[idx], train, holdout, s, seed, descs[domains.index(s)], descs,
                          text.class_vectors, len(emb.classes), text.encode, cache, tuple(Cs), solver)

        plain = source(NO_DESCRIPTION).fit_head(emb.x[idx])
        heads[(s, seed)] = plain
        rows.append((s, s, "in_domain", NO_DESCRIPTION, seed, plain.holdout_accuracy, len(holdout)))
        for name in methods:
            proto = make(name)
            for how in (descriptions if proto.uses_text else [NO_DESCRIPTION]):
                key = (s, seed, name, how)
                if not proto.seeded and seed != seeds[0]:
                    fitted[key] = fitted[(s, seeds[0], name, how)]
                else:
                    fitted[key] = make(name).fit(source(how))
                descs = text.descriptions[how if how != NO_DESCRIPTION else next(iter(text.descriptions))]
                for t in domains:
                    if t == s:
                        continue
                    xt, yt = targets[t]
                    hits = np.asarray(fitted[key].predict(xt, descs[domains.index(s)], descs[domains.index(t)])) == yt
                    rows.append((s, t, name, how, seed, float(hits.mean()), len(hits)))
                    correct.setdefault((s, t, name, how), [None] * len(seeds))[seeds.index(seed)] = hits
    table = pd.DataFrame(rows, columns=COLUMNS)
    return Results(table, {k: np.stack(v) for k, v in correct.items()}, fitted, heads, cache)

