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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.std import tqdm   # text bars: an executed notebook keeps the finished bar, not a frozen widget

from ..registry import match
from ..cache import heads_folder
from ..errors import ArgumentError, ArgumentTypeError, PacsEmbedError, UnknownName, add_note
from . import executor
from .arguments import check_c_grid, check_embeddings, check_names, check_seeds, did_you_mean
from .embeddings import Embeddings
from .heads import (C_GRID, HeadBatch, HeadCache, PendingHead, resolve_solver, resolved, shared_products,
                    single_threaded_blas, split)
from .methods import METHODS, Source, base_name, default_methods, make
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
        raise ArgumentError(f"{what}: predict returned {'None' if predicted is None else f'shape {p.shape}'} for {n} "
                         f"images; {fix}")
    if p.dtype.kind == "f" and np.isfinite(p).all() and (p == np.round(p)).all():
        p = p.astype(np.int64)
    if p.dtype.kind not in "iu":
        raise ArgumentError(f"{what}: predict returned {p.dtype} values (e.g. {p[:1].tolist()}), not class indices; {fix}")
    if n and (p.min() < 0 or p.max() >= n_classes):
        raise ArgumentError(f"{what}: predict returned class index {int(p.max() if p.max() >= n_classes else p.min())}; "
                         f"the cache has {n_classes} classes (0..{n_classes - 1}); {fix}")
    return p


def _leave_out(e: Exception) -> str:
    """For a method that failed on the package's own error (a prompt the cache lacks and cannot encode, a model
    that does not match): how to run the others."""
    return ("; leave it out with methods=[...] in Python, --methods on the command line"
            if isinstance(e, PacsEmbedError) else "")


def _source_job(request: "Request", registered: dict, head_cache) -> Results:
    """``evaluate`` of one source domain, in whatever process or machine the executor runs it (the methods travel with
    it: a method registered in a notebook exists in the worker too)."""
    METHODS.update(registered)
    res = _Evaluation(request, head_cache_for(request.emb, head_cache)).results(1, False)
    for m in res.fitted.values():   # pending heads hold this process's batch (locks): sent back as fitted heads
        for name, value in list(vars(m).items()):
            if isinstance(value, PendingHead):
                setattr(m, name, value.resolved())
    return res


def evaluate_many(requests: list["Request"], head_cache=True) -> list[Results]:
    """Each request's Results, every (request, source) one job of the executor (``executor.run``), merged in source
    order: the same table, hits and heads as ``evaluate`` on threads (``tests/test_scale_out.py``). ``study`` hands
    every cache's jobs over at once."""
    jobs, folders = [], []
    for r in requests:
        folder = head_cache_for(r.emb, head_cache).folder
        folders.append(folder)
        registered = {base_name(m): METHODS[base_name(m)] for m in r.methods}
        jobs += [(replace(r, sources=[s]), registered, str(folder) if folder else False) for s in r.sources]
    parts = iter(executor.run(_source_job, jobs))
    return [_merged(r, [next(parts) for _ in r.sources], folder) for r, folder in zip(requests, folders)]


def _merged(request: "Request", parts: list[Results], folder) -> Results:
    table = pd.concat([p.table for p in parts], ignore_index=True)
    table.attrs["domains"] = list(request.emb.domains)
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
    """The identity of the head a fitted method predicts with (0: none), to score those sharing one together; a head
    not fitted yet is its pending head (methods that asked for the same head share it): nothing waits here."""
    head = getattr(method, "head", None)
    return 0 if head is None else id(head)


def _readiness(method) -> tuple:
    """When a fitted method's head is ready: (0, 0) now (fitted, cached, or no head), else (1, its group's work)."""
    head = getattr(method, "head", None)
    return (1, head.work) if isinstance(head, PendingHead) and not head.ready else (0, 0)


def head_cache_for(emb: Embeddings, head_cache) -> HeadCache:
    """True: ``<cache>.heads/`` beside the embedding cache; False/None: memory only; a folder or a HeadCache."""
    if isinstance(head_cache, HeadCache):
        return head_cache
    if head_cache is True:
        return HeadCache(heads_folder(emb.cache) if emb.cache and Path(emb.cache).is_file() else None)
    return HeadCache(head_cache or None)


