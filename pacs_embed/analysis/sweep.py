"""How far to translate: accuracy against the step along Δ, for every source → target pair.

``translate:step=s`` classifies x + s·Δ with the plain source head (s = 1 is the paper's step). Translation is
affine, so one product x·W per (source, seed, target) serves every step: the sweep costs about one ``none``.
Marked on it: the paper's step 1, ``translate_calibrated``'s α (source data only), and the step that would have been
best on each pair — an **oracle**: it reads the target's labels, so it says how much a step could matter, and is
never a method.

Usage::

    sw = pa.sweep(emb, "translate", step=np.linspace(0, 2, 21))
    sw.table                      # source, target, seed, step, accuracy
    sw.summary()                  # per pair: accuracy at step 1, at α, at the oracle step
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ArgumentError
from .embeddings import domain_order
from .evaluation import _rows, evaluate
from .methods import PARAMETERS, base_name
from .text import text_for, text_side

SWEPT = {"translate": "step"}   # the methods a sweep walks, and their parameter
CLOSE = 0.01                    # "within x points": one accuracy point


@dataclass
class Sweep:
    table: pd.DataFrame         # source, target, seed, step, accuracy
    alpha: dict                 # source -> translate_calibrated's α (mean over seeds)
    description: str
    alpha_range: dict = field(default_factory=dict)   # source -> (low, high): the slopes α lies between (mean)
    shared: dict = field(default_factory=dict)        # source -> how much class structure images and prompts share

    def curve(self) -> pd.DataFrame:
        """Mean accuracy over seeds per (source, target, step)."""
        return self.table.groupby(["source", "target", "step"], sort=False).accuracy.mean().reset_index()

    def summary(self) -> pd.DataFrame:
        """Per pair: the accuracy at the paper's step 1, at the calibrated α (nearest step swept), and at the oracle
        step (the best on the target's labels), and how far step 1 is below the oracle."""
        rows = []
        for (s, t), c in self.curve().groupby(["source", "target"], sort=False):
            steps, acc = c.step.to_numpy(), c.accuracy.to_numpy()
            at = lambda v: float(acc[np.argmin(np.abs(steps - v))])   # noqa: E731
            best = int(np.argmax(acc))
            rows.append((s, t, at(1.0), self.alpha.get(s, np.nan), at(self.alpha.get(s, 1.0)), float(steps[best]),
                         float(acc[best])))
        out = pd.DataFrame(rows, columns=["source", "target", "step1", "alpha", "at_alpha", "oracle_step", "oracle"])
        out["step1_below_oracle"] = out.oracle - out.step1
        out["alpha_low"] = [self.alpha_range.get(s, (np.nan, np.nan))[0] for s in out.source]
        out["alpha_high"] = [self.alpha_range.get(s, (np.nan, np.nan))[1] for s in out.source]
        out["shared"] = [self.shared.get(s, np.nan) for s in out.source]
        return out

    def sentence(self) -> str:
        s = self.summary()
        close = int((s.step1_below_oracle <= CLOSE).sum())
        seeds = self.table.seed.nunique()
        return (f"The paper's step 1 is within {CLOSE * 100:.0f} point of the oracle step (the best step on the target's "
                f"own labels: an upper bound, not a method) on {close} of {len(s)} pairs ({seeds} seed"
                f"{'s' if seeds > 1 else ''}); on average it is "
                f"{s.step1_below_oracle.mean() * 100:.1f} points below it, and the calibrated α "
                f"{(s.oracle - s.at_alpha).mean() * 100:.1f} points." + self._identified(s))

    def _identified(self, s: pd.DataFrame) -> str:
        """How far source data pin α down: the range of slopes, and the share of class structure in common."""
        if not self.alpha_range or not np.isfinite(s.alpha_low).any():
            return ""
        return (f" From source data α is only known to lie between {s.alpha_low.mean():.2f} and "
                f"{s.alpha_high.mean():.2f} (mean over sources; the source images and the class prompts share "
                f"{s.shared.mean() * 100:.0f}% of their class structure, and which side holds the rest cannot be told; "
                f"α takes it to be the images', the low end; `translate_calibrated:unshared=text` takes the high end).")


def sweep(emb, method: str = "translate", step=None, seeds=range(3), description: str = "paper", text=None,
          domain_prompts: dict | None = None, head_cache=True, progress: bool = False, sources=None,
          results=None) -> Sweep:
    """Accuracy of ``method`` (``translate``) against its step for every source → target pair and seed (default steps:
    ``PARAMETERS``' range), with ``translate_calibrated``'s α per source; ``sources``: the source domains (default all).
    The heads are the plain ones ``evaluate`` fits (and caches); ``results`` (an ``evaluate`` of these seeds and
    description, e.g. the report's) lends its heads and α instead."""
    if base_name(method) not in SWEPT:
        raise ArgumentError(f"sweep walks {sorted(SWEPT)}; {method!r} is not one")
    param = SWEPT[base_name(method)]
    steps = np.asarray(PARAMETERS[base_name(method)][param][1] if step is None else step, float)
    if steps.ndim != 1 or not len(steps) or not np.isfinite(steps).all():
        raise ArgumentError(f"sweep: {param} must be a list of finite numbers; got {step!r}")
    text = text_side(emb, (description,), domain_prompts) if text is None else text_for(emb, text, "sweep")
    res = results if results is not None and results.heads else evaluate(
        emb, ["translate_calibrated"], seeds=seeds, text=text, descriptions=[description], head_cache=head_cache,
        progress=progress, sources=sources)
    T = text.vectors(description)
    rows, alpha, ranges, shared = [], {}, {}, {}
    wanted = set(seeds)
    for (s, seed), head in res.heads.items():
        if seed not in wanted:
            continue
        si = emb.domains.index(s)
        fitted = res.fitted.get((s, seed, "translate_calibrated", description))
        if fitted is not None:
            alpha.setdefault(s, []).append(fitted.alpha)
            ranges.setdefault(s, []).append(fitted.alpha_range)
            shared.setdefault(s, []).append(fitted.shared)
        for t in emb.domains:
            if t == s:
                continue
            ti = emb.domains.index(t)
            x, y = _rows(emb, t)   # a view of the target's rows where they are contiguous (a cache's are): no copy
            base = head.product(x) + head.b.astype(np.float32)                           # one product ...
            moved = ((T[si] - T[ti]).astype(np.float32) @ head.W.astype(np.float32))     # ... and Δ·W
            for value in steps:
                predicted = head.classes[np.argmax(base + np.float32(value) * moved, axis=1)]
                rows.append((s, t, seed, float(value), float((predicted == y).mean())))
    table = pd.DataFrame(rows, columns=["source", "target", "seed", "step", "accuracy"])
    order = {d: i for i, d in enumerate(domain_order(emb.domains))}
    table = table.sort_values(["source", "target", "seed", "step"], key=lambda c: c.map(order) if c.name in (
        "source", "target") else c, kind="stable", ignore_index=True)
    return Sweep(table, {s: float(np.mean(a)) for s, a in alpha.items()}, description,
                 {s: tuple(np.mean(r, axis=0).tolist()) for s, r in ranges.items()},
                 {s: float(np.mean(v)) for s, v in shared.items()})
