"""Logistic-regression heads on frozen embeddings: scikit-learn's model, fitted fast, cached on disk.

The model is scikit-learn's ``LogisticRegression`` (multinomial, L2 on the weights, intercept not
penalised): minimise ``C·Σᵢ CE(W·xᵢ + b, yᵢ) + ½‖W‖²``. C is chosen from ``C_GRID`` on a seeded 20%
hold-out of the *source* domain and the head is the one trained on the other 80%, so model
selection never sees target data. What differs from plain scikit-learn is only how it is solved:

- the features are centred and rotated onto the eigenvectors of their scatter matrix, and the
  variables are rescaled by ``√(λⱼ/K + 1/C)`` (a diagonal preconditioner; an exact change of
  variables, so the optimum is the same),
- the C grid is walked upward, each fit starting from the previous one's solution,
- the loss and gradient are computed in float32 with single-threaded BLAS (the loss summed in float64),
  L-BFGS in float64,
- it converges 3x tighter than scikit-learn's default (``TOL``): on random-CLIP features plain
  scikit-learn stops far from the optimum (on sketch, 80% agreement with its own fully converged
  solution at C=10), this solver agrees with it on ≥ 99.9% (``benchmarks/head_convergence.py``). Tighter
  tolerances reach float32's noise floor, where line searches fail and retry for little gain
  (``head_convergence.py --tol`` prints time and agreement per tolerance).

``benchmarks/analysis_speed.py`` prints its speed against scikit-learn; ``tests/test_heads.py`` checks it
picks the same C and makes the same predictions.

A fitted head depends only on its training rows, labels, hold-out split and grid, so ``HeadCache``
keeps heads on disk (``<cache>.heads/<key>.npz``, plain arrays, no pickles), keyed by a hash of
exactly those: a re-run after a prompt edit refits only the heads whose features changed.

Usage::

    train, holdout = split(len(y), seed=0, name="photo")
    head = fit_head(x, y, train, holdout, cache=HeadCache("mini.h5.heads"))
    head.predict(x_target)
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from ..files import atomic_write

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
HOLDOUT = 0.2
SOLVER = "pacs_embed-lbfgs-precond/4"   # part of every cache key: a solver change never reuses old heads
TOL = 3e-5                              # max |gradient| of the per-image mean loss at convergence (sklearn: 1e-4)


def split(n: int, seed: int, name: str, holdout: float = HOLDOUT) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) indices of a seeded random split, DomainBed-style: seeded by (seed, name)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    perm = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n)
    n_out = max(1, int(round(n * holdout)))
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


@dataclass
class Head:
    """A fitted multinomial logistic head: ``predict(x) = classes[argmax(x·W + b)]``."""
    W: np.ndarray                 # (D, K) weights, K = classes present in training
    b: np.ndarray                 # (K,) intercepts
    classes: np.ndarray           # (K,) class labels
    C: float                      # chosen on the hold-out
    holdout_accuracy: float       # accuracy on the source hold-out (the split that chose C)
    validation: dict = field(default_factory=dict)   # C -> hold-out accuracy
    iterations: int = 0           # L-BFGS iterations over the whole grid (0 when read from the cache)
    key: str = ""                 # the cache key (hash of what the head depends on)

    def decision(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) @ self.W.astype(np.float32) + self.b.astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[self.decision(x).argmax(1)]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, W=self.W, b=self.b, classes=self.classes, C=self.C, holdout_accuracy=self.holdout_accuracy,
                 grid=np.array(list(self.validation)), scores=np.array(list(self.validation.values())))
        return buf.getvalue()

    @classmethod
    def from_file(cls, path, key: str = "") -> "Head":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["W"], f["b"], f["classes"], float(f["C"]), float(f["holdout_accuracy"]),
                       dict(zip(f["grid"].tolist(), f["scores"].tolist())), 0, key)


class HeadCache:
    """Fitted heads by key: in memory, and in ``folder`` (``None``: memory only). Unreadable entries are refitted."""

    def __init__(self, folder=None):
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, Head] = {}
        self.hits = self.fits = 0

    def get(self, key: str) -> Head | None:
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        path = self.folder / f"{key}.npz" if self.folder else None
        if path and path.is_file():
            try:
                head = Head.from_file(path, key)
            except Exception:  # noqa: BLE001 - a damaged entry is refitted and rewritten
                return None
            self.memory[key] = head
            self.hits += 1
            return head
        return None

    def put(self, key: str, head: Head) -> None:
        self.memory[key] = head
        self.fits += 1
        if self.folder:
            try:
                tmp = self.folder / f"{key}.{os.getpid()}.{threading.get_ident()}.partial"
                atomic_write(tmp, head.to_bytes())   # a name of its own: two threads may fit the same head
                os.replace(tmp, self.folder / f"{key}.npz")
            except OSError as e:  # a read-only folder must not stop an analysis
                warnings.warn(f"cannot write the head cache {self.folder}: {e}; heads are kept in memory only")
                self.folder = None


def single_threaded_blas():
    """Skinny matrix products: waking BLAS threads costs more than they save (3x slower with 2 threads in a
    one-off measurement on this 2-core machine). The limit is
    process-wide, so only the main thread sets it; ``evaluate`` sets it around its worker threads."""
    if threading.current_thread() is threading.main_thread():
        return threadpool_limits(1)
    return contextlib.nullcontext()


_digests: dict[int, tuple] = {}   # id(array) -> (weak reference, digest): read-only arrays that own their data


def _digest(a: np.ndarray) -> bytes:
    """sha256 of an array's dtype, shape and bytes. Memoised for read-only arrays that own their data (their
    bytes cannot change): ``evaluate`` hands every method of a (source, seed) the same read-only images, so
    the heads that train on them as they are hash them once, not once per method."""
    memo = not a.flags.writeable and a.base is None
    if memo and (hit := _digests.get(id(a))) is not None and hit[0]() is a:
        return hit[1]
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    digest = h.digest()
    if memo:
        _digests[id(a)] = (weakref.ref(a, lambda _, i=id(a): _digests.pop(i, None)), digest)
    return digest


def head_key(x, y, train, holdout, Cs, shifts=None) -> str:
    """Hash of exactly what a head depends on: features, labels, split, C grid, shifts and solver."""
    h = hashlib.sha256(SOLVER.encode())
    parts = [np.ascontiguousarray(x, np.float32), np.asarray(y, np.int64), np.asarray(train, np.int64),
             np.asarray(holdout, np.int64), np.asarray(Cs, np.float64)]
    if shifts is not None:
        parts.append(np.ascontiguousarray(shifts, np.float32))
    for a in parts:
        h.update(_digest(a))
    return h.hexdigest()[:40]


def shifted(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """normalise(x + shift), row by row: a copy of ``x`` moved by one text direction."""
    moved = np.asarray(x, np.float64) + shift
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


def fit_head(x: np.ndarray, y: np.ndarray, train: np.ndarray, holdout: np.ndarray, Cs=C_GRID,
             cache: HeadCache | None = None, solver: str = "fast", shifts: np.ndarray | None = None) -> Head:
    """Fit on rows ``train`` of ``x`` (labels ``y``) for each C, keep the C best on rows ``holdout``.

    ``x`` may hold extra rows beyond the source images (train-time augmentation): only the rows
    listed in ``train`` and ``holdout`` are used. ``shifts`` (m, D) adds, for every training row and
    every shift c, the row ``normalise(x + c)`` (with its label) without materialising them: the
    solver reuses one matrix product for all copies. ``solver="sklearn"`` fits with scikit-learn's
    ``LogisticRegression`` instead (for comparison; not cached). Ties go to the smaller C.
    """
    x = np.ascontiguousarray(x, np.float32)
    y = np.asarray(y)
    shifts = None if shifts is None or len(shifts) == 0 else np.asarray(shifts, np.float64).reshape(-1, x.shape[1])
    key = head_key(x, y, train, holdout, Cs, shifts) if solver == "fast" else ""
    if cache is not None and key and (hit := cache.get(key)) is not None:
        return hit
    classes = np.unique(y[train])
    if len(classes) < 2:
        raise ValueError(f"cannot train a classifier: the training images hold only class(es) {classes.tolist()}")
    xt, yt = x[train], y[train]
    if solver == "sklearn":
        if shifts is not None:
            xt = np.concatenate([xt] + [shifted(xt, c) for c in shifts])
            yt = np.tile(yt, len(shifts) + 1)
        fits = list(_sklearn_path(xt, yt, Cs))
    else:
        with single_threaded_blas():
            fits = list(_lbfgs_path(xt, yt, classes, Cs, shifts))
    best, scores, iterations = None, {}, 0
    for C, W, b, nit in fits:
        iterations += nit
        head = Head(W, b, classes, C, 0.0)
        scores[C] = float((head.predict(x[holdout]) == y[holdout]).mean())
        if best is None or scores[C] > scores[best.C]:
            best = head
    best.holdout_accuracy, best.validation, best.iterations, best.key = scores[best.C], scores, iterations, key
    if cache is not None and key:
        cache.put(key, best)
    return best


def _sklearn_path(x, y, Cs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    for C in Cs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = LogisticRegression(C=C, max_iter=1000).fit(x, y)
        W, b = (m.coef_.T, m.intercept_) if len(m.classes_) > 2 else (
            np.stack([-m.coef_[0], m.coef_[0]], 1) / 2, np.array([-m.intercept_[0], m.intercept_[0]]) / 2)
        yield C, W, b, int(np.max(m.n_iter_))


def _lbfgs_path(x, y, classes, Cs, shifts=None):
    """Yield (C, W, b, iterations) for C in ascending order, each fit warm-started from the last.

    Training rows come in groups: the rows themselves, and one copy normalise(x + c) per shift c.
    With V the eigenvectors of the scatter of all rows about their mean μ, a copy's rotated,
    centred rows are r ⊙ (xV + cV) − μV (r = 1/|x + c|), so every group's logits need only one
    product xV·W, computed once per evaluation.
    """
    n, d = x.shape
    K = len(classes)
    label = np.searchsorted(classes, y)
    shifts = np.zeros((0, d)) if shifts is None else shifts
    C_all = np.concatenate([np.zeros((1, d)), shifts])                # c per group (0: the rows themselves)
    x64 = x.astype(np.float64)
    R = np.stack([1 / np.linalg.norm(x64 + c, axis=1) if c.any() else np.ones(n) for c in C_all])
    G, N = len(C_all), len(C_all) * n
    # scatter of every group's rows r ⊙ (x + c), with one n x d x d product for all groups:
    # Σ_g (r_g ⊙ (x + c_g))ᵀ(r_g ⊙ (x + c_g)) = xᵀ diag(Σ_g r_g²) x + Σ_g [m_g c_gᵀ + c_g m_gᵀ + |r_g|² c_g c_gᵀ],
    # m_g = xᵀ r_g²
    R2 = R * R
    xw = (np.sqrt(R2.sum(0))[:, None] * x64).astype(np.float32)
    M = R2 @ x64                                                      # (G, d): m_g
    scatter = (xw.T @ xw).astype(np.float64) + M.T @ C_all + C_all.T @ M + (C_all.T * R2.sum(1)) @ C_all
    mu = (R.sum(0) @ x64 + R.sum(1) @ C_all) / N
    lam, V = scipy.linalg.eigh((scatter - N * np.outer(mu, mu)).astype(np.float32), driver="evd")   # any rotation is exact
    lam, V = lam.astype(np.float64), V.astype(np.float64)
    lam = np.maximum(lam, 0.0)
    ZT = np.ascontiguousarray((x @ V.astype(np.float32)).T)           # (d, n) rotated rows (not centred)
    A, mu_r = C_all @ V, mu @ V
    R = R.astype(np.float32)[:, None, :]                              # (G, 1, n)
    # layout (G, K, n): reductions over classes are element-wise over contiguous rows
    pick = np.sort((np.arange(G)[:, None] * K + label) * n + np.arange(n)).ravel()   # flat indices of [g, yᵢ, i]
    Wr, b = np.zeros((d, K)), np.zeros(K)                             # weights in the rotated basis
    bs = np.sqrt(N / K)
    for C in sorted(Cs):
        s = np.sqrt(lam / K + 1.0 / C)[:, None]                       # preconditioner (exact change of variables)

        def loss_grad(u, s=s, C=C):
            W = u[:d * K].reshape(d, K) / s
            bb = u[d * K:] / bs
            wz = W.T.astype(np.float32) @ ZT                           # (K, n), shared by every group
            z = R * (wz[None] + (A @ W).astype(np.float32)[:, :, None]) + (bb - mu_r @ W).astype(np.float32)[None, :, None]
            z -= z.max(1, keepdims=True)
            e = np.exp(z)
            se = e.sum(1, keepdims=True)
            # summed in float64: float32 sums made the loss too noisy for L-BFGS's line search at large C
            # (it failed and retried, several loss evaluations per iteration, on random-CLIP features)
            fit = np.log(se).sum(dtype=np.float64) - z.reshape(-1).take(pick).sum(dtype=np.float64)
            loss = float(fit) * C + 0.5 * float((W * W).sum())
            P = e / se
            P.reshape(-1)[pick] -= 1.0                                 # (G, K, n): softmax − one-hot
            RP = R * P
            gW = C * ((ZT @ RP.sum(0).T).astype(np.float64) + A.T @ RP.sum(2).astype(np.float64)
                      - np.outer(mu_r, P.sum((0, 2)))) + W
            gb = C * P.sum((0, 2)).astype(np.float64)
            return loss, np.concatenate([(gW / s).ravel(), gb / bs])

        u0 = np.concatenate([(Wr * s).ravel(), b * bs])
        # stop when the gradient of the mean loss is below TOL, as scikit-learn does (it uses 1e-4)
        r = minimize(loss_grad, u0, jac=True, method="L-BFGS-B",
                     options=dict(maxiter=3000, maxcor=20, gtol=TOL * C * N / bs, ftol=1e-12))
        Wr, b = r.x[:d * K].reshape(d, K) / s, r.x[d * K:] / bs
        W = V @ Wr
        yield C, W, b - mu_r @ Wr, int(r.nit)
