"""Figures (matplotlib + seaborn); ``save`` writes each as PNG and PDF.

Every figure uses one domain order (``domain_order``: the paper's for PACS) and says on its face
what its colours, diagonals and error bars are.

Usage::

    fig = table1_heatmap(pa.table1(emb)); save(fig, "figures", "table1")
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.patheffects
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .arguments import check_embeddings, check_results_table
from .embeddings import Embeddings, domain_order, group_means, table_domains
from .methods import seeded
from .text import NO_DESCRIPTION, TextSide
from ..errors import ArgumentError, ArgumentTypeError


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
        raise ArgumentError(f"{what}: no {rows} under description {description!r}; these hold {described}")
    return df[df.description.isin([description, NO_DESCRIPTION])]


def table1_heatmap(tables: dict[str, pd.DataFrame]):
    """Reproduced Table 1 beside the paper's on one shared colour scale; their difference on a diverging
    scale centred at 0."""
    if not isinstance(tables, dict) or "reproduced" not in tables:
        raise ArgumentTypeError(f"table1_heatmap takes the tables of pa.table1(emb) (got {type(tables).__name__})")
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


def accuracy_grid(table: pd.DataFrame, description: str = "paper", methods=None, chance: float | None = None):
    """Source x target mean accuracy per method on one colour scale set by the data (colour bar beside it).

    Off the diagonal: accuracy on the target domain. The diagonal is a method's own accuracy on the source only
    where no head was trained on the source's images (zero-shot); elsewhere it is left blank, and each source's
    in-domain accuracy (the plain head on the source hold-out) is written beside its name. A method that does not
    depend on the source (zero-shot) scores every target the same from every source: one row. ``chance`` (1/K) is
    marked on the colour bar."""
    table = check_results_table(table, "accuracy_grid")
    t = _under(table, description, "accuracy_grid")
    absent = [m for m in methods or [] if m not in set(t.method)]
    if absent:
        raise ArgumentError(f"accuracy_grid: method(s) {absent} are not in the table under {description!r}; it holds "
                         f"{sorted(set(t.method) - {'in_domain'})}")
    methods = methods or [m for m in dict.fromkeys(t.method) if m != "in_domain"]
    sources = table_domains(table, "source")   # rows; columns: every target (all domains, also when only some
    targets = table_domains(table, "target")   # were sources)
    head_diag = table[table.method == "in_domain"].groupby("source").accuracy.mean()
    grids = {m: _method_grid(t[t.method == m], m, sources, targets) for m in methods}
    lo, hi = _scale([g for g, _ in grids.values()])
    layout = _GridLayout(len(methods), len(sources), len(targets))
    fig, axes = layout.figure()
    image = None
    for ax, m in zip(axes.flat, methods):
        image = _annotated_grid(ax, grids[m][0], sources, targets, lo, hi, values_in=layout.cell >= 0.25)
        ax.set_title(m + ("\n(no source: one row)" if not seeded(m) else ""), fontsize=7)
    layout.label(axes, [f"{d} ({head_diag[d]:.2f})" if d in head_diag else d for d in sources])
    if image is not None:
        _colour_bar(fig, image, layout, lo, hi, chance)
    fig.suptitle(f"cross-domain accuracy, domain descriptions: {description}\nblank diagonal: the head trained there; "
                 f"in-domain (hold-out) accuracy beside each source", fontsize=9,
                 y=1 - 0.1 / layout.total)
    return fig


def _method_grid(mine: pd.DataFrame, m: str, sources, targets) -> tuple[np.ndarray, bool]:
    """(source x target mean accuracy of method ``m``, whether its diagonal is its own accuracy): the diagonal blank
    where a head was trained there; a method that does not depend on the source in its first row only."""
    grid = mine.groupby(["source", "target"]).accuracy.mean().unstack().reindex(index=sources, columns=targets)
    own = not seeded(m) and not mine[mine.source == mine.target].empty   # zero-shot: its own source accuracy
    for d in sources:
        if d in targets and not own:
            grid.loc[d, d] = np.nan
    if not seeded(m):   # the same from every source: shown once, in the first row
        row = mine.groupby("target").accuracy.mean().reindex(targets)
        grid.iloc[:, :] = np.nan
        grid.iloc[0] = row.values
    return grid.values.astype(float), own


def _scale(grids) -> tuple[float, float]:
    """One colour scale for every panel, set by the data: its range rounded out to 0.05, at least 0.05 wide."""
    values = np.concatenate([g.ravel() for g in grids]) if grids else np.array([])
    values = values[np.isfinite(values)]
    lo, hi = (np.floor(values.min() * 20) / 20, np.ceil(values.max() * 20) / 20) if len(values) else (0.0, 1.0)
    return lo, max(hi, lo + 0.05)


class _GridLayout:
    """Panels of source x target cells, at most four a row, fitted to a page's width (inches), with room for the
    source names (with their in-domain accuracy) on the left and a colour bar on the right."""
    LEFT, CBAR, GAP, PAGE = 1.3, 0.8, 0.15, 7.0

    def __init__(self, n_panels: int, n_sources: int, n_targets: int):
        self.n, self.cols = n_panels, min(4, n_panels)
        self.rows = -(-n_panels // self.cols)
        self.cell = min((self.PAGE - self.LEFT - self.CBAR - (self.cols - 1) * self.GAP) / self.cols / max(n_targets, 1),
                        2.2 / max(n_sources, 1), 0.45)
        self.panel_w, self.panel_h = self.cell * n_targets, self.cell * n_sources
        self.width = self.LEFT + self.cols * self.panel_w + (self.cols - 1) * self.GAP + self.CBAR
        self.total = self.rows * self.panel_h + (self.rows - 1) * 0.6 + 1.9
        self.top, self.bottom = 1 - 0.95 / self.total, 0.95 / self.total

    def figure(self):
        fig, axes = plt.subplots(self.rows, self.cols, figsize=(self.width, self.total), squeeze=False)
        fig.subplots_adjust(left=self.LEFT / self.width, right=1 - self.CBAR / self.width, top=self.top,
                            bottom=self.bottom, wspace=self.GAP / self.panel_w, hspace=0.6 / self.panel_h)
        for ax in axes.flat[self.n:]:
            ax.set_visible(False)
        return fig, axes

    def label(self, axes, source_labels) -> None:
        """Source names on the first panel of each row, target names under the last panel of each column."""
        for k, ax in enumerate(axes.flat[:self.n]):
            if k % self.cols == 0:
                ax.set_yticks(range(len(source_labels)), source_labels, fontsize=7)
                ax.set_ylabel("source (in-domain accuracy)", fontsize=8)
            else:
                ax.tick_params(labelleft=False)
            if k + self.cols < self.n:    # a panel below it shows the target names
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel("target", fontsize=8)


def _colour_bar(fig, image, layout: _GridLayout, lo: float, hi: float, chance: float | None) -> None:
    """The shared colour bar, saying its scale comes from the data, with chance (1/K) marked where it falls."""
    bar = fig.colorbar(image, cax=fig.add_axes([1 - 0.5 / layout.width, layout.bottom, 0.12 / layout.width,
                                                layout.top - layout.bottom]))
    bar.set_label(f"accuracy (mean over seeds; scale {lo:.2f}–{hi:.2f}, from the data)"
                  + (f"; chance 1/K = {chance:.2f}" if chance else ""), fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if chance and lo <= chance <= hi:
        bar.ax.axhline(chance, color="red", lw=1.5)
        bar.ax.text(-0.3, chance, "chance", color="red", fontsize=6, ha="right", va="center",
                    transform=bar.ax.get_yaxis_transform())


def _annotated_grid(ax, values, rows, cols, lo=0.0, hi=1.0, values_in=True):
    """A heatmap on [lo, hi] with its values written in where the cells are large enough (plain imshow: several
    times faster than seaborn's); blank (NaN) cells grey. Returns the image (for a colour bar)."""
    cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(values), vmin=lo, vmax=hi, cmap=cmap, aspect="equal")
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            if np.isfinite(v) and values_in:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6 if len(cols) > 4 else 6.5,
                        color="black" if (v - lo) / (hi - lo) > 0.55 else "white")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    return image


