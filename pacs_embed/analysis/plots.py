"""Figures (matplotlib + seaborn); ``save`` writes each as PNG and PDF.

Every figure uses one domain order (``domain_order``: the paper's for PACS) and says on its face
what its colours, diagonals and error bars are.

Usage::

    fig = table1_heatmap(pa.table1(emb)); save(fig, "figures", "table1")
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .arguments import embeddings, results_table
from .embeddings import Embeddings, domain_order, group_means, table_domains
from .stats import seeded
from .text import NO_DESCRIPTION, TextSide


# seaborn's "colorblind" palette, as data: seaborn (and the scipy.stats it imports, ~0.8 s) is loaded only for
# Table 1's heatmap
COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9"]


def palette(name: str, n: int) -> list[tuple]:
    """``n`` colours of the qualitative palette ``name`` (a matplotlib colormap such as "tab10", or "colorblind"),
    repeated when ``n`` exceeds it: seaborn's ``color_palette(name, n)``."""
    base = COLORBLIND if name == "colorblind" else matplotlib.colormaps[name].colors
    return [matplotlib.colors.to_rgb(base[i % len(base)]) for i in range(n)]


def save(fig, folder, name: str) -> list[Path]:
    """Write ``folder/name.png`` and ``folder/name.pdf``, cropped to what is drawn; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf")]
    bbox = "tight"   # measured once for both files where the canvas can (savefig measures it per file)
    if hasattr(fig.canvas, "get_renderer"):
        bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
    for p in paths:
        fig.savefig(p, bbox_inches=bbox, dpi=150)
    return paths


def _under(df: pd.DataFrame, description: str, what: str, rows: str = "results") -> pd.DataFrame:
    """The rows of ``df`` under ``description`` and those of description-free methods; a description the
    rows do not hold is an error (the plot would show the description-free methods alone under its name)."""
    described = sorted(set(df.description) - {NO_DESCRIPTION})
    if described and description not in described:
        raise ValueError(f"{what}: no {rows} under description {description!r}; these hold {described}")
    return df[df.description.isin([description, NO_DESCRIPTION])]


def table1_heatmap(tables: dict[str, pd.DataFrame]):
    """Reproduced Table 1 beside the paper's on one shared colour scale; their difference on a diverging
    scale centred at 0."""
    if not isinstance(tables, dict) or "reproduced" not in tables:
        raise TypeError(f"table1_heatmap takes the tables of pa.table1(emb) (got {type(tables).__name__})")
    names = [n for n in ("reproduced", "paper", "difference") if n in tables and not tables[n].empty]
    shared = [tables[n] for n in ("reproduced", "paper") if n in names]
    lo = min(float(np.nanmin(t.values)) for t in shared)
    hi = max(float(np.nanmax(t.values)) for t in shared)
    rows, cols = tables["reproduced"].shape
    width = max(5.4, 1.6 + 0.85 * cols)   # room for every annotated cell, however many domains
    fig, axes = plt.subplots(1, len(names), figsize=(width * len(names), max(4.0, 1.5 + 0.45 * rows)), squeeze=False)
    for ax, name in zip(axes[0], names):
        t = tables[name]
        if name == "difference":
            lim = max(float(np.nanmax(np.abs(t.values))), 1e-6)
            kw = dict(cmap="RdBu_r", center=0, vmin=-lim, vmax=lim)
        else:
            kw = dict(cmap="viridis", vmin=lo, vmax=hi)
        import seaborn as sns
        sns.heatmap(t, annot=t.shape[1] <= 16, fmt=".3f", cbar=True, ax=ax, cbar_kws={"shrink": 0.8}, **kw)
        ax.set_title({"reproduced": "this cache", "paper": "paper (Table 1)",
                      "difference": "this − paper (own scale, 0 = white)"}[name])
        ax.set_xlabel("image domain")
        ax.tick_params(axis="y", labelrotation=0)
        if sum(len(str(c)) for c in t.columns) > 6 * len(t.columns):   # long names: slanted, not overlapping
            ax.set_xticklabels(ax.get_xticklabels(), rotation=30, ha="right")
        ax.set_ylabel("prompt" if ax is axes[0][0] else "")
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    model = tables["reproduced"].attrs.get("model", "a model not recorded")
    fig.suptitle("Sim(prompt, domain): mean cosine similarity — 'this cache' and 'paper' share one colour scale\n"
                 f"this cache: {model}; the paper does not name its CLIP model, so differences also reflect the model"
                 if "paper" in names else "Sim(prompt, domain): mean cosine similarity\n(not PACS: no paper values to compare)")
    fig.tight_layout()
    return fig


def accuracy_grid(table: pd.DataFrame, description: str = "paper", methods=None):
    """Source x target mean accuracy per method, one shared 0-1 scale. Diagonal: the plain head's in-domain
    accuracy on the source hold-out; for seed-independent (zero-shot) methods, their own accuracy on
    the source domain."""
    table = results_table(table, "accuracy_grid")
    t = _under(table, description, "accuracy_grid")
    absent = [m for m in methods or [] if m not in set(t.method)]
    if absent:
        raise ValueError(f"accuracy_grid: method(s) {absent} are not in the table under {description!r}; it holds "
                         f"{sorted(set(t.method) - {'in_domain'})}")
    methods = methods or [m for m in dict.fromkeys(t.method) if m != "in_domain"]
    sources = table_domains(table, "source")   # rows; columns: every target (all domains, also when only some
    targets = table_domains(table, "target")   # were sources)
    head_diag = table[table.method == "in_domain"].groupby("source").accuracy.mean()
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    cell = min(3.1 / max(len(targets), 1), 3.6 / max(len(sources), 1))   # inches: a panel fits in 3.1 x 3.6
    height = cell * len(sources)                     # a panel's grid; each takes ~0.75 in of titles above it
    total = rows * height + (rows - 1) * 0.75 + 2.15   # + suptitle and first titles (1.05 in), target names (1.1 in)
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols, total), squeeze=False)
    fig.subplots_adjust(left=0.09, right=0.98, top=1 - 1.05 / total, bottom=1.1 / total, wspace=0.15,
                        hspace=0.75 / height)
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, methods):
        mine = t[t.method == m]
        grid = mine.groupby(["source", "target"]).accuracy.mean().unstack().reindex(index=sources, columns=targets)
        head_diagonal = seeded(m) or mine[mine.source == mine.target].empty
        for d in sources:
            if head_diagonal and d in targets:
                grid.loc[d, d] = head_diag.get(d, np.nan)
        _annotated_grid(ax, grid.values.astype(float), sources, targets)
        ax.set_title(f"{m}\n(diagonal: {'head on source hold-out' if head_diagonal else 'its accuracy on the source'})",
                     fontsize=9)
    # every panel has the same rows and columns: domain names on the outer panels only (less text to read, and
    # to draw — text is most of this figure's drawing time)
    for k, ax in enumerate(axes.flat[:len(methods)]):
        if k % cols == 0:
            ax.set_ylabel("source")
        else:
            ax.tick_params(labelleft=False)
        if k + cols < len(methods):    # a panel below it shows the target names
            ax.tick_params(labelbottom=False)
        else:
            ax.set_xlabel("target")
    fig.suptitle(f"accuracy (mean over seeds, one 0-1 scale), domain descriptions: {description}",
                 y=1 - 0.2 / total)
    return fig


def _annotated_grid(ax, values, rows, cols):
    """A 0-1 heatmap with its values written in (plain imshow: several times faster than seaborn's); the cells
    where the row's domain is the column's are outlined."""
    cmap = plt.get_cmap("magma")
    ax.imshow(values, vmin=0, vmax=1, cmap=cmap, aspect="equal")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if v > 0.6 else "white")
            if r == c:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.5, ls="--"))
    ax.set_xticks(range(len(cols)), cols, rotation=90)
    ax.set_yticks(range(len(rows)), rows)


def gains_plot(gains: pd.DataFrame, description: str | None = None):
    """Gain over no translation per source -> target pair; error bars: 95% t-interval over seeds."""
    if not isinstance(gains, pd.DataFrame) or not {"gain", "ci_low", "ci_high"} <= set(gains.columns):
        raise TypeError(f"gains_plot takes the gains table, pa.gains(res) (got {type(gains).__name__}"
                        + (f" with columns {list(gains.columns)})" if isinstance(gains, pd.DataFrame) else ")"))
    g = gains if description is None else _under(gains, description, "gains_plot", "gains")
    g = g.assign(pair=g.source + " → " + g.target,
                 label=g.method + np.where(g.description == NO_DESCRIPTION, "", " / " + g.description))
    labels = list(dict.fromkeys(g.label))
    order = domain_order(dict.fromkeys(list(g.source) + list(g.target)))
    pairs = [f"{s} → {t}" for s in order for t in order if s != t and f"{s} → {t}" in set(g.pair)]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(pairs) + 2), 4.5))
    width = 0.8 / max(1, len(labels))
    colors = palette("tab20", len(labels))
    for i, (label, color) in enumerate(zip(labels, colors)):
        sub = g[g.label == label].set_index("pair").reindex(pairs)
        xs = np.arange(len(pairs)) - 0.4 + width * (i + 0.5)
        err = np.nan_to_num([sub.gain - sub.ci_low, sub.ci_high - sub.gain])
        ax.errorbar(xs, sub.gain, yerr=err, fmt="o", ms=4, color=color, label=label, capsize=2)
    ax.axhline(0, color="gray", lw=1)
    ax.set_xticks(np.arange(len(pairs)), pairs, rotation=45, ha="right")
    ax.set_ylabel("accuracy gain over 'none'\n(95% interval over seeds of the source split)")
    ax.set_title("above 0: the method beats the source head\napplied to target images as they are", fontsize=10)
    if labels:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:   # only 'none' was run: say so rather than draw an empty plot
        ax.text(0.5, 0.5, "no method besides 'none' in these results: no gain to show", transform=ax.transAxes,
                ha="center", va="center")
    fig.tight_layout()
    return fig


def projection(emb: Embeddings, domain_text: np.ndarray, source: str | None = None, max_points: int = 2000,
               seed: int = 0):
    """Images and domain texts in the plane that keeps the modality gap whole.

    Axis 1 is the gap direction g = mean(images) − mean(domain texts), so the distance between the
    two clouds is shown at its true length; axis 2 is the direction in which the domain texts (and so
    every Δ = t_src − t_tgt) spread most, orthogonal to g. Both axes are unit directions of the
    embedding space, so lengths along them are true lengths. Arrows: Δ toward ``source``, drawn from
    each target's text and from the centroid of its images.
    """
    order = domain_order(embeddings(emb, "projection").domains)
    source = source or order[0]
    if source not in order:
        raise ValueError(f"projection: source {source!r} is not a domain of this cache; its domains are {order}")
    if isinstance(domain_text, TextSide):
        raise TypeError("projection takes the domains' unit text vectors, e.g. text.vectors('paper'), not the text side")
    T = np.asarray(domain_text, np.float64)
    if T.shape != (len(emb.domains), emb.x.shape[1]):
        raise ValueError(f"projection: domain_text must hold one {emb.x.shape[1]}-dimensional vector per domain "
                         f"({len(emb.domains)}, in the cache's order: text.vectors(...)); got shape {T.shape}")
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(emb.x))[:max_points]
    x = emb.x   # float32 as loaded: means are taken in float64 without a float64 copy of every image
    centroids = group_means(x, emb.domain, len(emb.domains))
    image_mean = x.mean(0, dtype=np.float64)
    gap = image_mean - T.mean(0)
    a1 = gap / np.linalg.norm(gap)
    rest = (T - T.mean(0)) - np.outer((T - T.mean(0)) @ a1, a1)
    a2 = np.linalg.svd(rest, full_matrices=False)[2][0] if np.abs(rest).sum() else np.roll(a1, 1)
    a2 -= (a2 @ a1) * a1
    a2 /= np.linalg.norm(a2)
    centre = (image_mean + T.mean(0)) / 2
    plane = lambda v: (np.atleast_2d(v) - centre) @ np.stack([a1, a2]).T  # noqa: E731
    p_img, p_txt = plane(x[pick].astype(np.float64)), plane(T)
    colors = dict(zip(order, palette("tab10", len(order))))
    fig, ax = plt.subplots(figsize=(7, 5.5))
    s = emb.domains.index(source)
    deltas = []
    for name in order:
        d = emb.domains.index(name)
        mine = emb.domain[pick] == d
        ax.scatter(*p_img[mine].T, s=6, alpha=0.35, color=colors[name], label=f"{name} images")
        ax.scatter(*p_txt[d], marker="*", s=260, color=colors[name], edgecolor="black", label=f"{name} text")
        if d != s:
            deltas.append(f"{name} {np.linalg.norm(T[s] - T[d]):.3f}")
            centroid = centroids[d]
            c, step = plane(centroid)[0], plane(centroid + T[s] - T[d])[0]
            ax.annotate("", xy=step, xytext=c, arrowprops=dict(arrowstyle="->", color=colors[name], lw=1.8))
            ax.annotate("", xy=p_txt[s], xytext=p_txt[d], arrowprops=dict(arrowstyle="->", color=colors[name],
                                                                          lw=1, ls="--"))
    ax.set_xlabel("along the modality gap g = mean(images) − mean(texts)")
    ax.set_ylabel("along the domain texts' main spread (⊥ g)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"|g| = {np.linalg.norm(gap):.3f}; |Δ| toward {source} from " + ", ".join(deltas)
                 + "\n(axes in embedding units; the gap is shown whole)", fontsize=9, wrap=True)
    ax.legend(fontsize=7, markerscale=0.8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # beside, never on the data
    fig.tight_layout()
    return fig


def study_plot(table):
    """Datasets x models (``study.study_table``): one panel per dataset, a group of bars per model: zero-shot, none,
    translate and the best other method, with 95% intervals over seeds where a method depends on the split, and
    chance (1 / classes) dashed; a last panel the average over datasets (no interval). The best method is picked on
    the same results, so its bar is optimistic; the legend says so."""
    kinds = {"zeroshot": "zero-shot (no split: no interval)", "none": "none", "translate": "translate (paper)",
             "best": "best other method (selected on these results: optimistic)"}
    datasets = list(dict.fromkeys(table.dataset))
    models = list(dict.fromkeys(table.model))
    fig, axes = plt.subplots(1, len(datasets), figsize=(min(0.9 * len(models) * len(datasets) + 2.5, 16), 3.6),
                             sharey=True, squeeze=False)
    colors = palette("colorblind", len(kinds))
    width = 0.8 / len(kinds)
    for ax, d in zip(axes[0], datasets):
        part = table[table.dataset == d].set_index("model")
        for j, (k, label) in enumerate(kinds.items()):
            xs = np.arange(len(models)) - 0.4 + width * (j + 0.5)
            get = lambda col, m: float(part.at[m, col]) if m in part.index and col in part else np.nan  # noqa: E731
            means = np.array([get(k, m) for m in models])
            ax.bar(xs, means, width, color=colors[j], label=label)
            lo, hi = np.array([get(f"{k}_ci_low", m) for m in models]), np.array([get(f"{k}_ci_high", m) for m in models])
            has = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(means)
            if k != "zeroshot" and has.any():
                ax.errorbar(xs[has], means[has], yerr=[means[has] - lo[has], hi[has] - means[has]], fmt="none",
                            ecolor="black", capsize=2, lw=1)
        classes = set(part["classes"].dropna()) if "classes" in part else set()
        if len(classes) == 1:
            ax.axhline(1 / classes.pop(), color="gray", ls="--", lw=1)
        ax.set_xticks(np.arange(len(models)), models, rotation=25, ha="right", fontsize=7)
        ax.set_title(d if d != "average" else "average over datasets\n(mean of the means; no interval)", fontsize=9)
        ax.set_ylim(0, 1.0)
    axes[0][0].set_ylabel("mean cross-domain accuracy\n(95% interval over seeds)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles.append(matplotlib.lines.Line2D([], [], color="gray", ls="--", lw=1))
    labels.append("chance (1 / classes)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    return fig


def use_headless_backend():
    matplotlib.use("Agg")