@dataclass(frozen=True)
class Request:
    """One evaluation, its arguments checked (``request``): what ``evaluate`` runs, here or one job per source."""
    emb: Embeddings
    methods: list
    seeds: list
    text: TextSide
    descriptions: list
    sources: list
    Cs: tuple
    solver: str


def request(emb: Embeddings, methods=None, seeds=range(5), descriptions=None, domain_prompts: dict | None = None,
            n_nouns: int | None = None, text: TextSide | None = None, sources=None, Cs=C_GRID,
            solver: str = "auto") -> Request:
    """``evaluate``'s arguments checked and resolved, before any work (unknown names fail here)."""
    emb = check_embeddings(emb, "evaluate")
    methods = check_names(methods, "methods", "every default method") or default_methods()
    descriptions = check_names(descriptions, "descriptions", "the text side's (paper by default)")
    sources = check_names(sources, "sources", "every domain")
    seeds, Cs, solver = check_seeds(seeds), check_c_grid(Cs), resolve_solver(solver)
    if text is None:
        text = text_side(emb, tuple(descriptions or ("paper",)), domain_prompts, n_nouns)
    elif domain_prompts:
        raise ArgumentError("give domain_prompts or a ready text side, not both")
    text = text_for(emb, text, "evaluate")
    descriptions = list(descriptions or text.descriptions)
    missing = [d for d in descriptions if d not in text.descriptions]
    if missing:
        raise UnknownName(f"the text side has no description(s) {missing}; it has {list(text.descriptions)}")
    for m in methods:
        make(m)  # unknown names fail before any work
    unknown = [s for s in (sources or []) if s not in emb.domains]
    if unknown:
        raise UnknownName(f"unknown source domain(s) {unknown}{did_you_mean(unknown[0], emb.domains)}; the cache's "
                          f"domains are {emb.domains}")
    if len(emb.domains) < 2:
        raise ArgumentError(f"{emb.cache}: cross-domain evaluation needs at least two domains; this cache has "
                            f"{emb.domains}")
    return Request(emb, list(methods), seeds, text, descriptions, list(sources or emb.domains), Cs, solver)


def evaluate(emb: Embeddings, methods=None, seeds=range(5), descriptions=None, domain_prompts: dict | None = None,
             n_nouns: int | None = None, text: TextSide | None = None, sources=None, head_cache=True,
             Cs=C_GRID, solver: str = "auto", workers: int = min(2, os.cpu_count() or 1),
             progress: bool = True) -> Results:
    """Fit every method per (source, seed, description) and score it on every other domain.

    ``methods``: names in METHODS (default: every default method). ``descriptions``: strategies in
    DESCRIPTIONS (default: ``paper``, or every one ``text`` holds). ``domain_prompts``:
    {domain: prompt or [prompts]} replacing the packaged descriptions. ``sources`` limits the source
    domains. ``head_cache``: see ``head_cache_for``. ``solver``: "fast" (numpy), "torch" (the same model on a
    torch device), "sklearn" (scikit-learn, for comparison) or "auto" (torch when CUDA is present, else fast).
    ``workers`` threads fit the methods of (source, seed) jobs side by side (a method must keep its state on
    itself), then the heads they asked for (``heads.HeadBatch``: the seeds of a source that train on the same
    features are fitted together), then score them. Under ``joblib.parallel_config(backend=...)`` of processes or a
    cluster ("loky", "dask", "ray"), each source domain is one job of the executor instead (``executor``), with the
    same results.
    """
    checked = request(emb, methods, seeds, descriptions, domain_prompts, n_nouns, text, sources, Cs, solver)
    if executor.distributed() and len(checked.sources) > 1:   # a joblib backend of the user's: one job per source
        return evaluate_many([checked], head_cache)[0]
    return _Evaluation(checked, head_cache_for(checked.emb, head_cache)).results(workers, progress)


