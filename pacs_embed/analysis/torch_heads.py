"""The heads' model solved with torch on a device (``solver="torch"``; ``"auto"`` picks it when CUDA is present).

The same model as ``heads.py`` — scikit-learn's multinomial logistic regression, minimise
C·Σᵢ CE(W·xᵢ + b, yᵢ) + ½‖W‖², C chosen from the grid on the seeded 20% source hold-out (ties: the smaller C),
the head the one trained on the other 80% — and the same exact change of variables (features centred and rotated
onto the eigenvectors of their scatter, each variable rescaled by √(σⱼ²/K + 1/(C·n))), solved by torch's L-BFGS
with a strong-Wolfe line search in float64, the C grid walked upward from the previous solution. Shifted copies
(``shifts``) are written out by ``heads.py`` before they go to the device. It differs from ``fast`` in one way: C
is always chosen on every training row (``fast`` samples ``SELECT_ROWS`` of them above that size). Imported only
when chosen: the analysis needs no torch otherwise. ``tests/test_torch_heads.py`` checks it against scikit-learn
and ``fast`` on CPU torch.

Usage::

    head = fit_head(x, y, train, holdout, solver="torch")        # cuda when present, else the CPU
    path = lbfgs_path(x_train, class_index, n_classes, C_GRID, tol)   # what heads.py calls
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import torch

MAX_ITER = 2000
_CPU = threading.Lock()


@contextlib.contextmanager
def _one_thread(on: torch.device):
    """On the CPU, one solve at a time on one intra-op thread: torch splits its reductions by thread count, so a
    head would otherwise depend on it (and on what else runs). A device's kernels are left as they are."""
    if on.type != "cpu":
        yield
        return
    with _CPU:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lbfgs_path(x: np.ndarray, target: np.ndarray, n_classes: int, Cs, tol: float,
               on: torch.device | None = None) -> list[tuple]:
    """[(C, W, b, iterations)] for C ascending: the model fitted to rows ``x`` (float32, already with any shifted
    copies) and class indices ``target`` in [0, n_classes), on ``on`` (default: cuda when present); ``tol``: the
    largest gradient entry at convergence."""
    on = on or device()
    with _one_thread(on):
        return _path(x, target, n_classes, Cs, tol, on)


def _path(x, target, n_classes, Cs, tol, on) -> list[tuple]:
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
        opt = torch.optim.LBFGS([U, b], lr=1, max_iter=MAX_ITER, tolerance_grad=tol, tolerance_change=1e-14,
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
