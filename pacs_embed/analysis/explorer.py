"""Type a description, watch it move: the live explorer of notebook 4.

``explore(emb)`` holds one source domain's plain heads (cached) and every target's x·W (``heads.kept_products``); an
edit of a domain's description then costs each test-time operator only its (n x K) work per target — no product of
the images with the head is computed again. It shows, per target, the accuracy of every method (mean over seeds), the
change from the last description, and the typed prompts' Sim row (Table 1's measure: mean cosine with each domain's
images). Methods whose heads are trained on the description (``augment``, ``project_out``, ``lads``), and those that
read "{description} of a {class}" prompts (``zeroshot_domain``, ``lads``: a new description is then encoded for every
class, 25 s for DomainNet's 345 on a 2-core CPU), are marked out of date after an edit until ``refit()`` (the panel's
button) fits them again. Methods that do not depend on the descriptions (``none``, ``zeroshot``) keep their row.

Usage::

    ex = pa.explore(emb, source="photo")           # in a notebook: ex.widget() is the panel
    ex.apply(cartoon="a comic strip")              # -> Edit: accuracy, change, similarity, stale, seconds
    ex.preset("ensemble"); ex.refit()

``benchmarks/explorer_speed.py`` times an edit at PACS size and on a DomainNet-shaped cache.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ArgumentError, UnknownName
from .arguments import check_embeddings, check_seeds, did_you_mean
from .embeddings import Embeddings, domain_order, group_means, load
from .evaluation import _Evaluation, head_cache_for, request
from .heads import kept_products
from .methods import default_methods
from .text import NO_DESCRIPTION, text_side

DESCRIPTION = "paper"   # the typed prompts stand in for this description
PRESETS = ("paper", "ensemble", "nouns")


@dataclass
class Edit:
    """What one description shows: ``accuracy`` (method x target, mean over seeds), ``change`` (from the last
    description), ``similarity`` (the typed prompts x every domain's images: mean cosine), ``stale`` (methods whose
    heads were trained on an earlier description: their numbers are the earlier ones), ``seconds`` (this edit)."""
    prompts: dict
    accuracy: pd.DataFrame
    change: pd.DataFrame
    similarity: pd.DataFrame
    stale: list = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """Accuracy with its change, one text cell per (method, target): "0.812 (+0.034)"; out-of-date rows marked."""
        out = self.accuracy.copy().astype(object)
        for m in self.accuracy.index:
            for t in self.accuracy.columns:
                a, d = self.accuracy.loc[m, t], self.change.loc[m, t]
                out.loc[m, t] = f"{a:.3f}" + (f" ({d:+.3f})" if np.isfinite(d) and d != 0 else "")
        out.index = [f"{m} (out of date)" if m in self.stale else m for m in out.index]
        return out


class Explorer:
    """One source domain's methods, re-scored on every target as its domains' descriptions are edited."""
    presets = PRESETS

    def __init__(self, emb, source: str | None = None, seeds=(0,), methods=None, head_cache=True):
        self.emb = check_embeddings(emb, "explore")
        order = domain_order(self.emb.domains)
        self.source = self._checked_source(source or order[0])
        self.seeds = check_seeds(seeds)
        self.methods = list(methods or default_methods())
        self.cache = head_cache_for(self.emb, head_cache)
        self.rows: dict = {}             # the evaluation's target, source and split arrays, the same across edits
        self.products: dict = {}         # so that the plain heads' products with them are kept (kept_products)
        self.image_means = group_means(self.emb.x, self.emb.domain, len(self.emb.domains))
        self.fitted: dict = {}           # (seed, method) -> fitted method of the last applied description
        self.trained: set[str] = set()   # methods whose heads are trained on the description
        self.reads: set[str] = set()     # methods that read "{description} of a {class}" prompts
        self.stale: set[str] = set()
        self.last: Edit | None = None
        self.prompts = self._preset_prompts(DESCRIPTION)
        self.apply(self.prompts, _all=True)

    # -- what a user does ---------------------------------------------------------------------------------------
    def apply(self, prompts: dict | None = None, _all: bool = False, **by_domain) -> Edit:
        """Describe domains anew ({domain: prompt or [prompts]}, or keywords) and re-score; the others keep theirs."""
        new = {**self.prompts, **(prompts or {}), **by_domain}
        unknown = [d for d in new if d not in self.emb.domains]
        if unknown:
            raise UnknownName(f"explore: no domain {unknown[0]!r}{did_you_mean(unknown[0], self.emb.domains)}; the "
                              f"domains are {self.emb.domains}")
        t0 = time.perf_counter()
        run = self._run(new)
        if _all:
            self.reads = set()
        # an edit re-scores the methods that depend on the descriptions and need no refit; the others keep their row
        live = [m for m in self.methods if _all or (m not in self.trained | self.reads and run.kinds[m].uses_text)]
        accuracy = self._score(run, live)
        if _all:
            self.trained = {m for m in self.methods if self._trains_on_text(m)}
            self.stale = set()
        elif new != self.prompts:
            self.stale |= self.trained | self.reads
        return self._edit(new, accuracy, time.perf_counter() - t0)

    def preset(self, description: str) -> Edit:
        """Every domain described as the packaged ``description`` does (``paper``, ``ensemble``, ``nouns``)."""
        return self.apply(self._preset_prompts(description))

    def use_source(self, source: str) -> Edit:
        """Another source domain: its heads fitted (or read from the head cache), every method scored."""
        self.source = self._checked_source(source)
        self.fitted, self.last = {}, None
        self.rows = {"targets": self.rows.get("targets")} if self.rows.get("targets") else {}
        return self.apply(self.prompts, _all=True)

    def refit(self) -> Edit:
        """Fit again the methods whose heads train on the description (out of date after an edit)."""
        return self.apply(self.prompts, _all=True)

    def widget(self):
        """The panel: a text box per domain (Enter applies), presets, the source, a refit button, the results."""
        from .explorer_widget import panel
        return panel(self)

    # -- how --------------------------------------------------------------------------------------------------
    def _checked_source(self, source: str) -> str:
        if source not in self.emb.domains:
            raise UnknownName(f"explore: no source domain {source!r}{did_you_mean(source, self.emb.domains)}; the "
                              f"domains are {self.emb.domains}")
        return source

    def _preset_prompts(self, description: str) -> dict:
        if description not in PRESETS:
            raise ArgumentError(f"explore: preset {description!r}; choose one of {PRESETS}")
        text = text_side(self.emb, (description,))
        return {d.domain: (d.prompts[0] if len(d.prompts) == 1 else list(d.prompts))
                for d in text.descriptions[description]}

    def _run(self, prompts: dict) -> _Evaluation:
        """The evaluation machinery for these descriptions, on the explorer's own target arrays."""
        text = text_side(self.emb, (DESCRIPTION,), domain_prompts=prompts)
        run = _Evaluation(request(self.emb, self.methods, self.seeds, [DESCRIPTION], text=text,
                                  sources=[self.source]), self.cache, self.rows)
        self.text, self.run_ = text, run
        return run

    def _score(self, run: _Evaluation, live: list[str]) -> pd.DataFrame:
        """method x target accuracy, mean over seeds, for ``live`` (fitted anew); the others keep their last row.
        Notes which methods read "{description} of a {class}" prompts (``self.reads``: encoding those for a new
        description is a text-tower pass over every class, so they wait for a refit too)."""
        s, targets = self.source, [t for t in domain_order(self.emb.domains) if t != self.source]
        rows = {}
        with kept_products(self.products):
            for name in live:
                how = DESCRIPTION if run.kinds[name].uses_text else NO_DESCRIPTION
                before = self._unread(run)
                for seed in self.seeds:
                    self.fitted[(seed, name)] = run.fit(s, seed, name, how)
                    rows.setdefault(name, []).append(
                        [run.hits(name, self.fitted[(seed, name)], s, t, how).mean() for t in targets])
                if self._unread(run) != before:
                    self.reads.add(name)
        out = pd.DataFrame({name: np.mean(v, axis=0) for name, v in rows.items()}, index=targets).T
        if self.last is not None:
            kept = self.last.accuracy.loc[[m for m in self.methods if m not in live and m in self.last.accuracy.index]]
            out = pd.concat([out, kept])
        return out.loc[[m for m in self.methods if m in out.index]]

    @staticmethod
    def _unread(run: _Evaluation) -> set:
        """The descriptions whose "{description} of a {class}" vectors are not read yet (``text.OnFirstUse``)."""
        return {(name, i) for name, ds in run.text.descriptions.items() for i, d in enumerate(ds)
                if callable(d.__dict__.get("_class_vectors"))}

    def _trains_on_text(self, name: str) -> bool:
        """Whether a method's head is trained on the descriptions (``Method.trains_on_text``; an operator: whether
        op(x, t, t) moved the source images): it is then refitted only when asked."""
        return any(getattr(self.fitted[(seed, name)], "trains_on_text", False) for seed in self.seeds)

    def _edit(self, prompts: dict, accuracy: pd.DataFrame, seconds: float) -> Edit:
        previous = self.last.accuracy if self.last is not None else accuracy
        change = (accuracy - previous.reindex_like(accuracy)).fillna(0.0)
        edit = Edit(prompts, accuracy, change, self._similarity(), sorted(self.stale), seconds)
        self.prompts, self.last = prompts, edit
        return edit

    def _similarity(self) -> pd.DataFrame:
        """Each domain's description (rows) against every domain's images (columns): the mean cosine, Table 1's Sim
        (images and descriptions unit vectors: the mean cosine is the description · the images' mean)."""
        T = self.text.vectors(DESCRIPTION)
        order = domain_order(self.emb.domains)
        sim = pd.DataFrame(T @ self.image_means.T, index=self.emb.domains, columns=self.emb.domains)
        return sim.loc[order, order]


def explore(emb, source: str | None = None, seeds=(0,), methods=None, head_cache=True) -> Explorer:
    """The live explorer of ``emb``'s descriptions for one source domain (``Explorer``; ``.widget()`` in a
    notebook); ``emb``: loaded embeddings, or a cache's path. ``seeds``: the source splits averaged (one by default:
    an edit stays interactive)."""
    if not isinstance(emb, Embeddings):
        emb = load(emb)
    return Explorer(emb, source, seeds, methods, head_cache)
