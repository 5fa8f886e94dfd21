"""Checks of the analysis functions' arguments: a wrong one is an error that names it, not a failure deep inside.

Usage::

    methods = check_names(methods, "methods")      # "translate" -> ["translate"]; None stays None
    seeds = check_seeds(seeds)                 # range(5) or 5 -> [0, 1, 2, 3, 4]
    emb = check_embeddings(emb, "evaluate")        # a path instead of pa.load(path) -> error saying so
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .embeddings import Embeddings
from ..errors import ArgumentError, ArgumentTypeError

TABLE_COLUMNS = ("source", "target", "method", "description", "seed", "accuracy")   # a results table's


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'translate'?)' for a mistyped name close to one of ``choices``, else ''."""
    import difflib
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_names(value, what: str, default: str | None = None) -> list[str] | None:
    """A list of names: one string is one name; None stays None. With ``default`` (what None means), an empty
    list is an error: it would otherwise quietly mean the default."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    items = list(value) if isinstance(value, Iterable) else None
    if items is None or not all(isinstance(v, str) for v in items):
        raise ArgumentTypeError(f"{what} must be a name or a list of names, not {value!r}")
    if default is not None and not items:
        raise ArgumentError(f"{what} is empty: name at least one, or leave it out (None) for {default}")
    if default is not None and len(set(items)) < len(items):   # counted twice, it would narrow every interval
        twice = sorted({v for v in items if items.count(v) > 1})
        raise ArgumentError(f"{what} {items} repeat {twice}: name each once")
    return items


def check_seeds(seeds) -> list[int]:
    """The seeds themselves (each a new 80/20 split of the source), at least one, none repeated."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):   # a count, as --seeds 5 is
        if seeds < 1:
            raise ArgumentError(f"seeds={seeds}: give a number of seeds, 1 or more (or the seeds, e.g. range(5))")
        seeds = range(int(seeds))
    seeds = list(seeds)
    if not seeds:
        raise ArgumentError("seeds is empty: give at least one seed (e.g. seeds=range(5))")
    if not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise ArgumentTypeError(f"seeds must be integers, not {seeds!r}")
    if len(set(seeds)) < len(seeds):
        raise ArgumentError(f"seeds {seeds} repeat a seed: each seed is one split, counted once")
    return [int(s) for s in seeds]


def check_c_grid(Cs) -> tuple[float, ...]:
    """The inverse regularisation strengths to choose from: at least one, each > 0."""
    Cs = tuple(float(c) for c in np.atleast_1d(np.asarray(Cs, dtype=float)))
    if not Cs or not all(np.isfinite(c) and c > 0 for c in Cs):
        raise ArgumentError(f"Cs must be one or more positive numbers (scikit-learn's C), not {Cs!r}")
    return Cs


def check_noun_count(n_nouns) -> int | None:
    """How many generic nouns the 'nouns' descriptions average over: None (all of them) or at least 1."""
    if n_nouns is not None and (not isinstance(n_nouns, (int, np.integer)) or n_nouns < 1):
        raise ArgumentError(f"n_nouns must be a positive number of nouns or None (all of them), not {n_nouns!r}")
    return n_nouns


def check_prompt_dict(domain_prompts) -> dict:
    """{domain: prompt or [prompts]}; None is no change."""
    if domain_prompts is None:
        return {}
    if not isinstance(domain_prompts, Mapping):
        raise ArgumentTypeError(f"domain_prompts must be a dict {{domain: prompt or [prompts]}}, e.g. "
                        f"{{'cartoon': 'a comic strip'}}, not {domain_prompts!r}")
    return dict(domain_prompts)


def check_positive(n, what: str) -> int:
    """A count that must be at least 1 (bootstrap resamples, ...)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ArgumentError(f"{what} must be a whole number, 1 or more, not {n!r}")
    return int(n)


def check_output_folder(path, what: str):
    """``path`` as a Path, refused when it is an existing file (a folder is made for it when missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"{what} {str(path)!r} is a file, not a folder; name a folder (it is made if missing)")
    return path


def check_embeddings(emb, what: str) -> Embeddings:
    """The loaded embeddings ``what`` takes first; a cache path (or anything else) is an error saying to load it."""
    if not isinstance(emb, Embeddings):
        fix = f"emb = pa.load({str(emb)!r})" if isinstance(emb, (str, Path)) else "emb = pa.load(cache)"
        raise ArgumentTypeError(f"{what} takes the loaded embeddings first ({fix}, then {what}(emb, ...)), "
                        f"not {type(emb).__name__} {emb!r:.60}")
    return emb


def check_cache_path(emb, what: str) -> Path:
    """The cache file loaded embeddings came from (prompt vectors are read from it); embeddings built in memory
    have none: an error saying to give the text side as vectors."""
    if check_embeddings(emb, what).cache is None:
        raise ArgumentError(f"{what}: these embeddings were built in memory, with no cache to read prompt vectors from; "
                         f"give the text side as vectors (text = pa.TextSide.from_vectors(...), then evaluate(emb, "
                         f"text=text))")
    return emb.cache


def check_results_table(table, what: str) -> pd.DataFrame:
    """A results table (``res.table``, or results.csv read back); the Results object or another table is an error."""
    if hasattr(table, "correct") and isinstance(getattr(table, "table", None), pd.DataFrame):
        raise ArgumentTypeError(f"{what} takes the results table, res.table, not the Results of evaluate: {what}(res.table)")
    if not isinstance(table, pd.DataFrame) or not set(TABLE_COLUMNS) <= set(table.columns):
        got = list(table.columns) if isinstance(table, pd.DataFrame) else type(table).__name__
        raise ArgumentTypeError(f"{what} takes a results table (res.table, or results.csv read with pandas) with columns "
                        f"{list(TABLE_COLUMNS)}; got {got}")
    return table


def check_results(res, what: str):
    """The Results of ``evaluate`` (its per-image hits); a table is an error saying what to pass."""
    if not hasattr(res, "correct"):
        raise ArgumentTypeError(f"{what} takes the Results of evaluate (res = pa.evaluate(emb, ...); it needs the per-image "
                        f"hits), not a {type(res).__name__}: {what}(res)")
    return res
