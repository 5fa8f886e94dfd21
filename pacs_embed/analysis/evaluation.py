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

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.std import tqdm   # text bars: an executed notebook keeps the finished bar, not a frozen widget

from ..cache import heads_folder
from ..errors import PacsEmbedError, add_note
from .arguments import c_grid, did_you_mean, embeddings, names, seed_list
from .embeddings import Embeddings
from .heads import (C_GRID, HeadBatch, HeadCache, PendingHead, resolve_solver, resolved, shared_products,
                    single_threaded_blas, split)
from .methods import METHODS, Source, default_methods, make
from .text import NO_DESCRIPTION, TextSide, text_for, text_side

COLUMNS = ["source", "target", "method", "description", "seed", "accuracy", "n"]


@dataclass
class Results:
    table: pd.DataFrame     # one row per (source, target, method, description, seed); target == source: the plain
                            # head's hold-out accuracy ("in_domain"), or a seed-independent method on the source
    correct: dict           # (source, target, method, description) -> (n_seeds, n_target) bool, same images for all methods
    fitted: dict            # (source, seed, method, description) -> the fitted method
    heads: dict             # (source, seed) -> the plain head (trained on the images as they are)
    head_cache: HeadCache | None = field(default=None, repr=False)


def class_indices(predicted, n: int, n_classes: int, what: str) -> np.ndarray:
    """``predicted`` checked to be what ``Method.predict`` must return: one class index in [0, n_classes) per
    image; anything else (scores, class names, a missing return) is an error naming ``what``."""
    p = np.asarray(predicted)
    fix = "predict must return one class index per image (e.g. scores.argmax(1))"
    if p.shape != (n,):
        raise ValueError(f"{what}: predict returned {'None' if predicted is None else f'shape {p.shape}'} for {n} "
                         f"images; {fix}")
    if p.dtype.kind == "f" and np.isfinite(p).all() and (p == np.round(p)).all():
        p = p.astype(np.int64)
    if p.dtype.kind not in "iu":
        raise ValueError(f"{what}: predict returned {p.dtype} values (e.g. {p[:1].tolist()}), not class indices; {fix}")
    if n and (p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"{what}: predict returned class index {int(p.max() if p.max() >= n_classes else p.min())}; "
                         f"the cache has {n_classes} classes (0..{n_classes - 1}); {fix}")
    return p


def _leave_out(e: Exception) -> str:
    """For a method that failed on the package's own error (a prompt the cache lacks and cannot encode, a model
    that does not match): how to run the others."""
    return ("; leave it out with methods=[...] in Python, --methods on the command line"
            if isinstance(e, PacsEmbedError) else "")


def _distributed() -> bool:
    """Whether the user chose a joblib backend (``joblib.parallel_config(backend="loky" | "dask" | "ray" ...)``):
    then ``evaluate`` hands one job per source domain to it; else (no choice, or threads) it runs as threads here."""
    try:
        from joblib._parallel_backends import SequentialBackend, ThreadingBackend
        from joblib.parallel import get_active_backend
    except ImportError:
        return False
    backend, _ = get_active_backend(prefer="threads")
    return not isinstance(backend, (ThreadingBackend, SequentialBackend))


def _source_job(emb, registered, methods, seeds, text, descriptions, source, head_cache, Cs, solver) -> Results:
    """``evaluate`` of one source domain, in whatever process or machine joblib runs it (the methods travel with
    it: a method registered in a notebook exists in the worker too)."""
    METHODS.update(registered)
    res = evaluate(emb, methods, seeds, descriptions, text=text, sources=[source], head_cache=head_cache, Cs=Cs,
                   solver=solver, workers=1, progress=False, _local=True)
    for m in res.fitted.values():   # pending heads hold this process's batch (locks): sent back as fitted heads
        for name, value in list(vars(m).items()):
            if isinstance(value, PendingHead):
                setattr(m, name, value.resolved())
    return res


def _by_source(emb, methods, seeds, text, descriptions, sources, head_cache, Cs, solver) -> Results:
    """One joblib job per source (its seeds' heads are still fitted together), merged in source order: the same
    table, hits and heads as the threaded path (``tests/test_scale_out.py``)."""
    from joblib import Parallel, delayed
    folder = head_cache.folder if isinstance(head_cache, HeadCache) else head_cache_for(emb, head_cache).folder
    spec = str(folder) if folder else False
    registered = {m: METHODS[m] for m in methods}
    parts = Parallel()(delayed(_source_job)(emb, registered, methods, seeds, text, descriptions, s, spec, Cs, solver)
                       for s in sources)
    table = pd.concat([p.table for p in parts], ignore_index=True)
    table.attrs["domains"] = list(emb.domains)
    merged = HeadCache(folder)
    merged.fits, merged.hits = sum(p.head_cache.fits for p in parts), sum(p.head_cache.hits for p in parts)
    out = Results(table, {}, {}, {}, merged)
    for p in parts:
        out.correct.update(p.correct)
        out.fitted.update(p.fitted)
        out.heads.update(p.heads)
    return out


