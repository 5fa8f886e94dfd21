"""Figures (matplotlib + seaborn); ``save`` writes each as PNG and PDF.

Usage::

    fig = table1_heatmap(table1(cache)); save(fig, "figures", "table1")
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .embeddings import Embeddings
from .methods import delta
from .text import NO_DESCRIPTION


def save(fig, folder, name: str) -> list[Path]:
    """Write ``folder/name.png`` and ``folder/name.pdf``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    return paths


def table1_heatmap(tables: dict[str, pd.DataFrame]):
    """Reproduced Table 1 beside the paper's, and their difference."""
    names = [n for n in ("reproduced", "paper", "difference") if n in tables and not tables[n].empty]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        t = tables[name]
        sns.heatmap(t, annot=True, fmt=".3f", cmap="RdBu_r" if name == "difference" else "viridis",
                    center=0 if name == "difference" else None, cbar=False, ax=ax)
        ax.set_title({"reproduced": "this cache", "paper": "paper (Table 1)", "difference": "this − paper"}[name])
        ax.set_xlabel("image domain")
        ax.set_ylabel("prompt" if ax is axes[0][0] else "")
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    fig.suptitle("Sim(prompt, domain): mean cosine similarity")
    fig.tight_layout()
    return fig


def accuracy_grid(table: pd.DataFrame, description: str = "paper", methods=None):
    """Source x target mean accuracy per method (diagonal: in-domain hold-out accuracy)."""
    t = table[(table.description.isin([description, NO_DESCRIPTION]))]
    methods = methods or [m for m in dict.fromkeys(t.method) if m != "in_domain"]
    domains = list(dict.fromkeys(table.source))
    diag = table[table.method == "in_domain"].groupby("source").accuracy.mean()
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.6), squeeze=False)
    for ax, m in zip(axes[0], methods):
        grid = t[t.method == m].groupby(["source", "target"]).accuracy.mean().unstack().reindex(index=domains, columns=domains)
        for d in domains:
            grid.loc[d, d] = diag.get(d, np.nan)
        sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="magma", cbar=False, ax=ax)
        ax.set_title(m)
        ax.set_ylabel("source" if ax is axes[0][0] else "")
        ax.set_xlabel("target")
    fig.suptitle(f"accuracy (mean over seeds), domain descriptions: {description}")
    fig.tight_layout()
    return fig


def gains_plot(gains: pd.DataFrame, description: str | None = None):
    """Gain over no translation per source -> target pair, with paired-bootstrap 95% CIs."""
    g = gains if description is None else gains[gains.description.isin([description, NO_DESCRIPTION])]
    g = g.assign(pair=g.source + " → " + g.target,
                 label=g.method + np.where(g.description == NO_DESCRIPTION, "", " / " + g.description))
    labels = list(dict.fromkeys(g.label))
    pairs = list(dict.fromkeys(g.pair))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(pairs) + 2), 4.5))
    width = 0.8 / max(1, len(labels))
    colors = sns.color_palette("tab10", len(labels))
    for i, (label, color) in enumerate(zip(labels, colors)):
        sub = g[g.label == label].set_index("pair").reindex(pairs)
        xs = np.arange(len(pairs)) - 0.4 + width * (i + 0.5)
        ax.errorbar(xs, sub.gain, yerr=[sub.gain - sub.ci_low, sub.ci_high - sub.gain], fmt="o", ms=4,
                    color=color, label=label, capsize=2)
    ax.axhline(0, color="gray", lw=1)
    ax.set_xticks(np.arange(len(pairs)), pairs, rotation=45, ha="right")
    ax.set_ylabel("accuracy gain over no translation")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def projection(emb: Embeddings, domain_text: np.ndarray, source: str | None = None, max_points: int = 2000, seed: int = 0):
    """2-D PCA of the image embeddings by domain, the domain text embeddings, and the Δ arrows.

    The PCA is fitted on images and texts together, so both modalities (and the gap between them) show.
    Arrows: for each target domain, Δ = t_src − t_tgt drawn from the text of the target and from the
    centroid of its images.
    """
    from sklearn.decomposition import PCA
    source = source or emb.domains[0]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(emb.x))[:max_points]
    pca = PCA(2, random_state=seed).fit(np.concatenate([emb.x[pick], domain_text]))
    p_img, p_txt = pca.transform(emb.x[pick]), pca.transform(domain_text)
    colors = sns.color_palette("tab10", len(emb.domains))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    s = emb.domains.index(source)
    for d, name in enumerate(emb.domains):
        mine = emb.domain[pick] == d
        ax.scatter(*p_img[mine].T, s=6, alpha=0.35, color=colors[d], label=f"{name} images")
        ax.scatter(*p_txt[d], marker="*", s=260, color=colors[d], edgecolor="black", label=f"{name} text")
        if d != s:
            step = pca.transform((emb.x[emb.domain == d].mean(0) + delta(domain_text[s], domain_text[d]))[None])[0]
            centroid = pca.transform(emb.x[emb.domain == d].mean(0)[None])[0]
            ax.annotate("", xy=step, xytext=centroid, arrowprops=dict(arrowstyle="->", color=colors[d], lw=1.8))
            ax.annotate("", xy=p_txt[s], xytext=p_txt[d], arrowprops=dict(arrowstyle="->", color=colors[d], lw=1, ls="--"))
    ax.set_title(f"PCA of image and domain-text embeddings; arrows: Δ toward {source}")
    ax.legend(fontsize=7, markerscale=1, ncol=2)
    fig.tight_layout()
    return fig


def use_headless_backend():
    matplotlib.use("Agg")