class _Evaluation:
    """One ``evaluate`` call, in steps: methods that ignore the split are fitted and scored once per source; then,
    source by source (the largest first), every method of every seed is fitted (heads only asked for), the heads
    fitted together (``HeadBatch``), every (seed, target) scored, and the source's rows dropped — so only one
    source's transformed copies wait for their heads at a time. Keys are (source, seed, method, description)."""

    def __init__(self, request: Request, cache: HeadCache, rows: dict | None = None):
        """``rows``: the arrays of an earlier evaluation of the same cache ({"targets", "source_rows", "splits"}), kept
        by a caller that evaluates again (the explorer): the same arrays, so their products and digests are reused."""
        emb, methods = request.emb, request.methods
        self.emb, self.text, self.seeds, self.descriptions = emb, request.text, request.seeds, request.descriptions
        self.sources, self.cache, self.Cs, self.solver = request.sources, cache, request.Cs, request.solver
        self.domains = emb.domains
        self.batch = HeadBatch(cache, self.Cs)   # heads are asked for by every method first, then fitted per source
        rows = rows if rows is not None else {}
        self.targets = rows.setdefault("targets", {t: _rows(emb, t) for t in self.domains})
        self.kinds = {name: make(name) for name in methods}   # an instance per method: its seeded / uses_text
        self.source_rows = rows.setdefault("source_rows", {})   # source -> its images and labels: one read-only
        self.splits = rows.setdefault("splits", {})             # copy, shared by its seeds; (source, seed) -> its split
        self.split_free = {}    # (source, method, description) -> a method that ignores the split, fitted once
        self.split_free_hits = {}
        entry = match(emb.domains, emb.classes)
        self.dataset = entry.name if entry is not None else ""   # what a method may tune per dataset (lads)

    def under(self, description: str) -> list:
        """Every domain's ``Description`` under a description strategy (a description-free method: the first)."""
        return self.text.descriptions[description if description != NO_DESCRIPTION else next(iter(self.text.descriptions))]

    def described(self, name: str) -> list[str]:
        """The descriptions a method runs under: every one if it uses text, else none."""
        return self.descriptions if self.kinds[name].uses_text else [NO_DESCRIPTION]

    def source(self, s: str, seed: int, description: str) -> Source:
        if s not in self.source_rows:   # it owns its data: its digest is memoised
            idx = self.emb.in_domain(s)
            x = self.emb.x[idx]
            x.flags.writeable = False
            self.source_rows[s] = (x, self.emb.label[idx])
        if (s, seed) not in self.splits:
            x, y = self.source_rows[s]
            self.splits[(s, seed)] = (x, y, *split(len(x), seed, s))
        domains = self.under(description)
        return Source(*self.splits[(s, seed)], s, seed, domains[self.domains.index(s)], domains,
                      lambda: self.text.class_vectors, len(self.emb.classes), self.text.encode, self.cache, self.Cs,
                      self.solver, self.batch, self.dataset)

    def fit(self, s: str, seed: int, name: str, description: str):
        try:
            fitted = make(name).fit(self.source(s, seed, description))
        except Exception as e:
            add_note(e, f"(method {name!r} failed to fit on source {s!r}, seed {seed}, description {description!r}"
                        f"{_leave_out(e)})")
            raise
        if not callable(getattr(fitted, "predict", None)):
            raise ArgumentTypeError(f"method {name!r}: fit returned {type(fitted).__name__}, not the fitted method; "
                            f"fit must end with `return self`")
        return fitted

    def hits(self, name: str, method, s: str, t: str, description: str) -> np.ndarray:
        """Whether ``method`` labels each image of target ``t`` right."""
        xt, yt = self.targets[t]
        domains = self.under(description)
        try:
            predicted = method.predict(xt, domains[self.domains.index(s)], domains[self.domains.index(t)])
        except Exception as e:
            add_note(e, f"(method {name!r} failed to predict on target {t!r} from source {s!r}, description "
                        f"{description!r}{_leave_out(e)})")
            raise
        return class_indices(predicted, len(yt), len(self.emb.classes), f"method {name!r} on target {t!r}") == yt

    def fit_split_free(self, pool) -> None:
        """Methods that do not depend on the split, fitted once per source on the first seed's split and scored at
        once: they need no head, and a prompt they lack fails before any head is fitted."""
        self.split_free = {(s, name, d): self.fit(s, self.seeds[0], name, d) for s in self.sources
                           for name, kind in self.kinds.items() if not kind.seeded for d in self.described(name)}
        futures = {(s, t, name, d): pool.submit(self.hits, name, m, s, t, d)
                   for (s, name, d), m in self.split_free.items() for t in self.domains}
        self.split_free_hits = {key: f.result() for key, f in futures.items()}

    def fit_job(self, s: str, seed: int):
        """Every method fitted for one (source, seed), and the plain head; heads are only asked for here."""
        src = self.source(s, seed, NO_DESCRIPTION)
        fitted = {(s, seed, name, d): self.fit(s, seed, name, d) if kind.seeded else self.split_free[(s, name, d)]
                  for name, kind in self.kinds.items() for d in self.described(name)}
        return src.fit_head(src.x), fitted

    def score(self, s: str, t: str, fitted: list) -> dict:
        """The fitted methods [(key, method)] of one (source, seed) that share one head, scored on target ``t``:
        {key: hits}. They run one after another, sharing the head's product with the target's images."""
        out = {}
        with shared_products():
            for key, m in fitted:
                name, description = key[2], key[3]
                seeded = self.kinds[name].seeded
                if t != s or not seeded:   # methods that never see source labels are scored on the source too
                    out[key] = (self.hits(name, m, s, t, description) if seeded
                                else self.split_free_hits[(s, t, name, description)])
        return out

    def job_rows(self, s: str, seed: int, plain, fitted: dict, by_target: dict):
        """The results rows of one (source, seed) and its hits, method by method, target by target."""
        plain = resolved(plain)
        rows = [(s, s, "in_domain", NO_DESCRIPTION, seed, plain.holdout_accuracy, len(self.splits[(s, seed)][3]))]
        hits_by = {}
        for (_, _, name, description) in fitted:
            for t in self.domains:
                if (h := by_target[t].get((s, seed, name, description))) is not None:
                    rows.append((s, t, name, description, seed, float(h.mean()), len(h)))
                    hits_by[(s, t, name, description)] = h
        return plain, rows, hits_by

    def run_source(self, s: str, pool, bar) -> dict:
        """Every seed of source ``s``: fitted, its heads flushed, scored on every target; then its rows dropped.
        {(source, seed): (plain head, rows, hits, fitted methods)}."""
        asked = {(s, seed): pool.submit(self.fit_job, s, seed) for seed in self.seeds}
        asked = {job: f.result() for job, f in asked.items()}
        bar.total += len(self.batch)
        bar.refresh()
        fits = self.batch.submit(pool, bar.update)   # the heads not in the head cache, the seeds of the source together
        # every (job, head, target) scored side by side, queued behind the fits: the methods whose heads are ready (or
        # need none) first, those whose heads take longest last, so that no worker idles while a large head is fitted
        scoring = []
        for job, (_, fitted) in asked.items():
            by_head = {}
            for key, m in fitted.items():
                by_head.setdefault(_head_id(m), []).append((key, m))
            for items in by_head.values():
                scoring += [(_readiness(items[0][1]), job, t, items) for t in self.domains]
        futures = [(job, t, pool.submit(self.score, s, t, items))
                   for _, job, t, items in sorted(scoring, key=lambda task: task[0])]
        for f in fits:
            f.result()
        hits = {job: {t: {} for t in self.domains} for job in asked}
        for job, t, f in futures:
            hits[job][t].update(f.result())
        done = {}
        for job, (plain, fitted) in asked.items():
            done[job] = (*self.job_rows(*job, plain, fitted, hits[job]), fitted)
        self.source_rows.pop(s, None)
        for seed in self.seeds:
            self.splits.pop((s, seed), None)
        return done

    def results(self, workers: int, progress: bool) -> Results:
        order = sorted(self.sources, key=lambda s: -len(self.emb.in_domain(s)))   # the largest sources first
        done = {}
        with single_threaded_blas(), ThreadPoolExecutor(max(1, workers)) as pool, \
                tqdm(total=0, desc="fitting heads", unit="head", disable=not progress) as bar:
            self.fit_split_free(pool)
            for i, s in enumerate(order, 1):   # each source's heads are known once its methods are fitted: said so
                bar.set_description(f"fitting heads (source {i} of {len(order)}: {s})")
                done.update(self.run_source(s, pool, bar))
        rows, correct, fitted, heads = [], {}, {}, {}
        for job in ((s, seed) for s in self.sources for seed in self.seeds):   # in job order, whatever order they ran
            plain, job_rows, hits_by, job_fitted = done[job]
            heads[job] = plain
            rows += job_rows
            fitted.update(job_fitted)
            for key, hit in hits_by.items():
                correct.setdefault(key, [None] * len(self.seeds))[self.seeds.index(job[1])] = hit
        table = pd.DataFrame(rows, columns=COLUMNS)
        table.attrs["domains"] = list(self.domains)   # the cache's order, for tables and figures
        return Results(table, {k: np.stack(v) for k, v in correct.items()}, fitted, heads, self.cache)
