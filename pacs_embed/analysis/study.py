"""``pacs-embed report A.h5 B.h5 ...``: the paper's question across datasets and models, in one table.

Each cache (one dataset, one model) gets its full ``report`` in ``out/<dataset>/<model>/``; then one table with a
row per dataset x model — zero-shot, ``none``, the paper's ``translate`` and the best other method (flagged as
selected on these same results), each the mean cross-domain accuracy with its 95% interval over seeds — and, per
model, the average over datasets as DomainBed prints it (a plain mean of the dataset means, no interval). Written
as Markdown, CSV and LaTeX, with one figure.

Usage::

    paths = study(["data/embeddings/PACS/b32.h5", "data/embeddings/VLCS/b32.h5", "data/embeddings/PACS/l14.h5"])
    pd.read_csv(paths["study"])
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArgumentError
from ..cache import Cache
from ..files import atomic_write, component
from . import executor, runs
from .arguments import check_output_folder
from .evaluation import evaluate_many
from .reporting import evaluation_request, markdown, number, report, table_env, tex

COLUMNS = ("zeroshot", "none", "translate", "best")
TITLES = {"zeroshot": "zero-shot", "none": "none", "translate": "translate (paper)", "best": "best other (selected)"}
AVERAGE = "average"


def _check(caches) -> list[tuple[str, str, str, Path]]:
    """(cache, dataset label, model identity, its folder under the study's) for every cache, each readable and named
    once, before any work; two caches of one model on one dataset are refused (their rows would be one)."""
    caches = [str(c) for c in ([caches] if isinstance(caches, (str, Path)) else caches)]
    if not caches:
        raise ArgumentError("study needs at least one cache")
    seen = {}
    for c in caches:
        if Path(c).resolve() in seen:
            raise ArgumentError(f"the cache {c} is named twice: one report per cache, name each once")
        seen[Path(c).resolve()] = c
    out, labels = [], {}
    for c in caches:
        with Cache(c) as cache:   # a missing or damaged cache fails here, naming it
            dataset, model = cache.dataset_label(), cache.model_label()
            folder = Path(component(cache.dataset_name())) / cache.model_folder()
        if (dataset, model) in labels:
            raise ArgumentError(f"{labels[(dataset, model)]} and {c} are both {model} on {dataset}: their rows would be "
                             f"one. Give each model and dataset once.")
        labels[(dataset, model)] = c
        out.append((c, dataset, model, folder))
    return out


def study(caches, out=None, figures=None, base="results", **kwargs) -> dict[str, Path]:
    """``report`` for each cache (into ``out/<dataset>/<model>/`` and ``figures/<dataset>/<model>/``), then
    ``study.csv``/``study.md``/``study.tex`` and ``figures/study.png``; rows are labelled, and averaged per model, by
    the model's identity (id @ revision). ``out`` defaults to a new ``<base>/study/<time>/``, ``figures`` to ``out/figures``. ``kwargs`` go to ``report``."""
    from . import plots
    checked = _check(caches)
    fresh = out is None
    out = runs.new_folder(base, "study") if fresh else check_output_folder(out, "results folder")
    figures = out / "figures" if figures is None else check_output_folder(figures, "figures folder")
    this = runs.record("study", None, {}, {"caches": [c for c, _, _, _ in checked], **kwargs})
    runs.claim(out, this, ("study.csv", "study.md", "study.tex"))
    runs.claim(figures, this, ("study.png", "study.pdf"))
    runs.write(out, this)
    if fresh:
        runs.point_latest(out)
    evaluated = _evaluated([c for c, _, _, _ in checked], kwargs)
    rows = []
    for (cache, dataset, model, folder), res in zip(checked, evaluated):
        paths = report(cache, out / folder, figures / folder, evaluated=res, **kwargs)
        rows.append({"dataset": dataset, "model": model, **json.loads(paths["headline"].read_text())})
    table = study_table(rows)
    paths = {"study": out / "study.csv", "study_markdown": out / "study.md", "study_latex": out / "study.tex"}
    table.to_csv(paths["study"], index=False)
    atomic_write(paths["study_markdown"], ("\n".join(["# pacs_embed: datasets x models", "", EXPLAINED, "",
                                                      markdown(_shown(table))]) + "\n").encode())
    atomic_write(paths["study_latex"], latex(table).encode())
    fig = plots.study_plot(table)
    paths["figure_study"] = plots.save(fig, figures, "study")[0]
    import matplotlib.pyplot as plt
    plt.close(fig)
    return paths


def _evaluated(caches: list[str], kwargs: dict) -> list:
    """Under a joblib backend of processes or a cluster (``executor``): every cache's evaluation, each (cache, source)
    one job, handed over at once; else None for each (each report evaluates on this process's threads)."""
    if not executor.distributed():
        return [None] * len(caches)
    requests = [evaluation_request(c, **kwargs) for c in caches]
    return evaluate_many(requests, kwargs.get("head_cache", True))


EXPLAINED = (
    "One row per dataset and model: mean cross-domain accuracy (a head trained on one domain, scored on every "
    "other; averaged over pairs) with its 95% Student-t interval over seeds, for zero-shot CLIP (no interval: it "
    "does not depend on the split), `none` (the source head on target images as they are), the paper's `translate` "
    "and the best other method. *The best other method is selected on these same results*: its accuracy is the "
    "maximum of several noisy means, so it is optimistic; check it on other seeds before reading it as a gain. "
    f"The `{AVERAGE}` rows average each column over the datasets of a model, as DomainBed prints its Avg (a plain "
    "mean of the dataset means, with no interval; only over datasets that every model has). Each cache's full "
    "report is in `<dataset>/<model>/`. Models are named by their identity (id @ revision); a dataset of which the "
    "cache holds only some images says how many.")


def study_table(rows: list[dict]) -> pd.DataFrame:
    """Numeric: per (dataset, model) each column's mean, ci_low, ci_high; ``best_method`` names the selected one."""
    out = []
    for r in rows:
        line = {"dataset": r["dataset"], "model": r["model"], "model_id": r["model_id"], "images": r["images"],
                "classes": r["classes"], "own_domain_first": r["own_domain_first"], "domains": len(r["domains"])}
        for k in COLUMNS:
            v = r.get(k) or {}
            line.update({f"{k}": v.get("mean", np.nan), f"{k}_ci_low": v.get("ci_low", np.nan),
                         f"{k}_ci_high": v.get("ci_high", np.nan)})
        best = r.get("best")
        line["best_method"] = "" if not best else f"{best['method']} / {best['description']}"
        out.append(line)
    table = pd.DataFrame(out)
    datasets = list(dict.fromkeys(table.dataset))
    shared = [d for d in datasets if all(((table.dataset == d) & (table.model == m)).any() for m in set(table.model))]
    if len(shared) > 1:
        avg = (table[table.dataset.isin(shared)].groupby("model", sort=False)[list(COLUMNS)].mean().reset_index())
        avg["dataset"] = AVERAGE
        table = pd.concat([table, avg], ignore_index=True)
    return table


def _cell(row, k) -> str:
    m, lo, hi = row[k], row.get(f"{k}_ci_low", np.nan), row.get(f"{k}_ci_high", np.nan)
    if not np.isfinite(m):
        return ""
    if k == "zeroshot" or not np.isfinite(lo):
        return number(m)
    return f"{number(m)} [{number(lo)}, {number(hi)}]"


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text cells, for Markdown."""
    out = pd.DataFrame({"dataset": table.dataset, "model": table.model})
    for k in COLUMNS:
        out[TITLES[k]] = [_cell(r, k) for _, r in table.iterrows()]
    out["best method"] = table.get("best_method", "").fillna("")
    return out


def latex(table: pd.DataFrame) -> str:
    """The study as a LaTeX table (``\\usepackage{booktabs,graphicx}``), as DomainBed prints its results: a ``table``
    with caption and label, fitted to one column."""
    tabular = [r"\begin{tabular}{ll" + "c" * len(COLUMNS) + "l}", r"\toprule",
               " & ".join(["Dataset", "Model"] + [tex(TITLES[k]) for k in COLUMNS] + ["best method"]) + r" \\",
               r"\midrule"]
    for _, r in table.iterrows():
        if r.dataset == AVERAGE and not tabular[-1].startswith(r"\midrule"):
            tabular.append(r"\midrule")
        cells = [tex(str(r.dataset)), tex(str(r.model))] + [_cell(r, k).replace("−", "-") for k in COLUMNS]
        cells.append(tex(str(r.get("best_method", "") if isinstance(r.get("best_method", ""), str) else "")))
        tabular.append(" & ".join(cells) + r" \\")
    tabular += [r"\bottomrule", r"\end{tabular}"]
    caption = ("Mean cross-domain accuracy [95\\% interval over seeds] per dataset and model; the best other method "
               "is selected on these results (optimistic).")
    return "\n".join([r"% pacs_embed study. Needs \usepackage{booktabs} and \usepackage{graphicx}.",
                      *table_env(tabular, caption, "tab:pacs-embed-study")])