FAMILY_COLOURS = {"baseline": "Greys", "zero-shot": "Purples", "test-time operator": "Blues",
                  "modality gap and projection": "Oranges", "train-time augmentation": "Greens", "other": "RdPu"}


def family(method: str) -> str:
    """The family of a registered method (``Method.family``), "other" for anything else."""
    from .methods import METHODS
    from .methods import base_name
    method = base_name(method)
    return getattr(METHODS[method](), "family", "other") if method in METHODS else "other"


def method_colours(methods) -> dict[str, tuple]:
    """One colour per method, the same in every figure and notebook whatever else is drawn beside it: a shade of
    its family's colour map (so that a family reads as one) set by its place among every registered method of that
    family (registry order; methods the registry does not know come after, in the order given)."""
    from .methods import FAMILIES, METHODS
    given = list(dict.fromkeys(methods))
    out = {}
    for fam in FAMILIES:
        members = [m for m in METHODS if _family_of(m) == fam] + [m for m in given if m not in METHODS and
                                                                   _family_of(m) == fam]
        cmap = matplotlib.colormaps[FAMILY_COLOURS[fam]]
        for i, m in enumerate(members):
            if m in given:
                out[m] = cmap(0.9 - 0.45 * i / max(len(members) - 1, 1) if len(members) > 1 else 0.7)
    return out


