"""``pacs-embed report``: the results table as CSV and Markdown, with every figure.

Usage::

    paths = report("data/embeddings/PACS/openai__clip-vit-base-patch32.h5", out="results", figures="figures",
                   domain_prompts={"cartoon": "a comic strip"})
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArgumentError
from ..cache import Cache
from ..templates import load_templates
from ..files import atomic_write
from . import runs
from .arguments import check_names, check_output_folder, check_positive, check_seeds
from .embeddings import domain_order, load
from .evaluation import Request, evaluate, request
from .heads import resolve_solver
from .similarity import paper_comparison, similarity_matrix, table1
from .methods import seeded
from .stats import gains, method_means, summary
from .sweep import sweep
from .text import repeated, text_side

DEFAULT_DESCRIPTIONS = ("paper", "ensemble", "nouns")
BASELINES = ("none", "zeroshot", "zeroshot_domain", "in_domain")   # not candidates for "best method"


def markdown(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """A GitHub Markdown table (no extra dependency)."""
    df = df.reset_index() if df.index.name or not isinstance(df.index, pd.RangeIndex) else df
    cell = lambda v: floatfmt.format(v) if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def record(path, **values) -> None:
    """Merge ``values`` (JSON-able) into the JSON file ``path`` (notebooks record their key results)."""
    if not path:
        return
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(values)
    atomic_write(path, json.dumps(data, indent=1, default=float).encode())


TABLES = ("results.csv", "summary.csv", "gains.csv", "methods.csv", "table1.csv", "table1_difference.csv",
          "report.md", "methods.tex", "methods_pm.tex", "headline.json", "step_sweep.csv")
FIGURES = tuple(f"{name}.{ext}" for name in ("table1", "accuracy_grid", "gains", "gains_pairs", "projection",
                                              "step_sweep")
                for ext in ("png", "pdf"))


def report(cache, out=None, figures=None, seeds=range(5), descriptions=DEFAULT_DESCRIPTIONS,
           domain_prompts: dict | None = None, methods=None, n_nouns: int | None = None, n_boot: int = 1000,
           head_cache=True, progress: bool = True, sources=None, solver: str = "auto",
           prompts=None, evaluated=None) -> dict[str, Path]:
    """Evaluate every method on ``cache`` and write tables (CSV + Markdown) and figures (PNG + PDF).
    ``prompts``: a prompt set file (JSON, as ``extract --prompts``) that replaces the cache's for this report (default:
    the prompt set chosen at extraction, else the dataset's).
    ``sources`` limits the source domains (default: all); every domain is scored as a target. ``solver``: how
    heads are fitted (``evaluate``'s; "auto": on a CUDA device when present). ``out``: the folder
    of the tables (default: a new ``results/<dataset>/<cache name>/<time>/``, pointed at by ``latest``); ``figures``: of the
    figures (default: ``out/figures``). Each gets ``run.json``; another run's folder, or a file of yours that the
    report would write, is refused before any work (``runs.claim``). ``evaluated``: the Results of
    ``evaluate_many([evaluation_request(cache, **same arguments)])`` when they were run elsewhere (``study`` runs every
    cache's on a cluster at once); else the report evaluates."""
    descriptions, seeds, n_boot = check_names(descriptions, "descriptions"), check_seeds(seeds), check_positive(n_boot, "n_boot")
    check_names(methods, "methods", "every default method")   # checked before any work; evaluate uses them
    check_names(sources, "sources", "every domain")
    if not descriptions:
        raise ArgumentError(f"descriptions is empty: name at least one of {DEFAULT_DESCRIPTIONS}")
    cache = Cache.open(cache)   # a missing or damaged cache fails here, before any folder is made
    out, figures, this, fresh = _folders(cache, out, figures, {
        "seeds": list(seeds), "descriptions": list(descriptions), "domain_prompts": domain_prompts or {},
        "methods": methods, "sources": sources, "n_nouns": n_nouns, "n_boot": n_boot,
        "head_cache": head_cache if isinstance(head_cache, bool) else str(head_cache),
        "solver": resolve_solver(solver), "prompts": str(prompts) if prompts else None})
    templates = load_templates(prompts) if prompts else None   # a bad file fails before any work
    with runs.Staging(this, [(out, TABLES), (figures, FIGURES)]) as stage:
        paths = _write(cache, stage.path(out), stage.path(figures), seeds, descriptions, domain_prompts, methods,
                       n_nouns, n_boot, head_cache, progress, sources, solver, templates, evaluated)
        stage.publish()
        paths = {k: stage.final(p) for k, p in paths.items()}
    if fresh:
        runs.point_latest(out)
    return paths


def _text(emb, descriptions, domain_prompts, n_nouns, templates):
    """(text side, the descriptions evaluated, those left out as repeats) as the report builds them."""
    text = text_side(emb, tuple(descriptions), domain_prompts, n_nouns, templates=templates)
    repeats = repeated(text.descriptions)   # e.g. `ensemble` on a dataset with no ensembles: `paper` again
    return text, [d for d in descriptions if d not in repeats], repeats


def evaluation_request(cache, **kwargs) -> Request:
    """The evaluation ``report(cache, **kwargs)`` runs, as a checked ``evaluation.Request`` (``study`` hands every
    cache's to the executor at once; the report then takes the Results as ``evaluated``)."""
    bound = inspect.signature(report).bind(cache, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    emb = load(a["cache"])
    templates = load_templates(a["prompts"]) if a["prompts"] else None
    text, descriptions, _ = _text(emb, check_names(a["descriptions"], "descriptions"), a["domain_prompts"], a["n_nouns"],
                                  templates)
    return request(emb, a["methods"], check_seeds(a["seeds"]), descriptions, text=text, sources=a["sources"],
                   solver=a["solver"])


def _write(cache, out, figures, seeds, descriptions, domain_prompts, methods, n_nouns, n_boot, head_cache, progress,
           sources, solver, templates, evaluated=None) -> dict[str, Path]:
    """The report's work, its tables written to ``out`` and its figures to ``figures`` (the staged folders)."""
    emb = load(cache)
    t1 = table1(emb, domain_prompts, templates)
    text, descriptions, repeats = _text(emb, descriptions, domain_prompts, n_nouns, templates)
    res = evaluated if evaluated is not None else evaluate(
        emb, methods, seeds=seeds, text=text, descriptions=descriptions, head_cache=head_cache, progress=progress,
        sources=sources, solver=solver)
    summ, gain, means = summary(res.table), gains(res, n_boot=n_boot), method_means(res.table, hits=res.correct)
    # large caches (DomainNet) sweep the first seed only: each (source, seed) scores every target image once more
    step = (sweep(emb, "translate", seeds=seeds if len(emb.x) <= SWEEP_ALL_SEEDS else seeds[:1],
                  description=descriptions[0], text=text, head_cache=head_cache, sources=sources, results=res)
            if methods is None or "translate" in methods else None)   # how far to translate (its heads: cached)
    order = {d: i for i, d in enumerate(domain_order(emb.domains))}
    gain = gain.sort_values(["source", "target"], key=lambda c: c.map(order), kind="stable", ignore_index=True)
    paths = {"run": out / runs.RECORD}
    for name, df in [("results", res.table), ("summary", summ), ("gains", gain), ("methods", means),
                     ("table1", t1["reproduced"]), ("table1_difference", t1["difference"])]:
        paths[name] = out / f"{name}.csv"
        numeric = df.drop(columns=[c for c in ("accuracy",) if c in df and df[c].dtype == object])   # no text cells
        numeric.to_csv(paths[name], index=name.startswith("table1"))
    paths["markdown"] = out / "report.md"
    atomic_write(paths["markdown"], _markdown(cache, emb, text, seeds, descriptions, repeats, res, t1, summ, gain,
                                              means, step).encode())
    if step is not None:
        paths["step_sweep"] = out / "step_sweep.csv"
        step.table.to_csv(paths["step_sweep"], index=False)
    paths["latex"] = out / "methods.tex"
    atomic_write(paths["latex"], latex(means).encode())
    paths["latex_compact"] = out / "methods_pm.tex"   # the same table, each interval as mean ± half-width
    atomic_write(paths["latex_compact"], latex(means, "pm").encode())
    paths["headline"] = out / "headline.json"
    atomic_write(paths["headline"], json.dumps(headline(emb, means, descriptions[0], domain_prompts, templates),
                                               indent=1, default=float).encode())
    paths.update(_figures(figures, emb, text, descriptions[0], res, t1, gain, means, step))
    return paths


def _folders(cache: Cache, out, figures, parameters: dict) -> tuple[Path, Path, dict, bool]:
    """The run's folders for tables and figures, each claimed before any work (``runs.claim``; made when the run
    publishes its files): a new ``results/<dataset>/<cache>/<time>/`` (pointed at by ``latest``) unless ``out`` names
    one. Returns them, the run's record, and whether the folder is a new one."""
    fresh = out is None
    out = runs.new_folder("results", cache.dataset_name(), cache.path.stem) if fresh else check_output_folder(
        out, "results folder")
    figures = out / "figures" if figures is None else check_output_folder(figures, "figures folder")
    this = runs.record("report", cache, cache.attrs, parameters)
    runs.claim(out, this, TABLES)   # both before any work: a folder that cannot be used fails now
    runs.claim(figures, this, FIGURES)
    return out, figures, this, fresh


HOW_TO_READ = (
    "**How to read it.** A *gain* is a method's accuracy on the target domain minus that of `none` "
    "(the source head applied to target images as they are), on the same images and seeds: positive "
    "means the method helps. In-domain accuracy is measured on the 20% source hold-out that also chose C, "
    "so it is slightly optimistic.")
INTERVALS = (
    "**Intervals.** A gain's `[low, high]` (`gains.csv`: `ci_low`/`ci_high`, `p`, `holm_excludes_0`; "
    "`methods.csv`: `gain_ci_low`/`gain_ci_high`) is a 95% Student-t interval that covers both the source split "
    "(each seed a new random 80/20 split) and the sampling of target images: it says whether the gain would hold "
    "for another split *and* other images of the target domains, which is what \"helps\" and \"hurts\" claim. An "
    "accuracy's `[low, high]` and a gain's `seed_ci_low`/`seed_ci_high` cover the split only, for these target "
    "images (the DomainBed-style comparison); `image_ci_low`/`image_ci_high` are the paired bootstrap over target "
    "images given these splits. Intervals are cut to the possible range ([0, 1], [−1, 1]). "
    "'—' marks methods that do not depend on the split (zero-shot).")
ONE_SEED = (
    " **This report ran one seed, so there is no interval over seeds** (`ci_low`/`ci_high` are nan, "
    "accuracies have no `[low, high]`): one split says nothing about the next; run `--seeds 5`.")


def _markdown(cache, emb, text, seeds, descriptions, repeats, res, t1, summ, gain, means, step=None) -> str:
    """``report.md``: the answer first, what was run, how to read it, Table 1, then every table."""
    attrs = cache.attrs
    described = "; ".join(f"{d.domain}: " + " | ".join(d.prompts) for d in text.descriptions.get("paper", []))
    left_out = [f"Description `{description}` is left out: it describes every domain with the same prompts as "
                f"`{same}` (no separate `{description}` phrasings are held for these domains, or your domain prompts "
                f"replace them)." for description, same in repeats.items()]
    comparable, compared = paper_comparison(emb)
    md = ["# pacs_embed report", "", "## The answer", "", answer(res.table, descriptions[0], res.correct), "",
          *([f"**How far to translate.** {step.sentence()} (`step_sweep.png`, `step_sweep.csv`.)", ""]
            if step is not None else []),
          f"Dataset: {cache.dataset_label()}. Cache `{cache}`: {attrs['model_id']} @ {attrs['revision']}, "
          f"{len(emb.x)} images "
          f"({emb.n_failed} unreadable left out), {attrs['dtype']} on {attrs['device']}. "
          f"Seeds: {list(seeds)}; heads: logistic regression, C chosen on a 20% hold-out of the source domain. "
          f"Image and text embeddings L2-normalised; Δ = t_src − t_tgt of unit text vectors.", "",
          f"Domain prompts (`paper` description): {described}.", "",
          *([" ".join(left_out), ""] if left_out else []),
          HOW_TO_READ, "", INTERVALS + (ONE_SEED if len(seeds) < 2 else ""), "",
          "## Table 1: Sim(prompt, domain)", "", markdown(t1["reproduced"]), "", compared, "",
          *(["Paper:", "", markdown(t1["paper"]), "", "Difference (this − paper):", "", markdown(t1["difference"]), ""]
            if comparable else []),
          "## Cross-domain accuracy per method (mean over pairs; 95% interval over seeds)", "",
          markdown(means[["method", "description", "accuracy", "seeds"]]), "",
          "## Gain over `none` per pair (95% interval over seeds; bootstrap over target images beside it)", "",
          comparisons(gain, means), "", markdown(gain), "", "## Every pair (mean ± std over seeds; also in summary.csv)", "",
          markdown(summ[["source", "target", "method", "description", "accuracy", "seeds"]])]
    return "\n".join(md) + "\n"


def _figures(folder: Path, emb, text, description: str, res, t1, gain, means, step=None) -> dict[str, Path]:
    """Every figure of the report (PNG + PDF) under the first description; {figure_<name>: its PNG}."""
    from . import plots   # matplotlib (and Pillow) only when a report is drawn
    plots.use_headless_backend()
    import matplotlib.pyplot as plt
    figs = {"table1": lambda: plots.table1_heatmap(t1),
            "accuracy_grid": lambda: plots.accuracy_grid(res.table, description, chance=1 / len(emb.classes)),
            "gains": lambda: plots.gains_summary(means, description),
            "gains_pairs": lambda: plots.gains_plot(gain, description),
            # Δ toward the first domain in display order; g as gap_shift takes it
            "projection": lambda: plots.projection(emb, text.vectors(description), class_text=text.class_vectors)}
    if step is not None:
        figs["step_sweep"] = lambda: plots.step_sweep(step)
    paths = {}
    for name, draw in figs.items():
        fig = draw()
        paths[f"figure_{name}"] = plots.save(fig, folder, name)[0]
        plt.close(fig)
    return paths


TEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#",
       "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
TITLES = {"none": "None (source head)", "zeroshot": "Zero-shot", "zeroshot_domain": "Zero-shot, domain prompt",
          "translate": "Translate (paper)", "translate_renorm": "Translate, renormalised",
          "interpolate": "Interpolate", "translate_calibrated": "Translate, calibrated step", "gap_shift": "Gap shift",
          "project_out": "Project out", "project_pair": "Project pair", "augment": "Augment", "lads": "LADS",
          "in_domain": "In-domain"}
LATEX_STYLES = ("interval", "pm")
SWEEP_ALL_SEEDS = 50_000   # above this many images the report's step sweep runs on the first seed


def tex(s: str) -> str:
    """``s`` with every LaTeX special character escaped (\\ { } _ & % # $ ~ ^)."""
    return "".join(TEX.get(ch, ch) for ch in str(s))


def number(x: float, sign: bool = False, digits: int = 3) -> str:
    """``x`` rounded, never "-0.000" (a value that rounds to zero is written as zero, with the sign asked for)."""
    text = f"{x:{'+' if sign else ''}.{digits}f}"
    if float(text) == 0:
        text = f"{0.0:{'+' if sign else ''}.{digits}f}"
    return text


def cell(m, lo, hi, sign: bool = False, style: str = "interval") -> str:
    """A mean with its interval: "0.512 [0.498, 0.526]" or, compact, "0.512 ± 0.014" (the half-width; the
    interval cut to the possible range is shown as is when it is not symmetric)."""
    if not np.isfinite(m):
        return "--"
    if not np.isfinite(lo):
        return number(m, sign)
    if style == "pm":
        return f"{number(m, sign)} $\\pm$ {number(max(hi - m, m - lo))}"
    return f"{number(m, sign)} [{number(lo, sign)}, {number(hi, sign)}]"


def table_env(tabular: list[str], caption: str, label: str) -> list[str]:
    """A floating ``table`` with caption and label, the tabular scaled to one column's width (two-column papers)."""
    return [r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
            r"\resizebox{\columnwidth}{!}{%", *tabular, "}", r"\end{table}", ""]


def latex(means: pd.DataFrame, style: str = "interval", label: str = "tab:pacs-embed-methods") -> str:
    """The report's headline as a LaTeX table (``\\usepackage{booktabs,graphicx}``): per method and description,
    mean cross-domain accuracy and its gain over `none` with their 95% intervals over seeds (``style="pm"``: mean ±
    half-width), readable method names, in a ``table`` with caption and label that fits one column."""
    if style not in LATEX_STYLES:
        raise ArgumentError(f"latex style {style!r}: choose one of {LATEX_STYLES}")
    tabular = [r"\begin{tabular}{llcc}", r"\toprule", r"Method & Description & Accuracy & Gain over none \\",
               r"\midrule"]
    for r in means.itertuples():
        acc = cell(r.mean, r.ci_low, r.ci_high, style=style) if seeded(r.method) else number(r.mean)
        tabular.append(" & ".join([tex(TITLES.get(r.method, r.method)), tex(r.description), acc,
                                   cell(r.gain, r.gain_ci_low, r.gain_ci_high, True, style)]) + r" \\")
    tabular += [r"\bottomrule", r"\end{tabular}"]
    caption = ("Mean cross-domain accuracy and gain over the source head applied as is (None), with "
               + ("95\\% intervals over seeds" if style == "interval" else "the half-width of the 95\\% interval over "
                                                                       "seeds")
               + "; zero-shot methods do not depend on the split.")
    return "\n".join([r"% pacs_embed report. Needs \usepackage{booktabs} and \usepackage{graphicx}.",
                      *table_env(tabular, caption, label)])


def comparisons(gain: pd.DataFrame, means: pd.DataFrame) -> str:
    """How many of the report's gains exclude 0, raw and after Holm's correction over all of them."""
    n = len(gain)
    if not n:
        return "No method beside `none` ran: there is no gain to compare."
    if gain["p"].isna().all():
        return "One seed: no interval over seeds, so no gain can be said to exclude 0."
    raw = int(((gain.ci_low > 0) | (gain.ci_high < 0)).sum())
    held = int(gain["holm_excludes_0"].sum())
    candidates = int((~means.method.isin(BASELINES)).sum())
    smallest = float(np.nanmin(gain["p"])) if gain["p"].notna().any() else float("nan")
    reach = (f" Holm's first step needs a p-value below {0.05 / n:.1e}; the smallest here is {smallest:.1e}, so "
             f"nothing can pass it with these seeds and images." if held == 0 and smallest >= 0.05 / n else "")
    return (f"**{n} comparisons** (method × description × pair). {raw} of their 95% intervals — over the source "
            f"split and the target images — exclude 0 uncorrected; if every true gain were 0, about {0.05 * n:.0f} "
            f"would by chance; {held} still do after Holm's correction over all {n} (family-wise error 5%; column "
            f"`holm_excludes_0`, p-values in `p`; the interval over seeds alone, for these images, is "
            f"`seed_ci_low`/`seed_ci_high`).{reach} The best method in the summaries is the best of {candidates} "
            f"candidates on these same results: its advantage is optimistic.")


def answer(table: pd.DataFrame, description: str = "paper", hits: dict | None = None) -> str:
    """The report's first paragraph: does the paper's translation beat `none`, by how much, with which interval —
    with ``hits`` (``res.correct``) the interval over splits and target images, as the tables (``gain_interval``)."""
    from .stats import _pair_diffs, gain_interval, seed_interval
    cross = table[table.source != table.target]

    def per_seed(method, description):
        rows = cross[(cross.method == method) & (cross.description == description)]
        return rows.groupby("seed")["accuracy"].mean()
    none, trans = per_seed("none", "-"), per_seed("translate", description)
    if none.empty or trans.empty:
        return "This report ran without `none` or `translate`, so it does not answer the paper's question."
    seeds = sorted(set(none.index) & set(trans.index))
    (n, nlo, nhi), (t, tlo, thi) = (seed_interval(none[seeds].values), seed_interval(trans[seeds].values))
    diffs = _pair_diffs(hits, "translate", description, "none") if hits is not None else []
    if diffs:
        g, glo, ghi, _ = gain_interval(diffs)
        over = f"{len(seeds)} seeds and the target images"
    else:
        g, glo, ghi = seed_interval((trans[seeds] - none[seeds]).values)
        over = f"{len(seeds)} seeds, for these target images"
    verdict = ("helps" if glo > 0 else "hurts" if ghi < 0 else "makes no difference that these seeds and images "
               "can tell")
    if verdict in ("helps", "hurts") and abs(g) < 0.005:
        verdict += ", if only by a tiny margin (under half a point of accuracy)"
    digits = 3 if max(abs(g), abs(glo) if np.isfinite(glo) else 0) >= 0.01 else 4
    interval = (f" (95% interval over {over} [{glo:+.{digits}f}, {ghi:+.{digits}f}])" if np.isfinite(glo)
                else f" ({len(seeds)} seed: no interval)")
    return (f"**Does the paper's translation C(x + Δ) beat the source head on target images as they are?** Mean "
            f"cross-domain accuracy: `translate` ({description}) {t:.3f}, `none` {n:.3f}; the gain is "
            f"{number(g, True, digits)}{interval}: translation "
            f"{verdict if np.isfinite(glo) else 'cannot be judged with one seed'}. "
            f"Every other method, per pair, follows below.")


def headline(emb, means: pd.DataFrame, description: str = "paper", domain_prompts: dict | None = None,
             templates: dict | None = None) -> dict:
    """One model's result in a few numbers: Table 1's diagonal, zero-shot, `none`, the paper's `translate` and the
    best other method (mean cross-domain accuracy with its 95% seed interval); ``study`` tabulates them."""
    text = text_side(emb, ("paper",), domain_prompts, templates=templates)
    sims = similarity_matrix(text.vectors("paper"), emb.x, emb.domain, len(emb.domains))   # description x images
    order = domain_order(emb.domains)
    idx = [emb.domains.index(d) for d in order]

    def row(method, description=None):
        rows = means[means.method == method]
        if description is not None and (rows.description == description).any():
            rows = rows[rows.description == description]
        if rows.empty:
            return None
        r = rows.sort_values("mean", ascending=False).iloc[0]
        return {"method": method, "description": r.description, "mean": float(r["mean"]),
                "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}
    # the best *other* method: never the paper's translate under this description, which has its own column
    others = means[~means.method.isin(BASELINES) & ~((means.method == "translate") & (means.description == description))]
    best = others.sort_values("mean", ascending=False).iloc[0] if not others.empty else None
    attrs = emb.cache.attrs
    return {"cache": str(emb.cache), "model_id": attrs["model_id"], "dim": int(emb.x.shape[1]), "images": int(len(emb.x)),
            "classes": len(emb.classes),
            "domains": order, "table1_diagonal": [float(sims[i, i]) for i in idx],
            "own_domain_first": int(sum(int(np.argmax(sims[i])) == i for i in idx)),
            "zeroshot": row("zeroshot"), "none": row("none"), "translate": row("translate", description),
            "best": None if best is None else row(best.method, best.description)}
