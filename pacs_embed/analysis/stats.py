"""Mean ± std over seeds, and paired bootstrap confidence intervals for gains over a baseline.

Usage::

    summary(res.table)                 # one row per (source, target, method, prompt_set)
    gains(res, baseline="none")        # gain over no translation with a 95% CI
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .text import NO_DESCRIPTION

KEYS = ["source", "target", "method", "description"]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy mean, std (ddof=1) and number of seeds per (source, target, method, description)."""
    g = table.groupby(KEYS, sort=False)["accuracy"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "seeds": g.size()}).reset_index()
    out["accuracy"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(out["mean"], out["std"])]
    return out


def method_means(table: pd.DataFrame) -> pd.DataFrame:
    """Cross-domain accuracy per method and description, averaged over pairs: mean ± std over seeds."""
    cross = table[table["source"] != table["target"]]
    per_seed = cross.groupby(["method", "description", "seed"])["accuracy"].mean()
    g = per_seed.groupby(["method", "description"])
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0)}).reset_index()
    out["accuracy"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(out["mean"], out["std"])]
    return out.sort_values("mean", ascending=False, ignore_index=True)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Gain mean(a − b) and its CI, resampling images (columns); a, b: (n_seeds, n) 0/1 on the same images.

    The per-image differences (averaged over seeds) take few distinct values, so resampling n images
    with replacement is drawing multinomial counts of those values: the same distribution as
    resampling indices, at a fraction of the cost.
    """
    d = (np.asarray(a, float) - np.asarray(b, float)).mean(axis=0)
    if not len(d):
        return 0.0, 0.0, 0.0
    values, counts = np.unique(np.round(d, 12), return_counts=True)
    rng = np.random.default_rng(seed)
    boots = rng.multinomial(len(d), counts / len(d), size=n_boot) @ values / len(d)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(d.mean()), float(lo), float(hi)


def gains(results, baseline: str = "none", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per pair and method: gain over ``baseline`` (same seeds, same images) with a paired bootstrap 95% CI."""
    rows = []
    for (s, t, method, how), hits in results.correct.items():
        base = results.correct.get((s, t, baseline, NO_DESCRIPTION))
        if method == baseline or base is None:
            continue
        if hits.shape != base.shape:  # seed-independent methods are recorded once per seed too
            raise ValueError(f"{method} and {baseline} were scored on different images for {s} -> {t}")
        g, lo, hi = paired_bootstrap(hits, base, n_boot, seed)
        rows.append((s, t, method, how, g, lo, hi))
    return pd.DataFrame(rows, columns=["source", "target", "method", "description", "gain", "ci_low", "ci_high"])


def grid(table: pd.DataFrame, method: str, description: str = NO_DESCRIPTION) -> pd.DataFrame:
    """Source x target 'mean ± std' for one method (diagonal: in-domain hold-out accuracy)."""
    s = summary(table)
    keep = ((s.method == method) & (s.description == description)) | (s.method == "in_domain")
    g = s[keep].pivot(index="source", columns="target", values="accuracy")
    order = list(dict.fromkeys(table.source))
    return g.reindex(index=order, columns=order).fillna("")