def _family_of(method: str) -> str:
    fam = family(method)
    return fam if fam in FAMILY_COLOURS else "other"


def _label(method: str, description: str) -> str:
    return method if description == NO_DESCRIPTION else f"{method} / {description}"


def gains_summary(means: pd.DataFrame, description: str | None = None, baseline: str = "none"):
    """The compact figure: each method's gain over ``baseline`` averaged over every source → target pair (the
    ``gain`` columns of ``method_means``), with its 95% interval over seeds, families coloured alike. Fits a
    column. ``description``: only that description's rows (and the description-free methods)."""
    if not isinstance(means, pd.DataFrame) or "gain" not in means:
        raise ArgumentTypeError(f"gains_summary takes pa.method_means(res.table) (got {type(means).__name__})")
    m = means if description is None else _under(means, description, "gains_summary", "method means")
    m = m[m.gain.notna() & ~m.method.isin([baseline, "in_domain"])]
    from .methods import FAMILIES
    rank = {f: i for i, f in enumerate(FAMILIES)}
    m = m.assign(family=[family(x) for x in m.method]).sort_values(
        ["family", "gain"], key=lambda c: c.map(rank) if c.name == "family" else -c, ignore_index=True)
    colours = method_colours(m.method)
    fig, ax = plt.subplots(figsize=(4.8, 1.9 + 0.2 * max(len(m), 3)))
    ys = np.arange(len(m))[::-1]
    for y, r in zip(ys, m.itertuples()):
        err = [[r.gain - r.gain_ci_low], [r.gain_ci_high - r.gain]] if np.isfinite(r.gain_ci_low) else None
        ax.errorbar(r.gain, y, xerr=err, fmt="o", ms=4, color=colours[r.method], capsize=2, lw=1.2)
    ax.axvline(0, color="gray", lw=1)
    ax.set_yticks(ys, [_label(r.method, r.description) for r in m.itertuples()], fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    seeds = int(m.seeds.max()) if len(m) else 0
    ax.set_xlabel(f"gain over '{baseline}', mean over every source → target pair\n(95% interval over {seeds} seeds of "
                  f"the source split and the target images)", fontsize=8)
    handles = [matplotlib.patches.Patch(color=matplotlib.colormaps[FAMILY_COLOURS[f]](0.7), label=f)
               for f in FAMILIES if f in set(m.family)]
    if handles:
        ax.legend(handles=handles, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2,
                  frameon=False)
    else:
        ax.text(0.5, 0.5, f"no method besides '{baseline}' in these results: no gain to show", transform=ax.transAxes,
                ha="center", va="center", fontsize=8)
    ax.set_title("right of 0: the method beats the source head applied to target images as they are", fontsize=8)
    fig.tight_layout()
    return fig


def gains_plot(gains: pd.DataFrame, description: str | None = None):
    """Gain over no translation per source → target pair, one panel per method family (methods in shades of their
    family's colour); error bars: 95% t-interval over seeds (wide with few seeds: t has seeds − 1 degrees of
    freedom). Page width; the compact summary is ``gains_summary``."""
    _check_gains(gains, "gains_plot")
    g = gains if description is None else _under(gains, description, "gains_plot", "gains")
    g = g.assign(pair=g.source + " → " + g.target, label=[_label(m, d) for m, d in zip(g.method, g.description)],
                 family=[family(m) for m in g.method])
    order = domain_order(dict.fromkeys(list(g.source) + list(g.target)))
    pairs = [f"{s} → {t}" for s in order for t in order if s != t and f"{s} → {t}" in set(g.pair)]
    from .methods import FAMILIES
    families = [f for f in FAMILIES if f in set(g.family)]
    width = min(7.0, max(4.5, 0.32 * len(pairs) + 2.6))
    fig, axes = plt.subplots(max(1, len(families)), 1, figsize=(width, 0.9 + 1.55 * max(1, len(families)) + 0.9),
                             sharex=True, sharey=True, squeeze=False)
    colours = method_colours(g.method)
    limits, cut = _gain_limits(g)
    for ax, fam in zip(axes[:, 0], families):
        _family_panel(ax, g[g.family == fam], fam, pairs, colours, limits)
    if not families:   # only 'none' was run: say so rather than draw an empty plot
        axes[0, 0].text(0.5, 0.5, "no method besides 'none' in these results: no gain to show",
                        transform=axes[0, 0].transAxes, ha="center", va="center")
    last = axes[-1, 0]
    last.set_xticks(np.arange(len(pairs)), pairs, rotation=60, ha="right", fontsize=6 if len(pairs) > 14 else 7)
    seeds = int(g.seeds.max()) if "seeds" in g and len(g) else 0
    fig.supylabel(f"gain over 'none' (95% interval over {seeds} seeds and the target images)"
                  + (f"\n{cut} interval(s) reach past the axis" if cut else ""), fontsize=8)
    fig.suptitle("gain per source → target pair; above 0: better than the source head on target images as they are",
                 fontsize=8)
    fig.tight_layout()
    return fig


def _check_gains(gains, what: str) -> None:
    if not isinstance(gains, pd.DataFrame) or not {"gain", "ci_low", "ci_high"} <= set(gains.columns):
        raise ArgumentTypeError(f"{what} takes the gains table, pa.gains(res) (got {type(gains).__name__}"
                                + (f" with columns {list(gains.columns)})" if isinstance(gains, pd.DataFrame) else ")"))


def _gain_limits(g: pd.DataFrame) -> tuple[tuple[float, float], int]:
    """(the axis limits, how many intervals reach past them): the axis fits the gains and most intervals; a few very
    wide ones (2 seeds: t has 1 degree of freedom) are cut at its edge rather than flattening every other."""
    lows, highs = g.ci_low.to_numpy(float), g.ci_high.to_numpy(float)
    inner = [np.nanpercentile(lows, 5) if np.isfinite(lows).any() else 0, np.nanpercentile(highs, 95)
             if np.isfinite(highs).any() else 0, np.nanmin(g.gain) if len(g) else 0, np.nanmax(g.gain) if len(g) else 0, 0]
    pad = 0.08 * (max(inner) - min(inner) or 0.1)
    limits = (min(inner) - pad, max(inner) + pad)
    return limits, int(((lows < limits[0]) | (highs > limits[1])).sum())


def _family_panel(ax, part: pd.DataFrame, fam: str, pairs: list[str], colours: dict, limits) -> None:
    """One method family's gains per pair, each method (and description) a shade of the family's colour."""
    labels = list(dict.fromkeys(part.label))
    step = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        sub = part[part.label == label].set_index("pair").reindex(pairs)
        xs = np.arange(len(pairs)) - 0.4 + step * (i + 0.5)
        err = np.nan_to_num([sub.gain - sub.ci_low, sub.ci_high - sub.gain])
        ax.errorbar(xs, sub.gain, yerr=err, fmt="o", ms=3, lw=1, capsize=1.5, label=label,
                    color=colours[sub.method.dropna().iloc[0]] if sub.method.notna().any() else "gray")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_title(fam, fontsize=8, loc="left")
    ax.set_ylim(*limits)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.tick_params(labelsize=7)


def projection(emb: Embeddings, domain_text: np.ndarray, source: str | None = None, max_points: int = 2000,
               seed: int = 0, class_text: np.ndarray | None = None):
    """Images and domain texts in the plane that keeps the modality gap whole.

    Axis 1 is the gap direction g = mean(images) − mean(class prompts) — the gap ``gap_shift`` removes —
    when ``class_text`` (the unit "a photo of a {class}" vectors, ``text.class_vectors``) is given, else
    mean(images) − mean(domain texts) (the axis label says which); the distance between the clouds is
    shown at its true length. Axis 2 is the direction in which the domain texts (and so every
    Δ = t_src − t_tgt) spread most, orthogonal to g. Both are unit directions of the embedding space,
    so lengths along them are true lengths. Images are drawn in random order (no domain hides under
    another). Arrows: Δ toward ``source``, from each target's text and from the centroid of its images.
    """
    order, source, T, E = _projection_inputs(emb, domain_text, source, class_text)
    pick = np.random.default_rng(seed).permutation(len(emb.x))[:max_points]
    x = emb.x   # float32 as loaded: means are taken in float64 without a float64 copy of every image
    centroids = group_means(x, emb.domain, len(emb.domains))
    image_mean = x.mean(0, dtype=np.float64)
    gap, gap_of = ((image_mean - E.mean(0), "mean(class prompts), the gap gap_shift removes") if E is not None
                   else (image_mean - T.mean(0), "mean(domain texts)"))
    axes2 = _plane(gap, T)                                              # (D, 2): unit, orthogonal
    centre = (image_mean + T.mean(0)) / 2
    plane = lambda v: (np.atleast_2d(v) - centre) @ axes2  # noqa: E731
    every = (x @ axes2.astype(np.float32)).astype(np.float64) - centre @ axes2   # every image in the plane: (n, 2)
    p_img, p_txt = every[pick], plane(T)
    colors = dict(zip(order, palette("colorblind", len(order))))
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(9.0, 4.8), gridspec_kw={"width_ratios": [1, 1.2]})
    s = emb.domains.index(source)
    spread = _spreads(every, emb, order)
    _clouds((ax, zoom), p_img, np.array(emb.domains)[emb.domain[pick]], spread, colors)
    deltas = []
    for name in order:
        d = emb.domains.index(name)
        ax.scatter([], [], s=12, color=colors[name], label=f"{name} images (ellipses: 1 and 2 s.d.)")
        ax.scatter(*p_txt[d], marker="*", s=260, color=colors[name], edgecolor="black", label=f"{name} text", zorder=3)
        if d != s:
            deltas.append(f"{name} {np.linalg.norm(T[s] - T[d]):.3f}")
            _arrows(ax, zoom, plane(centroids[d])[0], plane(centroids[d] + T[s] - T[d])[0], p_txt[d], p_txt[s],
                    colors[name])
    _frame(ax, zoom, gap_of, spread)
    fig.suptitle(f"|g| = {np.linalg.norm(gap):.3f}; |Δ| toward {source} from " + ", ".join(deltas)
                 + "\narrows: Δ from each target's image centroid (solid) and text (dashed, left)", fontsize=8)
    ax.legend(fontsize=6.5, markerscale=0.8, loc="upper center", bbox_to_anchor=(1.1, -0.24), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _projection_inputs(emb, domain_text, source, class_text):
    """(domain order, the source, the domain texts, the class texts or None), each checked."""
    order = domain_order(check_embeddings(emb, "projection").domains)
    source = source or order[0]
    if source not in order:
        raise ArgumentError(f"projection: source {source!r} is not a domain of this cache; its domains are {order}")
    if isinstance(domain_text, TextSide):
        raise ArgumentTypeError("projection takes the domains' unit text vectors, e.g. text.vectors('paper'), not the text side")
    T = np.asarray(domain_text, np.float64)
    if T.shape != (len(emb.domains), emb.x.shape[1]):
        raise ArgumentError(f"projection: domain_text must hold one {emb.x.shape[1]}-dimensional vector per domain "
                            f"({len(emb.domains)}, in the cache's order: text.vectors(...)); got shape {T.shape}")
    E = None
    if class_text is not None:
        E = np.asarray(class_text, np.float64)
        if E.ndim != 2 or E.shape[1] != emb.x.shape[1]:
            raise ArgumentError(f"projection: class_text must be (classes, {emb.x.shape[1]}) unit vectors "
                                f"(text.class_vectors); got shape {E.shape}")
    return order, source, T, E


def _plane(gap: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(D, 2): the unit gap direction, and the unit direction ⊥ it in which the domain texts spread most."""
    a1 = gap / np.linalg.norm(gap)
    rest = (T - T.mean(0)) - np.outer((T - T.mean(0)) @ a1, a1)
    a2 = np.linalg.svd(rest, full_matrices=False)[2][0] if np.abs(rest).sum() else np.roll(a1, 1)
    a2 -= (a2 @ a1) * a1
    return np.stack([a1, a2 / np.linalg.norm(a2)]).T


def _spreads(every: np.ndarray, emb, order) -> dict:
    """Per domain: its images' mean and covariance in the plane, from every image: legible at any number of images
    (a scatter of 10,000 points is one streak); a thin sample of points is drawn beneath."""
    spread = {}
    for name in order:
        rows = emb.domain == emb.domains.index(name)
        if rows.any():
            P = every[rows]
            spread[name] = (P.mean(0), np.cov(P.T) if len(P) > 2 else np.eye(2) * 1e-6)
    return spread


def _clouds(panels, p_img, names, spread, colors) -> None:
    """The sampled images, interleaved (no domain on top), and each domain's 1 and 2 s.d. ellipses, on each panel."""
    ax, zoom = panels
    for panel in panels:
        thin = max(1, len(p_img) // 600) if panel is zoom else 1
        panel.scatter(*p_img[::thin].T, s=4, alpha=0.25 if panel is zoom else 0.45,
                      c=[colors[n] for n in names[::thin]], linewidths=0)
        for name, (mu, cov) in spread.items():
            w, V = np.linalg.eigh(cov)
            angle = np.degrees(np.arctan2(V[1, -1], V[0, -1]))
            for k, style in ((1, "-"), (2, ":")):
                panel.add_patch(matplotlib.patches.Ellipse(mu, *(2 * k * np.sqrt(np.maximum(w[::-1], 0))), angle=angle,
                                                           fill=False, lw=1.6 if k == 1 else 1, ls=style,
                                                           color=colors[name], zorder=3))


def _arrows(ax, zoom, c, step, text_from, text_to, colour) -> None:
    """Δ from a target's image centroid (both panels, outlined, on top) and from its text (dashed, left panel)."""
    outline = [matplotlib.patheffects.withStroke(linewidth=3.2, foreground="white")]
    head = dict(arrowstyle="-|>", mutation_scale=14, color=colour, shrinkA=0, shrinkB=0)
    for panel in (ax, zoom):
        arrow = panel.annotate("", xy=step, xytext=c, arrowprops=dict(head, lw=2), zorder=6, annotation_clip=False)
        arrow.arrow_patch.set_path_effects(outline)
        if panel is zoom:          # enlarged: the arrow's start and direction; it may leave the frame
            arrow.arrow_patch.set_clip_on(True)
            arrow.arrow_patch.set_clip_box(zoom.bbox)
    ax.annotate("", xy=text_to, xytext=text_from, arrowprops=dict(head, lw=1, ls="--"), zorder=4,
                annotation_clip=False)
    ax.update_datalim([c, step])   # the whole arrow in view (annotations do not scale the axes)


def _frame(ax, zoom, gap_of: str, spread: dict) -> None:
    """Axes, labels and titles: the left panel at true lengths, the right one enlarged to the image clouds."""
    ax.set_xlabel(f"along the modality gap g = mean(images) −\n{gap_of}", fontsize=8)
    ax.set_ylabel("along the domain texts' main spread (⊥ g)", fontsize=8)
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title("the whole picture, true lengths (equal axes)", fontsize=8)
    corners = [mu + sgn * 2 * np.sqrt(np.diag(cov)) for mu, cov in spread.values() for sgn in (-1, 1)]
    if corners:
        zoom.update_datalim(np.array(corners))
    zoom.autoscale_view()
    zoom.set_title("the image clouds, enlarged (axes not to the same scale)", fontsize=8)
    zoom.set_xlabel("along g", fontsize=8)
    zoom.set_ylabel("⊥ g", fontsize=8)
    for panel in (ax, zoom):
        panel.tick_params(labelsize=7)


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


def step_sweep(sw):
    """Accuracy against the step along Δ (``pa.sweep``), one panel per source, a line per target (mean over seeds):
    the paper's step 1 (dashed), the calibrated α of that source (dotted) and the range source data leave it in
    (shaded: ``translate_calibrated``'s ``alpha_range``), and on each line its oracle step — the best on the target's
    own labels, an upper bound, never a method (open circle)."""
    curve = sw.curve()
    sources = domain_order(dict.fromkeys(curve.source))
    targets = domain_order(dict.fromkeys(curve.target))
    colors = dict(zip(targets, palette("colorblind", len(targets))))
    cols = min(4, len(sources))
    rows = -(-len(sources) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(7.0, 1.9 * cols + 0.6), 1.9 * rows + 1.1), sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(sources):]:
        ax.set_visible(False)
    for ax, s in zip(axes.flat, sources):
        for t in targets:
            c = curve[(curve.source == s) & (curve.target == t)]
            if c.empty:
                continue
            ax.plot(c.step, c.accuracy, color=colors[t], lw=1.3, label=t)
            best = c.accuracy.idxmax()
            ax.plot(c.step[best], c.accuracy[best], "o", mfc="none", color=colors[t], ms=6)
        ax.axvline(1.0, color="black", ls="--", lw=0.9)
        if s in sw.alpha_range:   # where source data leave α: between the two slopes
            ax.axvspan(*sw.alpha_range[s], color="gray", alpha=0.15, lw=0)
        if s in sw.alpha:
            ax.axvline(sw.alpha[s], color="gray", ls=":", lw=1.2)
        ax.set_title(f"source {s}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("step along Δ", fontsize=7)
    axes[0, 0].set_ylabel("accuracy (mean over seeds)", fontsize=8)
    handles = [matplotlib.lines.Line2D([], [], color=colors[t], lw=1.3, label=f"target {t}") for t in targets]
    handles += [matplotlib.lines.Line2D([], [], color="black", ls="--", lw=0.9, label="the paper's step 1"),
                matplotlib.lines.Line2D([], [], color="gray", ls=":", lw=1.2, label="calibrated α (source only)"),
                matplotlib.patches.Patch(color="gray", alpha=0.15, label="where source data leave α"),
                matplotlib.lines.Line2D([], [], color="gray", marker="o", mfc="none", ls="", label="oracle step "
                                        "(target labels: an upper bound, not a method)")]
    fig.legend(handles=handles, fontsize=6.5, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"translate: x + step·Δ, domain descriptions: {sw.description}", fontsize=8)
    fig.tight_layout(rect=(0, 0.1 + 0.04 * (len(handles) > 6), 1, 1))
    return fig


def explorer_view(edit, title: str | None = None):
    """One edit of the explorer (``pa.explore``) as a figure: accuracy per method and target with the change from
    the last description written in (green up, red down; out-of-date methods hatched), and the typed descriptions'
    Sim row against every domain's images."""
    acc, change = edit.accuracy, edit.change
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 0.42 * len(acc) + 1.9),
                                 gridspec_kw={"width_ratios": [len(acc.columns) + 2, len(edit.similarity.columns)]})
    image = ax.imshow(acc.values.astype(float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, m in enumerate(acc.index):
        for j, t in enumerate(acc.columns):
            d = change.loc[m, t]
            mark = f"\n{d:+.3f}" if np.isfinite(d) and abs(d) >= 5e-4 else ""
            ax.text(j, i, f"{acc.loc[m, t]:.3f}{mark}", ha="center", va="center", fontsize=6.5,
                    color="white" if acc.loc[m, t] < 0.6 else "black")
        if m in edit.stale:
            ax.add_patch(matplotlib.patches.Rectangle((-0.5, i - 0.5), len(acc.columns), 1, fill=False, hatch="//",
                                                      color="gray", lw=0))
    ax.set_xticks(range(len(acc.columns)), acc.columns, fontsize=7)
    ax.set_yticks(range(len(acc)), [f"{m} (out of date)" if m in edit.stale else m for m in acc.index], fontsize=7)
    ax.set_xlabel("target", fontsize=8)
    ax.set_title(f"accuracy (mean over seeds) and its change; applied in {edit.seconds:.2f} s", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04).ax.tick_params(labelsize=6)
    sim = edit.similarity
    bx.imshow(sim.values, cmap="magma", aspect="auto")
    for i in range(len(sim)):
        for j in range(len(sim.columns)):
            v, lo, hi = sim.values[i, j], np.nanmin(sim.values), np.nanmax(sim.values)
            bx.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=6.5,
                    color="black" if hi > lo and (v - lo) / (hi - lo) > 0.6 else "white")
    bx.set_xticks(range(len(sim.columns)), sim.columns, fontsize=7, rotation=30)
    bx.set_yticks(range(len(sim)), [f"{d}: {str(edit.prompts[d])[:28]}" for d in sim.index], fontsize=6.5)
    bx.set_xlabel("images of", fontsize=8)
    bx.set_title("Sim(description, images): mean cosine", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95 if title else 1))
    return fig
