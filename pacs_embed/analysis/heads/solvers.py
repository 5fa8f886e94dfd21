"""Fitting heads: the ``fast`` solver (``lbfgs``) for one split or several splits together, with C chosen on a sample of
rows above ``SELECT_ROWS``; the same model solved by torch on a device (``torch``: CUDA when present; torch is
imported only then: the analysis needs no torch otherwise); scikit-learn's ``LogisticRegression`` (``sklearn``, for
comparison, not cached).

Usage::

    head = fit_head(x, y, train, holdout, cache=HeadCache("mini.h5.heads"))
    heads = fit_heads(x, y, [split(len(y), seed, "photo") for seed in range(5)])   # five seeds at once
    head = fit_head(x, y, train, holdout, solver="torch")
"""
from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from ...errors import ArgumentError
from ..arguments import check_c_grid
from . import model
from .lbfgs import lbfgs_paths, single_threaded_blas
from .model import (C_GRID, SOLVERS, Head, array_digest, best, classes_in, head_key,
                    shifted)
from .store import HeadCache


def _written_out(x: np.ndarray, y: np.ndarray, shifts) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``x`` and every shifted copy normalise(x + c) of them, with their labels (solvers that cannot
    train on shifts without writing them out)."""
    if shifts is None:
        return x, y
    return np.concatenate([x] + [shifted(x, c) for c in shifts]), np.tile(y, len(shifts) + 1)


def fit_head(x: np.ndarray, y: np.ndarray, train: np.ndarray, holdout: np.ndarray, Cs=C_GRID,
             cache: HeadCache | None = None, solver: str = "fast", shifts: np.ndarray | None = None) -> Head:
    """Fit on rows ``train`` of ``x`` (labels ``y``) for each C, keep the C best on rows ``holdout``.

    ``x`` may hold extra rows beyond the source images (train-time augmentation): only the rows
    listed in ``train`` and ``holdout`` are used. ``shifts`` (m, D) adds, for every training row and
    every shift c, the row ``normalise(x + c)`` (with its label) without materialising them: the
    solver reuses one matrix product for all copies. ``solver="sklearn"`` fits with scikit-learn's
    ``LogisticRegression`` instead (for comparison; not cached). Ties go to the smaller C.
    """
    solver = resolve_solver(solver)
    if solver == "sklearn":
        return _sklearn_head(x, y, train, holdout, Cs, shifts)
    if solver == "torch":
        return _torch_head(x, y, train, holdout, Cs, cache, shifts)
    return fit_heads(x, y, [(train, holdout)], Cs, cache, shifts)[0]


def _torch_head(x, y, train, holdout, Cs, cache, shifts) -> Head:
    """``fit_head`` with the torch solver (``torch_path``: torch imported only then), cached under a key
    of its own."""
    x, y, shifts = as_inputs(x, y, shifts)
    Cs = check_c_grid(Cs)
    _check_rows(x, y, [(train, holdout)])
    classes = classes_in(y, train)
    key = head_key(x, y, train, holdout, Cs, shifts, solver="torch")
    if cache is not None and (hit := cache.get(key, x.shape[1], classes)) is not None:
        return hit
    xt, yt = _written_out(x[train], y[train], shifts)   # then sent to the device
    path = torch_path(xt, np.searchsorted(classes, yt), len(classes), Cs, model.TOL / 10)
    head = best(path, classes, x, y, holdout, key)
    if cache is not None:
        cache.put(key, head)
    return head


def fit_heads(x: np.ndarray, y: np.ndarray, splits, Cs=C_GRID, cache: HeadCache | None = None,
              shifts: np.ndarray | None = None, keys: list[str] | None = None) -> list[Head]:
    """``fit_head`` for several (train, holdout) splits of the same rows (the seeds of a source), fitted together:
    each split runs its own L-BFGS and their loss evaluations share one matrix product (five seeds of each PACS
    source: ``benchmarks/analysis_speed.py`` prints the time against one by one). Heads already in ``cache``
    are read, not fitted. ``keys``: the splits' ``head_key``s, when already known."""
    x, y, shifts = as_inputs(x, y, shifts)
    Cs = check_c_grid(Cs)
    _check_rows(x, y, splits)
    if keys is None:
        xd = array_digest(x)
        keys = [head_key(x, y, train, holdout, Cs, shifts, xd) for train, holdout in splits]
    heads, todo = _cached(x, y, splits, keys, cache)
    groups = 1 + (0 if shifts is None else len(shifts))
    for classes, batch in todo.items():
        classes = np.array(classes, dtype=y.dtype)
        # the solver holds a few (groups, classes, rows) float32 arrays per split: at most BATCH_BYTES in all,
        # and a rotated copy of its own rows each (a (n, d) float32 array)
        per_split = max(groups * len(classes), x.shape[1]) * len(x) * 4
        size = max(1, model.BATCH_BYTES // per_split)
        for part in (batch[k:k + size] for k in range(0, len(batch), size)):
            with single_threaded_blas():
                fitted = _fit_part(x, y, [splits[i] for i in part], classes, Cs, shifts, [keys[i] for i in part])
            for i, head in zip(part, fitted):
                heads[i] = head
                if cache is not None:
                    cache.put(keys[i], head)
    return heads


def _cached(x, y, splits, keys, cache) -> tuple[list, dict]:
    """(the heads ``cache`` holds, None for the others; the classes present in training -> the splits to fit)."""
    heads: list[Head | None] = [None] * len(splits)
    todo: dict[tuple, list[int]] = {}
    for i, ((train, _), key) in enumerate(zip(splits, keys)):
        if cache is not None and (hit := cache.get(key, x.shape[1], classes_in(y, train))) is not None:
            heads[i] = hit
            continue
        todo.setdefault(tuple(classes_in(y, train).tolist()), []).append(i)
    return heads, todo


def _fit_part(x, y, splits, classes, Cs, shifts, keys) -> list[Head]:
    """The heads of ``splits`` (of the same classes): those of at most SELECT_ROWS training rows in one lock-step
    solver run, the others one by one with C chosen on a sample (``_fit_sampled``)."""
    heads: list[Head | None] = [None] * len(splits)
    whole = [i for i, (train, _) in enumerate(splits) if len(train) <= model.SELECT_ROWS]
    sampled = [i for i, (train, _) in enumerate(splits) if len(train) > model.SELECT_ROWS]
    if whole:
        paths, _ = lbfgs_paths(x, y, [splits[i] for i in whole], classes, Cs, shifts)
        for i, path in zip(whole, paths):
            heads[i] = best(path, classes, x, y, splits[i][1], keys[i])
    if sampled:
        for i, head in zip(sampled, _fit_sampled(x, y, [splits[i] for i in sampled], classes, Cs, shifts,
                                                 [keys[i] for i in sampled])):
            heads[i] = head
    return heads


def selection_rows(train: np.ndarray, y: np.ndarray, cap: int, key: str) -> np.ndarray:
    """At most about ``cap`` of the ``train`` rows, stratified by class (each class its share, at least one row),
    drawn by a generator seeded from the head's ``key``: the rows C is chosen on when there are more."""
    train = np.asarray(train)
    if len(train) <= cap:
        return train
    rng = np.random.default_rng(int(key[:16], 16) if key else 0)
    labels = y[train]
    order = np.argsort(labels, kind="stable")
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    quota = np.maximum(1, np.floor(counts * cap / len(train))).astype(int)
    picked = [rng.choice(train[order[a:a + n]], q, replace=False) for a, n, q in zip(starts, counts, quota)]
    return np.sort(np.concatenate(picked))


def _fit_sampled(x, y, splits, classes, Cs, shifts, keys) -> list[Head]:
    """Heads of splits with more than SELECT_ROWS training rows: the C path is walked on a stratified sample of
    ``selection_rows`` (its C scaled by rows / sample rows, so that each C weighs data against the penalty as on
    every row; C chosen on the whole hold-out, as always), then the head is fitted once on every training row at
    that C, starting from the sample's solution. ``validation`` holds the sample's hold-out accuracies, the chosen
    C's replaced by the final head's."""
    heads = []
    for (train, holdout), key in zip(splits, keys):   # one at a time: each sample's grid is scaled by its own size
        sample = selection_rows(train, y, model.SELECT_ROWS, key)
        # the loss sums over rows, so a sample of n of N rows at C·N/n has the full objective's balance at C
        scale = len(train) / len(sample)
        grid = sorted(Cs)
        paths, V = lbfgs_paths(x, y, [(sample, holdout)], classes, [c * scale for c in grid], shifts)
        h = best([(c, W, b, nit) for c, (_, W, b, nit) in zip(grid, paths[0])], classes, x, y, holdout)
        paths, _ = lbfgs_paths(x, y, [(train, holdout)], classes, [np.array([h.C])], shifts, start=[(h.W, h.b)],
                                rotation=V)
        C, W, b, nit = paths[0][0]
        head = best([(C, W, b, nit)], classes, x, y, holdout, key)
        head.validation = {**h.validation, C: head.holdout_accuracy}
        head.iterations += h.iterations
        heads.append(head)
    return heads


def check_solver(solver: str) -> str:
    """``solver`` when it is one of SOLVERS, else an error naming them."""
    if solver not in SOLVERS:
        raise ArgumentError(f"solver {solver!r}: choose one of {SOLVERS}")
    return solver


def resolve_solver(solver: str) -> str:
    """The solver ``solver`` stands for: "auto" is "torch" when a CUDA device is present, else "fast" — decided
    without importing torch on a machine with no NVIDIA driver (the analysis needs no torch there)."""
    if check_solver(solver) != "auto":
        return solver
    import importlib.util
    if not (Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists() or "torch" in sys.modules):
        return "fast"
    if importlib.util.find_spec("torch") is None:
        return "fast"
    import torch
    return "torch" if torch.cuda.is_available() else "fast"


def _check_rows(x, y, splits) -> None:
    """Features and labels that match, are finite, and splits that index them (each part non-empty)."""
    if x.ndim != 2 or y.shape != (len(x),):
        raise ArgumentError(f"x must be (n, d) features with one label per row in y; got x {x.shape}, y {y.shape}")
    if not np.isfinite(x).all():
        raise ArgumentError(f"the features hold NaN or inf in {int((~np.isfinite(x).all(1)).sum())} of {len(x)} rows")
    for train, holdout in splits:
        for what, idx in (("train", train), ("holdout", holdout)):
            idx = np.asarray(idx)
            if not len(idx):
                raise ArgumentError(f"the {what} split is empty: a head needs rows to train on and rows to choose C on")
            if idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= len(x):
                raise ArgumentError(f"the {what} split must be row indices in [0, {len(x)}); it holds "
                                 f"{idx.dtype} values from {idx.min()} to {idx.max()}")


def as_inputs(x, y, shifts):
    """Rows as contiguous float32, labels as an array, shifts as (m, d) float64 or None (no shift)."""
    x = np.ascontiguousarray(x, np.float32)
    shifts = None if shifts is None or len(shifts) == 0 else np.asarray(shifts, np.float64).reshape(-1, x.shape[1])
    return x, np.asarray(y), shifts


def _sklearn_head(x, y, train, holdout, Cs, shifts) -> Head:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    x, y, shifts = as_inputs(x, y, shifts)
    _check_rows(x, y, [(train, holdout)])
    classes = classes_in(y, train)
    xt, yt = _written_out(x[train], y[train], shifts)
    path = []
    for C in Cs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = LogisticRegression(C=C, max_iter=1000).fit(xt, yt)
        W, b = (m.coef_.T, m.intercept_) if len(m.classes_) > 2 else (
            np.stack([-m.coef_[0], m.coef_[0]], 1) / 2, np.array([-m.intercept_[0], m.intercept_[0]]) / 2)
        path.append((C, W, b, int(np.max(m.n_iter_))))
    return best(path, classes, x, y, holdout)


# The torch solver (``solver="torch"``; ``"auto"`` picks it when CUDA is present): the same model -- minimise
# C·Σᵢ CE(W·xᵢ + b, yᵢ) + ½‖W‖², C chosen from the grid on the seeded 20% source hold-out (ties: the smaller C) --
# and the same exact change of variables (features centred and rotated onto the eigenvectors of their scatter, each
# variable rescaled by √(σⱼ²/K + 1/(C·n))), solved by torch's L-BFGS with a strong-Wolfe line search in float64, the
# C grid walked upward from the previous solution. Shifted copies are written out before they go to the device. It
# differs from ``fast`` in one way: C is always chosen on every training row. ``tests/test_torch_heads.py`` checks it
# against scikit-learn and ``fast`` on CPU torch.

TORCH_MAX_ITER = 2000
_TORCH_CPU = threading.Lock()


@contextlib.contextmanager
def _one_torch_thread(on):
    """On the CPU, one solve at a time on one intra-op thread: torch splits its reductions by thread count, so a
    head would otherwise depend on it (and on what else runs). A device's kernels are left as they are."""
    import torch
    if on.type != "cpu":
        yield
        return
    with _TORCH_CPU:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def torch_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_path(x: np.ndarray, target: np.ndarray, n_classes: int, Cs, tol: float, on=None) -> list[tuple]:
    """[(C, W, b, iterations)] for C ascending: the model fitted by torch to rows ``x`` (float32, already with any
    shifted copies) and class indices ``target`` in [0, n_classes), on ``on`` (default: cuda when present); ``tol``:
    the largest gradient entry at convergence."""
    on = on or torch_device()
    with _one_torch_thread(on):
        return _torch_path(x, target, n_classes, Cs, tol, on)


def _torch_path(x, target, n_classes, Cs, tol, on) -> list[tuple]:
    import torch
    X = torch.from_numpy(np.ascontiguousarray(x)).to(on, torch.float64)
    target = torch.from_numpy(np.asarray(target, np.int64)).to(on)
    n, d, K = len(X), X.shape[1], n_classes
    mu = X.mean(0)
    Z = X - mu
    eig, V = torch.linalg.eigh(Z.T @ Z / n)                 # variances σⱼ² along the eigenvectors
    Z = Z @ V
    del X
    b = torch.zeros(K, dtype=torch.float64, device=on)
    W_rot = torch.zeros(d, K, dtype=torch.float64, device=on)   # the last solution (rotated coordinates)
    path = []
    for C in sorted(Cs):
        s = torch.sqrt(eig.clamp_min(0) / K + 1.0 / (C * n))   # W_rot = diag(1/s) · U
        U = (W_rot * s[:, None]).clone().requires_grad_(True)
        b = b.detach().clone().requires_grad_(True)
        opt = torch.optim.LBFGS([U, b], lr=1, max_iter=TORCH_MAX_ITER, tolerance_grad=tol, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")

        def loss(U=U, b=b, s=s, C=C):
            opt.zero_grad()
            W = U / s[:, None]
            value = torch.nn.functional.cross_entropy(Z @ W + b, target) + (W * W).sum() / (2 * C * n)
            value.backward()
            return value
        opt.step(loss)
        iterations = opt.state[opt._params[0]].get("n_iter", 0)
        W_rot = (U / s[:, None]).detach()
        W = V @ W_rot
        path.append((C, W.cpu().numpy(), (b.detach() - mu @ W).cpu().numpy(), int(iterations)))
    return path
