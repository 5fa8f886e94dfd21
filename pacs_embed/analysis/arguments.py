"""Checks of the analysis functions' arguments: a wrong one is an error that names it, not a failure deep inside.

Usage::

    methods = names(methods, "methods")      # "translate" -> ["translate"]; None stays None
    seeds = seed_list(seeds)                 # range(5) -> [0, 1, 2, 3, 4]; 5 -> error suggesting range(5)
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np


def names(value, what: str) -> list[str] | None:
    """A list of names: one string is one name; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    items = list(value) if isinstance(value, Iterable) else None
    if items is None or not all(isinstance(v, str) for v in items):
        raise TypeError(f"{what} must be a name or a list of names, not {value!r}")
    return items


def seed_list(seeds) -> list[int]:
    """The seeds themselves (each a new 80/20 split of the source), at least one, none repeated."""
    if isinstance(seeds, (int, np.integer)):
        raise TypeError(f"seeds={seeds}: give the seeds themselves, e.g. seeds=range({seeds})")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed (e.g. seeds=range(5))")
    if not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise TypeError(f"seeds must be integers, not {seeds!r}")
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds {seeds} repeat a seed: each seed is one split, counted once")
    return [int(s) for s in seeds]


def c_grid(Cs) -> tuple[float, ...]:
    """The inverse regularisation strengths to choose from: at least one, each > 0."""
    Cs = tuple(float(c) for c in np.atleast_1d(np.asarray(Cs, dtype=float)))
    if not Cs or not all(np.isfinite(c) and c > 0 for c in Cs):
        raise ValueError(f"Cs must be one or more positive numbers (scikit-learn's C), not {Cs!r}")
    return Cs


def noun_count(n_nouns) -> int | None:
    """How many generic nouns the 'nouns' descriptions average over: None (all of them) or at least 1."""
    if n_nouns is not None and (not isinstance(n_nouns, (int, np.integer)) or n_nouns < 1):
        raise ValueError(f"n_nouns must be a positive number of nouns or None (all of them), not {n_nouns!r}")
    return n_nouns


def prompt_dict(domain_prompts) -> dict:
    """{domain: prompt or [prompts]}; None is no change."""
    if domain_prompts is None:
        return {}
    if not isinstance(domain_prompts, Mapping):
        raise TypeError(f"domain_prompts must be a dict {{domain: prompt or [prompts]}}, e.g. "
                        f"{{'cartoon': 'a comic strip'}}, not {domain_prompts!r}")
    return dict(domain_prompts)


def positive(n, what: str) -> int:
    """A count that must be at least 1 (bootstrap resamples, ...)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a whole number, 1 or more, not {n!r}")
    return int(n)


def output_folder(path, what: str):
    """``path`` as a Path, refused when it is an existing file (a folder is made for it when missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file, not a folder; name a folder (it is made if missing)")
    return path