def _rows(emb: Embeddings, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a domain, read-only: a view where its rows are contiguous (a cache's are: no copy of
    every image), else a copy."""
    i = emb.in_domain(domain)
    x, y = ((emb.x[i[0]:i[-1] + 1], emb.label[i[0]:i[-1] + 1]) if len(i) and i[-1] - i[0] + 1 == len(i)
            else (emb.x[i], emb.label[i]))
    x, y = x.view(), y.view()
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _head_id(method) -> int:
    """The identity of the head a fitted method predicts with (0: none), to score those sharing one together."""
    head = getattr(method, "head", None)
    return 0 if head is None else id(resolved(head))


def head_cache_for(emb: Embeddings, head_cache) -> HeadCache:
    """True: ``<cache>.heads/`` beside the embedding cache; False/None: memory only; a folder or a HeadCache."""
    if isinstance(head_cache, HeadCache):
        return head_cache
    if head_cache is True:
        return HeadCache(heads_folder(emb.cache) if emb.cache and Path(emb.cache).is_file() else None)
    return HeadCache(head_cache or None)


def evaluate(emb: Embeddings, methods=None, seeds=range(5), descriptions=None, domain_prompts: dict | None = None,
             n_nouns: int | None = None, text: TextSide | None = None, sources=None, head_cache=True,
             Cs=C_GRID, solver: str = "auto", workers: int = min(2, os.cpu_count() or 1),
             progress: bool = True, _local: bool = False) -> Results:
    """Fit every method per (source, seed, description) and score it on every other domain.

    ``methods``: names in METHODS (default: every default method). ``descriptions``: strategies in
    DESCRIPTIONS (default: ``paper``, or every one ``text`` holds). ``domain_prompts``:
    {domain: prompt or [prompts]} replacing the packaged descriptions. ``sources`` limits the source
    domains. ``head_cache``: see ``head_cache_for``. ``solver``: "fast" (numpy), "torch" (the same model on a
    torch device), "sklearn" (scikit-learn, for comparison) or "auto" (torch when CUDA is present, else fast).
    ``workers`` threads fit the methods of (source, seed) jobs side by side (a method must keep its state on
    itself), then the heads they asked for (``heads.HeadBatch``: the seeds of a source that train on the same
    features are fitted together), then score them. Under ``joblib.parallel_config(backend=...)`` of processes or a
    cluster ("loky", "dask", "ray"), each source domain is one joblib job instead, with the same results.
    """
    emb = embeddings(emb, "evaluate")
    methods = names(methods, "methods", "every default method")
    descriptions = names(descriptions, "descriptions", "the text side's (paper by default)")
    sources = names(sources, "sources", "every domain")
    seeds, Cs = seed_list(seeds), c_grid(Cs)
    solver = resolve_solver(solver)
    if text is None:
        text = text_side(emb, tuple(descriptions or ("paper",)), domain_prompts, n_nouns)
    elif domain_prompts:
        raise ValueError("give domain_prompts or a ready text side, not both")
    text = text_for(emb, text, "evaluate")
    descriptions = list(descriptions or text.descriptions)
    missing = [d for d in descriptions if d not in text.descriptions]
    if missing:
        raise KeyError(f"the text side has no description(s) {missing}; it has {list(text.descriptions)}")
    methods = methods or default_methods()
    for m in methods:
        make(m)  # unknown names fail before any work
    if not _local and _distributed() and len(sources or emb.domains) > 1:   # a joblib backend of the user's: one job per source
        return _by_source(emb, methods, seeds, text, descriptions, sources or list(emb.domains), head_cache, Cs, solver)
    domains = emb.domains
    unknown = [s for s in (sources or []) if s not in domains]
    if unknown:
        raise KeyError(f"unknown source domain(s) {unknown}{did_you_mean(unknown[0], domains)}; the cache's domains "
                       f"are {domains}")
    if len(domains) < 2:
        raise ValueError(f"{emb.cache}: cross-domain evaluation needs at least two domains; this cache has {domains}")
    cache = head_cache_for(emb, head_cache)
    batch = HeadBatch(cache, Cs)   # heads are asked for by every method first, then fitted together per source
    targets = {t: _rows(emb, t) for t in domains}
    protos = {name: make(name) for name in methods}

    def descs(how):
        return text.descriptions[how if how != NO_DESCRIPTION else next(iter(text.descriptions))]

    rows_of = {}   # source -> its images and labels
    data = {}      # (source, seed) -> its images, labels and split: made once, shared (read-only) by every method

    def source(s, seed, how):
        if s not in rows_of:   # one read-only copy of a source's rows (it owns its data: its digest is memoised)
            idx = emb.in_domain(s)
            x = emb.x[idx]
            x.flags.writeable = False
            rows_of[s] = (x, emb.label[idx])
        if (s, seed) not in data:   # ... serves every seed of that source
            x, y = rows_of[s]
            data[(s, seed)] = (x, y, *split(len(x), seed, s))
        return Source(*data[(s, seed)], s, seed, descs(how)[domains.index(s)], descs(how),
                      lambda: text.class_vectors, len(emb.classes), text.encode, cache, Cs, solver, batch)

    def fit(s, seed, name, how):
        try:
            fitted = make(name).fit(source(s, seed, how))
        except Exception as e:
            add_note(e, f"(method {name!r} failed to fit on source {s!r}, seed {seed}, description {how!r}{_leave_out(e)})")
            raise
        if not callable(getattr(fitted, "predict", None)):
            raise TypeError(f"method {name!r}: fit returned {type(fitted).__name__}, not the fitted method; "
                            f"fit must end with `return self`")
        return fitted

    def hits(name, m, s, t, how):
        xt, yt = targets[t]
        try:
            predicted = m.predict(xt, descs(how)[domains.index(s)], descs(how)[domains.index(t)])
        except Exception as e:
            add_note(e, f"(method {name!r} failed to predict on target {t!r} from source {s!r}, description {how!r}"
                        f"{_leave_out(e)})")
            raise
        return class_indices(predicted, len(yt), len(emb.classes), f"method {name!r} on target {t!r}") == yt

    def fit_job(s, seed):
        """Fit every method for one (source, seed); their heads are only asked for here (fitted in the flush)."""
        src = source(s, seed, NO_DESCRIPTION)
        fitted = {(s, seed, name, how): once[(s, name, how)] if not p.seeded else fit(s, seed, name, how)
                  for name, p in protos.items() for how in (descriptions if p.uses_text else [NO_DESCRIPTION])}
        return src.fit_head(src.x), fitted

    def score(s, t, items) -> dict:
        """The fitted methods ``items`` [(key, method)] of one (source, seed) scored on target ``t``: {key: hits}.
        Methods that share a head run one after another, sharing its product with the target's images."""
        out = {}
        with shared_products():
            for key, m in sorted(items, key=lambda item: _head_id(item[1])):
                name, how = key[2], key[3]
                p = protos[name]
                if t != s or not p.seeded:   # methods that never see source labels are scored on the source too
                    out[key] = hits(name, m, s, t, how) if p.seeded else once_hits[(s, t, name, how)]
        return out

    def job_rows(s, seed, plain, methods, by_target):
        """The results rows of one (source, seed) and its hits, method by method, target by target."""
        plain = resolved(plain)
        rows = [(s, s, "in_domain", NO_DESCRIPTION, seed, plain.holdout_accuracy, len(data[(s, seed)][3]))]
        hits_by = {}
        for (_, _, name, how) in methods:
            for t in domains:
                if (h := by_target[t].get((s, seed, name, how))) is not None:
                    rows.append((s, t, name, how, seed, float(h.mean()), len(h)))
                    hits_by[(s, t, name, how)] = h
        return plain, rows, hits_by

    order = sorted(sources or domains, key=lambda s: -len(emb.in_domain(s)))   # the largest sources first
    rows, correct, fitted, heads = [], {}, {}, {}
    done = {}   # (source, seed) -> (plain head, rows, hits)
    with single_threaded_blas(), ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=0, desc="fitting heads", unit="head", disable=not progress) as bar:
        # methods that do not depend on the split are fitted once per source, on the first seed's split
        once = {(s, name, how): fit(s, seeds[0], name, how) for s in (sources or domains) for name, p in protos.items()
                if not p.seeded for how in (descriptions if p.uses_text else [NO_DESCRIPTION])}
        # scored before any head is fitted: they need no head, and a prompt they lack fails at once
        once_hits = {(s, t, name, how): pool.submit(hits, name, m, s, t, how)
                     for (s, name, how), m in once.items() for t in domains}
        once_hits = {key: f.result() for key, f in once_hits.items()}
        for s in order:   # source by source: only one source's transformed copies wait for their heads at a time
            asked = {(s, seed): pool.submit(fit_job, s, seed) for seed in seeds}
            asked = {j: f.result() for j, f in asked.items()}
            bar.total += len(batch)
            bar.refresh()
            batch.flush(pool, bar.update)   # the heads not in the head cache, the seeds of the source together
            # every (job, target) scored side by side (one job alone still uses every worker)
            scoring = {j: {t: pool.submit(score, s, t, list(asked[j][1].items())) for t in domains} for j in asked}
            for j, by_target in scoring.items():
                by_target = {t: f.result() for t, f in by_target.items()}
                done[j] = job_rows(*j, asked[j][0], asked[j][1], by_target)
                fitted.update(asked[j][1])
            rows_of.pop(s, None)   # this source's rows and splits are no longer needed
            for seed in seeds:
                data.pop((s, seed), None)
    for s in (sources or domains):   # in job order, whatever order they ran in
        for seed in seeds:
            plain, new_rows, hits_by = done[(s, seed)]
            heads[(s, seed)] = plain
            rows += new_rows
            for key, hit in hits_by.items():
                correct.setdefault(key, [None] * len(seeds))[seeds.index(seed)] = hit
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs["domains"] = list(domains)   # the cache's order, for tables and figures
    return Results(table, {k: np.stack(v) for k, v in correct.items()}, fitted, heads, cache)
