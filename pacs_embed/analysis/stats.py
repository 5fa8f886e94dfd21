"""Accuracy and gains with intervals that say what they cover.

Three intervals answer three questions (all 95%):

- **a gain, over splits and target images** (``gains``: ``ci_low``/``ci_high``, ``p``, ``holm_excludes_0``;
  ``method_means(..., hits=res.correct)``: ``gain_ci_*``; the report's words): would the gain hold for another
  80/20 split of the source *and* other images of the target domains? Its variance adds the seed part and the
  image part (``gain_interval``). An effect on a few fixed images, the same on every seed, is not significant.
- **over seeds** (``seed_ci_low``/``seed_ci_high``; an accuracy's ``ci_low``/``ci_high``): would the result hold for
  another split, for these target images? Per seed, the gain (or accuracy) averaged over the target images; a
  Student-t interval of their mean, cut to the possible range. The DomainBed-style comparison.
- **over target images** (``image_ci_low``/``image_ci_high``): the paired bootstrap — given these source
  splits, how much does the result depend on which target images were drawn? It ignores split variation.

Methods that do not depend on the split (zero-shot) have no seed variation: "—" instead of "± 0.000".

Usage::

    summary(res.table)                 # one row per (source, target, method, description)
    gains(res, baseline="none")        # gain over no translation, both intervals
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit   # Student-t cdf and quantile (scipy.stats costs ~0.5 s to import)

from . import arguments
from .arguments import check_positive, check_results_table
from .methods import seeded
from .text import NO_DESCRIPTION
from ..errors import ArgumentError

KEYS = ["source", "target", "method", "description"]
LEVEL = 0.95


def seed_interval(per_seed: np.ndarray, level: float = LEVEL, floor: float = 0.0) -> tuple[float, float, float]:
    """Mean of per-seed values and its Student-t interval (seeds as the unit); NaN bounds for < 2 seeds. ``floor``:
    the least standard error (one image's worth, 1/n: seeds that all agree do not make a result exact)."""
    v = np.asarray(per_seed, float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    se = max(float(v.std(ddof=1) / np.sqrt(len(v))), floor)
    half = float(stdtrit(len(v) - 1, 0.5 + level / 2)) * se
    return m, m - half, m + half


def gain_interval(diffs, level: float = LEVEL) -> tuple[float, float, float, float]:
    """A gain, its interval covering both the source split **and** the sampling of target images, and its p-value.

    ``diffs``: one (seeds, images) array of per-image differences (hits − baseline hits) per pair; the gain is their
    mean over pairs of the mean over seeds and images. Its variance is the sum of two parts: over seeds (per seed, the
    gain over every pair and image; their variance / seeds) and over target images (per pair, the seed-averaged
    per-image differences; their variance / images, averaged over pairs as the gain is). The second part counts the
    split noise left in a seed-averaged image once more: the interval is, if anything, conservative. Student-t with
    Welch–Satterthwaite degrees of freedom; the standard error is never below one target image's worth of the mean.
    Returns (gain, low, high, p); NaN bounds and p for < 2 seeds.
    An effect that lives on a few fixed images (the same on every seed) is not called significant because the
    seeds agree: it must hold over the images too."""
    diffs = [np.asarray(d, float) for d in diffs]
    P = len(diffs)
    seeds = diffs[0].shape[0]
    per_seed = np.mean([d.mean(1) for d in diffs], axis=0)           # (seeds,)
    m = float(per_seed.mean())
    if seeds < 2:
        return m, float("nan"), float("nan"), float("nan")
    a = float(per_seed.var(ddof=1)) / seeds
    parts = [(float(d.mean(0).var(ddof=1)) / d.shape[1] if d.shape[1] > 1 else 0.0, d.shape[1]) for d in diffs]
    b = sum(v for v, _ in parts) / P ** 2
    var = a + b
    den = a * a / (seeds - 1) + sum((v / P ** 2) ** 2 / max(n - 1, 1) for v, n in parts)
    df = var * var / den if den > 0 else float(seeds - 1)
    # never narrower than one target image's worth of the mean (seeds and images that all agree do not make a gain
    # exact: another image could differ)
    se = max(var ** 0.5, 1.0 / sum(n for _, n in parts))
    half = float(stdtrit(df, 0.5 + level / 2)) * se
    return m, m - half, m + half, float(2 * stdtr(df, -abs(m) / se))


def p_value(m: float, lo: float, hi: float, k: int, level: float = LEVEL) -> float:
    """Two-sided p-value of "the mean over ``k`` seeds is 0" from its interval [lo, hi] (the Student-t test the
    interval inverts: se = half-width / t quantile)."""
    if k < 2 or not np.isfinite(lo):
        return float("nan")
    se = (hi - lo) / 2 / stdtrit(k - 1, 0.5 + level / 2)
    return float(2 * stdtr(k - 1, -abs(m) / se)) if se > 0 else float(m == 0)


def holm(p: np.ndarray, alpha: float = 1 - LEVEL) -> np.ndarray:
    """Holm's step-down correction: which of the p-values are rejected with the family-wise error at ``alpha``
    (NaN p-values are never rejected). Holm, Scand. J. Statist. 1979."""
    p = np.asarray(p, float)
    order = np.argsort(np.where(np.isfinite(p), p, np.inf))
    m = int(np.isfinite(p).sum())
    out = np.zeros(len(p), bool)
    for rank, i in enumerate(order[:m]):
        if p[i] > alpha / (m - rank):
            break
        out[i] = True
    return out


def _fmt(m, lo, hi, is_seeded) -> str:
    if not is_seeded:
        return f"{m:.3f} —"
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{m:.3f}"


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (source, target, method, description): mean accuracy, std over seeds ("—" when the method
    does not depend on the split) and the number of seeds."""
    g = check_results_table(table, "summary").groupby(KEYS, sort=False)["accuracy"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "seeds": g.size()}).reset_index()
    out["accuracy"] = [f"{m:.3f} ± {s:.3f}" if seeded(meth) and n > 1 else f"{m:.3f} —"
                       for m, s, n, meth in zip(out["mean"], out["std"], out["seeds"], out["method"])]
    return out


def method_means(table: pd.DataFrame, level: float = LEVEL, baseline: str = "none", hits: dict | None = None
                 ) -> pd.DataFrame:
    """Cross-domain accuracy per method and description, averaged over pairs, with its interval over seeds; and its
    gain over ``baseline`` averaged over the same pairs and seeds (``gain``, ``gain_ci_low``/``gain_ci_high``).
    With ``hits`` (``res.correct``) the gain's interval covers the split and the sampling of target images
    (``gain_interval``; ``gain_p`` its p-value), as the report words it; without, it covers the split only (per
    seed, the mean over pairs of the accuracy difference; no narrower than one target image of them all)."""
    table = check_results_table(table, "method_means")
    cross = table[table["source"] != table["target"]]
    per_seed = cross.groupby(["method", "description", "seed"])["accuracy"].mean()
    base = per_seed.xs(baseline, level="method").groupby(level="seed").mean() if baseline in set(cross.method) else None
    images = cross.groupby(["method", "description", "seed"])["n"].sum()
    rows = []
    for (method, description), v in per_seed.groupby(level=["method", "description"]):
        m, lo, hi = seed_interval(v.values, level)
        lo, hi = max(lo, 0.0), min(hi, 1.0)          # an accuracy lies in [0, 1]
        g = glo = ghi = gp = np.nan
        seeds = v.index.get_level_values("seed")
        if base is not None and method != baseline and set(seeds) <= set(base.index):
            diffs = _pair_diffs(hits, method, description, baseline) if hits is not None else None
            if diffs:
                g, glo, ghi, gp = gain_interval(diffs, level)
            else:
                n = int(images[(method, description)].max()) if (method, description) in images else 0
                g, glo, ghi = seed_interval(v.values - base[seeds].values, level, floor=1 / max(n, 1))
                gp = p_value(g, glo, ghi, len(v), level)
            glo, ghi = max(glo, -1.0), min(ghi, 1.0)
        rows.append((method, description, m, lo, hi, len(v), _fmt(m, lo, hi, seeded(method)), g, glo, ghi, gp))
    out = pd.DataFrame(rows, columns=["method", "description", "mean", "ci_low", "ci_high", "seeds", "accuracy",
                                      "gain", "gain_ci_low", "gain_ci_high", "gain_p"])
    return out.sort_values("mean", ascending=False, ignore_index=True)


def _pair_diffs(hits: dict, method: str, description: str, baseline: str) -> list[np.ndarray]:
    """Per cross-domain pair, the (seeds, images) hits of ``method`` minus those of ``baseline`` (under the same
    description where the baseline has one)."""
    out = []
    for (s, t, name, d), h in hits.items():
        if name != method or d != description or s == t:
            continue
        base = hits.get((s, t, baseline, description), hits.get((s, t, baseline, NO_DESCRIPTION)))
        if base is not None and base.shape == h.shape:
            out.append(np.asarray(h, float) - np.asarray(base, float))
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = LEVEL):
    """Gain mean(a − b) and its CI over target images, given these splits; a, b: (n_seeds, n) 0/1 hits.

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


def gains(results, baseline: str = "none", n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """Per pair and method: gain over ``baseline`` on the same images and seeds, with the interval that covers the
    source split and the sampling of target images (``ci_low``, ``ci_high``; ``p`` its p-value, Holm over them in
    ``holm_excludes_0``), the interval over seeds only (``seed_ci_*``, for these target images, as DomainBed-style
    comparisons use) and the paired bootstrap over target images given these splits (``image_ci_*``)."""
    results, n_boot = arguments.check_results(results, "gains"), check_positive(n_boot, "n_boot")
    ran = sorted({key[2] for key in results.correct})
    if baseline not in ran:
        raise ArgumentError(f"gains: baseline {baseline!r} is not in these results; they hold {ran}")
    rows = []
    for (s, t, method, description), hits in results.correct.items():
        # the baseline under the same description (a baseline that uses one), else its description-free results
        base = results.correct.get((s, t, baseline, description), results.correct.get((s, t, baseline, NO_DESCRIPTION)))
        if method == baseline or base is None:
            continue
        if hits.shape != base.shape:
            raise ArgumentError(f"{method} and {baseline} were scored on different images for {s} -> {t}")
        n_images = hits.shape[1]
        # the claim's interval: over the split and the target images (gain_interval)
        g, lo, hi, p = gain_interval([np.asarray(hits, float) - np.asarray(base, float)], level)
        lo, hi = max(lo, -1.0), min(hi, 1.0)             # a gain lies in [-1, 1] (few seeds: t is wide)
        # over seeds only, as DomainBed compares methods (no narrower than one image's worth), for these images
        _, slo, shi = seed_interval(hits.mean(1) - base.mean(1), level, floor=1 / max(n_images, 1))
        slo, shi = max(slo, -1.0), min(shi, 1.0)
        _, ilo, ihi = paired_bootstrap(hits, base, n_boot, seed, level)
        rows.append((s, t, method, description, g, lo, hi, slo, shi, ilo, ihi, len(hits), p))
    out = pd.DataFrame(rows, columns=["source", "target", "method", "description", "gain", "ci_low", "ci_high",
                                      "seed_ci_low", "seed_ci_high", "image_ci_low", "image_ci_high", "seeds", "p"])
    out["holm_excludes_0"] = holm(out["p"].to_numpy(), 1 - level) if len(out) else []
    return out


def grid(table: pd.DataFrame, method: str, description: str | None = None) -> pd.DataFrame:
    """Source x target accuracy for one method (diagonal: in-domain hold-out accuracy of the plain head).
    ``description``: which one, for a method that ran under several (None: the only one it ran under)."""
    from .embeddings import table_domains
    table = check_results_table(table, "grid")
    ran = list(dict.fromkeys(table.loc[table.method == method, "description"]))
    if not ran:
        raise ArgumentError(f"grid: method {method!r} is not in the table; it holds {sorted(set(table.method))}")
    if description is None and len(ran) > 1:
        raise ArgumentError(f"grid: method {method!r} ran under descriptions {ran}; name one, e.g. "
                         f"grid(table, {method!r}, {ran[0]!r})")
    description = ran[0] if description is None else description
    if description not in ran:
        raise ArgumentError(f"grid: method {method!r} did not run under description {description!r}; it ran under {ran}")
    s = summary(table)
    keep = ((s.method == method) & (s.description == description)) | (s.method == "in_domain")
    g = s[keep & ((s.method != "in_domain") | (s.source == s.target))]
    g = g[(g.source != g.target) | (g.method == "in_domain")].pivot(index="source", columns="target", values="accuracy")
    return g.reindex(index=table_domains(table, "source"), columns=table_domains(table, "target")).fillna("")
