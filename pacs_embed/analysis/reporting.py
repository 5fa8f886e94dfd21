"""``pacs-embed report``: the results table as CSV and Markdown, with every figure.

Usage::

    paths = report("data/embeddings/PACS/openai__clip-vit-base-patch32.h5", out="results", figures="figures",
                   domain_prompts={"cartoon": "a comic strip"})
    paths = compare_models(["data/embeddings/PACS/a.h5", "data/embeddings/PACS/b.h5"])   # one report per model + models.md
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import read_attrs
from ..files import atomic_write
from .arguments import names, output_folder, positive, seed_list
from .embeddings import domain_order, load
from .evaluation import evaluate
from .similarity import paper_comparison, similarity_matrix, table1
from .stats import gains, method_means, summary
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


def report(cache, out="results", figures="figures", seeds=range(5), descriptions=DEFAULT_DESCRIPTIONS,
           domain_prompts: dict | None = None, methods=None, n_nouns: int | None = 100, n_boot: int = 1000,
           head_cache=True, progress: bool = True, sources=None) -> dict[str, Path]:
    """Evaluate every method on ``cache`` and write tables (CSV + Markdown) and figures (PNG + PDF).
    ``sources`` limits the source domains (default: all); every domain is scored as a target."""
    from . import plots   # matplotlib (and Pillow) only when a report is drawn
    plots.use_headless_backend()
    out, figures = output_folder(out, "results folder"), output_folder(figures, "figures folder")
    descriptions, seeds, n_boot = names(descriptions, "descriptions"), seed_list(seeds), positive(n_boot, "n_boot")
    names(methods, "methods", "every default method")   # checked before any work; evaluate uses them
    names(sources, "sources", "every domain")
    if not descriptions:
        raise ValueError(f"descriptions is empty: name at least one of {DEFAULT_DESCRIPTIONS}")
    for folder in (out, figures):   # both before any work: a folder that cannot be made fails now
        folder.mkdir(parents=True, exist_ok=True)
    emb = load(cache)
    t1 = table1(emb, domain_prompts)
    text = text_side(emb, tuple(descriptions), domain_prompts, n_nouns)
    repeats = repeated(text.descriptions)   # e.g. `ensemble` on a dataset with no ensembles: `paper` again
    descriptions = [d for d in descriptions if d not in repeats]
    res = evaluate(emb, methods, seeds=seeds, text=text, descriptions=descriptions, head_cache=head_cache,
                   progress=progress, sources=sources)
    summ, gain, means = summary(res.table), gains(res, n_boot=n_boot), method_means(res.table)
    paths = {}
    for name, df in [("results", res.table), ("summary", summ), ("gains", gain), ("methods", means),
                     ("table1", t1["reproduced"]), ("table1_difference", t1["difference"])]:
        paths[name] = out / f"{name}.csv"
        df.to_csv(paths[name], index=name.startswith("table1"))
    attrs = read_attrs(cache)
    described = "; ".join(f"{d.domain}: " + " | ".join(d.prompts) for d in text.descriptions.get("paper", []))
    order = {d: i for i, d in enumerate(domain_order(emb.domains))}
    gain = gain.sort_values(["source", "target"], key=lambda c: c.map(order), kind="stable", ignore_index=True)
    comparable, compared = paper_comparison(emb)
    md = ["# pacs_embed report", "",
          f"Cache `{cache}`: {attrs['model_id']} @ {attrs['revision']}, {len(emb.x)} images "
          f"({emb.n_failed} unreadable left out), {attrs['dtype']} on {attrs['device']}. "
          f"Seeds: {list(seeds)}; heads: logistic regression, C chosen on a 20% hold-out of the source domain. "
          f"Image and text embeddings L2-normalised; Δ = t_src − t_tgt of unit text vectors.", "",
          f"Domain prompts (`paper` description): {described}.", "",
          *([" ".join(f"Description `{how}` is left out: it describes every domain with the same prompts as `{same}` "
                      f"(no separate `{how}` phrasings are held for these domains, or your domain prompts replace them)."
                      for how, same in repeats.items()), ""]
            if repeats else []),
          "**How to read it.** A *gain* is a method's accuracy on the target domain minus that of `none` "
          "(the source head applied to target images as they are), on the same images and seeds: positive "
          "means the method helps. In-domain accuracy is measured on the 20% source hold-out that also chose C, "
          "so it is slightly optimistic.", "",
          "**Intervals.** `[low, high]` and `ci_low`/`ci_high` are 95% Student-t intervals over seeds (each seed "
          "a new random 80/20 split of the source; cut to the possible range, [0, 1] for an accuracy and [−1, 1] "
          "for a gain, which few seeds can overshoot): they say whether a result would survive another split, for "
          "these target images. `image_ci_low`/`image_ci_high` are the paired bootstrap over target images given "
          "these splits; they ignore split variation and are too narrow to compare methods with. "
          "'—' marks methods that do not depend on the split (zero-shot)."
          + (" **This report ran one seed, so there is no interval over seeds** (`ci_low`/`ci_high` are nan, "
             "accuracies have no `[low, high]`): one split says nothing about the next; run `--seeds 5`."
             if len(seeds) < 2 else ""), "",
          "## Table 1: Sim(prompt, domain)", "", markdown(t1["reproduced"]), "", compared, "",
          *(["Paper:", "", markdown(t1["paper"]), "", "Difference (this − paper):", "", markdown(t1["difference"]), ""]
            if comparable else []),
          "## Cross-domain accuracy per method (mean over pairs; 95% interval over seeds)", "",
          markdown(means[["method", "description", "accuracy", "seeds"]]), "",
          "## Gain over `none` per pair (95% interval over seeds; bootstrap over target images beside it)", "",
          markdown(gain), "", "## Every pair (mean ± std over seeds)", "",
          markdown(summ[["source", "target", "method", "description", "accuracy", "seeds"]])]
    paths["markdown"] = out / "report.md"
    atomic_write(paths["markdown"], ("\n".join(md) + "\n").encode())
    paths["headline"] = out / "headline.json"
    atomic_write(paths["headline"], json.dumps(headline(emb, means, descriptions[0], domain_prompts), indent=1,
                                               default=float).encode())
    first = descriptions[0]
    figs = {"table1": plots.table1_heatmap(t1),
            "accuracy_grid": plots.accuracy_grid(res.table, first),
            "gains": plots.gains_plot(gain, first),
            "projection": plots.projection(emb, text.vectors(first), source="photo" if "photo" in emb.domains else None)}
    import matplotlib.pyplot as plt
    for name, fig in figs.items():
        paths[f"figure_{name}"] = plots.save(fig, figures, name)[0]
        plt.close(fig)
    return paths


def headline(emb, means: pd.DataFrame, description: str = "paper", domain_prompts: dict | None = None) -> dict:
    """One model's result in a few numbers: Table 1's diagonal, `none`, the paper's `translate` and the best
    other method (mean cross-domain accuracy with its 95% seed interval)."""
    text = text_side(emb, ("paper",), domain_prompts)
    sims = similarity_matrix(text.vectors("paper"), emb.x, emb.domain, len(emb.domains))   # description x images
    order = domain_order(emb.domains)
    idx = [emb.domains.index(d) for d in order]

    def row(method, how=None):
        rows = means[means.method == method]
        if how is not None and (rows.description == how).any():
            rows = rows[rows.description == how]
        if rows.empty:
            return None
        r = rows.sort_values("mean", ascending=False).iloc[0]
        return {"method": method, "description": r.description, "mean": float(r["mean"]),
                "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}
    others = means[~means.method.isin(BASELINES)]
    best = others.sort_values("mean", ascending=False).iloc[0] if not others.empty else None
    attrs = read_attrs(emb.cache)
    return {"cache": str(emb.cache), "model_id": attrs["model_id"], "dim": int(emb.x.shape[1]), "images": int(len(emb.x)),
            "classes": len(emb.classes),
            "domains": order, "table1_diagonal": [float(sims[i, i]) for i in idx],
            "own_domain_first": int(sum(int(np.argmax(sims[i])) == i for i in idx)),
            "none": row("none"), "translate": row("translate", description),
            "best": None if best is None else row(best.method, best.description)}


def _names(caches) -> list[str]:
    stems = [Path(c).stem for c in caches]
    return [s if stems.count(s) == 1 else f"{i + 1}-{s}" for i, s in enumerate(stems)]


def compare_models(caches, out="results", figures="figures", **kwargs) -> dict[str, Path]:
    """``report`` for each cache (into ``out/<cache name>/``, ``figures/<cache name>/``), then one table
    (``models.csv``, ``models.md``) and one figure (``models.png``) side by side: does the paper's conclusion
    depend on the backbone? ``kwargs`` go to ``report``."""
    from . import plots
    out, figures = output_folder(out, "results folder"), output_folder(figures, "figures folder")
    _check_comparable(caches)
    rows = []
    for name, cache in zip(_names(caches), caches):
        paths = report(cache, out / name, figures / name, **kwargs)
        rows.append({"name": name, **json.loads(paths["headline"].read_text())})
    table = models_table(rows)
    paths = {"models": out / "models.csv", "models_markdown": out / "models.md"}
    table.to_csv(paths["models"], index=False)
    md = ["# pacs_embed: models side by side", "",
          "Per model (one cache each): Table 1's diagonal, Sim(description of a domain, its images) — cosine "
          "scales differ between models, so compare the pattern, not the level; how many domains' descriptions "
          "are closest to their own domain's images; mean cross-domain accuracy of `none`, of the paper's "
          "`translate` and of the best other method (95% Student-t intervals over seeds). The best method is "
          "picked as the highest of the model's methods on these same results, so its accuracy is optimistic "
          "(a maximum of noisy means); check it on other seeds before reading it as a gain. Each model's full "
          "report is in its folder.", "", markdown(table)]
    atomic_write(paths["models_markdown"], ("\n".join(md) + "\n").encode())
    fig = plots.models_plot(rows)
    paths["figure_models"] = plots.save(fig, figures, "models")[0]
    import matplotlib.pyplot as plt
    plt.close(fig)
    return paths


def _check_comparable(caches) -> None:
    """Every cache readable, and all of one dataset (same domains and classes), before any work."""
    from ..cache import read_names
    if not caches:
        raise ValueError("compare_models needs at least one cache")
    same = [str(c) for i, c in enumerate(caches) if Path(c).resolve() in [Path(o).resolve() for o in caches[:i]]]
    if same:
        raise ValueError(f"compare_models names the cache {same[0]} twice: one report per model, name each once")
    names = {str(c): read_names(c) for c in caches}   # a missing or damaged cache fails here, naming it
    first, (domains, classes) = next(iter(names.items()))
    for c, (d, k) in names.items():
        if (d, k) != (domains, classes):
            raise ValueError(f"models are compared on one dataset: {c} has domains {d} and classes {k}, "
                             f"{first} has {domains} and {classes}")


def models_table(rows: list[dict]) -> pd.DataFrame:
    """One row per model from ``headline`` dicts."""
    def acc(r):
        return "" if r is None else f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    out = []
    for r in rows:
        line = {"model": r["name"], "dim": r["dim"], "images": r["images"]}
        line.update({f"sim {d}": v for d, v in zip(r["domains"], r["table1_diagonal"])})
        line["own domain first"] = f"{r['own_domain_first']}/{len(r['domains'])}"
        line["none"], line["translate"] = acc(r["none"]), acc(r["translate"])
        best = r["best"]
        line["best method"] = "" if best is None else f"{best['method']} / {best['description']}"
        line["best"] = acc(best)
        out.append(line)
    return pd.DataFrame(out)
