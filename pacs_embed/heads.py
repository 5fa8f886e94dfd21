"""Logistic-regression heads on frozen image embeddings, selected on held-out *source* data only.

Usage::

    head = fit_head(x_source, y_source, seed=0, name="photo")
    head.model.predict(x_target)
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
HOLDOUT = 0.2


def split(n: int, seed: int, name: str, holdout: float = HOLDOUT) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) indices of a seeded random split, DomainBed-style: seeded by (seed, name)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    perm = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n)
    n_out = max(1, int(round(n * holdout)))
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


@dataclass
class Head:
    model: LogisticRegression
    C: float
    holdout_accuracy: float      # in-domain accuracy on the source hold-out (the split that chose C)
    train: np.ndarray            # indices into the source arrays
    holdout: np.ndarray
    validation: dict             # C -> hold-out accuracy


def _fit(x, y, C, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(x, y)


def fit_head(x: np.ndarray, y: np.ndarray, seed: int, name: str = "", Cs=C_GRID,
             extra: tuple[np.ndarray, np.ndarray] | None = None, extra_index: np.ndarray | None = None) -> Head:
    """Fit one head on source features ``x`` (labels ``y``), choosing C on a seeded 20% source hold-out.

    Only source arrays come in, so model selection cannot see target images. ``extra`` adds
    training rows (train-time augmentation); ``extra_index`` gives, per extra row, the source row it
    was made from, so rows made from hold-out images are dropped from training.
    """
    train, holdout = split(len(y), seed, name)
    xt, yt = x[train], y[train]
    if extra is not None:
        keep = np.isin(extra_index, train)
        xt, yt = np.concatenate([xt, extra[0][keep]]), np.concatenate([yt, extra[1][keep]])
    scores = {}
    best = None
    for C in Cs:
        model = _fit(xt, yt, C, seed)
        scores[C] = float((model.predict(x[holdout]) == y[holdout]).mean())
        if best is None or scores[C] > scores[best[0]]:
            best = (C, model)
    return Head(best[1], best[0], scores[best[0]], train, holdout, scores)
