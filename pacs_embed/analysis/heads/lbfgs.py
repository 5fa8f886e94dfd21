"""The ``fast`` solver: L-BFGS on a preconditioned change of variables, several splits of the same rows in lock-step,
bit-for-bit a function of its inputs (each split's sums over its own rows, in blocks of a fixed size, BLAS on one
thread).

Usage::

    with single_threaded_blas():
        paths = lbfgs_paths(x, y, splits, classes, Cs)   # per split: [(C, W, b, iterations)] for C ascending
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from . import model
from .model import BLOCK_BYTES


_PIN = threading.Lock()


_pinned = {"count": 0, "limits": None}


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread while inside: a head is then a function of its inputs only, never of the BLAS thread count
    (a multi-threaded product splits its sums differently); and for skinny products waking BLAS threads costs more
    than they save. The limit is process-wide and OpenBLAS takes it from the main thread only (a worker thread's
    call is ignored), so the main thread sets it — counted, so that nested uses restore it once — and ``evaluate``
    and ``study`` hold it around their worker threads. Code that fits heads from threads of its own does the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _PIN:
        if _pinned["count"] == 0:
            _pinned["limits"] = threadpool_limits(1, user_api="blas")
        _pinned["count"] += 1
    try:
        yield
    finally:
        with _PIN:
            _pinned["count"] -= 1
            if _pinned["count"] == 0:
                _pinned["limits"].restore_original_limits()
                _pinned["limits"] = None


def _rotation(x, R, R2, C_all) -> np.ndarray:
    """The eigenvectors of the scatter of every group's rows r ⊙ (x + c) (any rotation is exact; this one makes the
    diagonal preconditioner good), with one n x d x d product for all groups:
    Σ_g (r_g ⊙ (x + c_g))ᵀ(r_g ⊙ (x + c_g)) = xᵀ diag(Σ_g r_g²) x + Σ_g [m_g c_gᵀ + c_g m_gᵀ + |r_g|² c_g c_gᵀ],
    m_g = xᵀ r_g²."""
    G, n = R.shape
    xw = np.sqrt(R2.sum(0)).astype(np.float32)[:, None] * x
    M = (R2.astype(np.float32) @ x).astype(np.float64)               # (G, d): m_g
    scatter = (xw.T @ xw).astype(np.float64) + M.T @ C_all + C_all.T @ M + (C_all.T * R2.sum(1)) @ C_all
    mu = ((R.sum(0).astype(np.float32) @ x).astype(np.float64) + R.sum(1) @ C_all) / (G * n)
    _, V = scipy.linalg.eigh((scatter - G * n * np.outer(mu, mu)).astype(np.float32), driver="evd")
    return V.astype(np.float64)


def lbfgs_paths(x, y, splits, classes, Cs, shifts=None, start=None, rotation=None) -> list[list[tuple]]:
    """For each (train, holdout) in ``splits``: [(C, W, b, iterations)] for C ascending, each C warm-started
    from the last. The splits share ``x``, ``y`` and ``shifts`` (so one matrix product serves all of them).
    ``Cs``: a grid (every split walks it), or one array of a C per split (one fit each); ``start``: [(W, b)] per
    split to begin from (a warm start), else zeros; ``rotation``: V when already computed for these rows (it
    depends on ``x`` and ``shifts`` only). Returns the paths and V.

    Training rows come in groups: the rows themselves, and one copy normalise(x + c) per shift c. V are
    the eigenvectors of the scatter of every row of every group; a copy's rotated rows are r ⊙ (xV + cV)
    (r = 1/|x + c|), so every group's logits need only one product xV·W per evaluation. Each split is
    centred on the mean of its own training rows and preconditioned by their variance along V.
    """
    n, d = x.shape
    K, B = len(classes), len(splits)
    label = np.searchsorted(classes, y)
    C_all = np.concatenate([np.zeros((1, d)), np.zeros((0, d)) if shifts is None else shifts])   # c per group
    G = len(C_all)
    # r = 1/|x + c| from |x|² + 2x·c + |c|² (no n x d temporaries)
    R = 1 / np.sqrt(np.maximum(np.einsum("nd,nd->n", x, x, dtype=np.float64)[None] + 2 * (C_all @ x.T.astype(np.float64))
                               + (C_all * C_all).sum(1)[:, None], 1e-300))   # (G, n)
    R[0] = 1.0                                                        # the rows themselves, as they are
    R2 = R * R
    # scatter of every group's rows r ⊙ (x + c), with one n x d x d product for all groups:
    # Σ_g (r_g ⊙ (x + c_g))ᵀ(r_g ⊙ (x + c_g)) = xᵀ diag(Σ_g r_g²) x + Σ_g [m_g c_gᵀ + c_g m_gᵀ + |r_g|² c_g c_gᵀ],
    # m_g = xᵀ r_g²
    V = rotation if rotation is not None else _rotation(x, R, R2, C_all)
    A = C_all @ V                                                     # (G, d): the shifts, rotated
    rows = [_SplitRows(x, V, R, label, train, G, K) for train, _ in splits]   # each split's own rows, rotated
    N = np.array([r.N for r in rows])                                 # training rows per split (every group)
    mu_r = np.stack([r.mean(A) for r in rows])                        # (B, d): each split's mean, rotated ...
    lam = np.stack([r.variance(A, m) for r, m in zip(rows, mu_r)])    # ... and its variance along each eigenvector
    bs = np.sqrt(N / K)
    paths: list[list[tuple]] = [[] for _ in range(B)]
    Wr, b0 = np.zeros((B, d, K)), np.zeros((B, K))                   # weights in the rotated basis
    if start is not None:   # W = V Wr and b = b0 − mu_r·Wr, inverted
        Wr = np.stack([V.T @ np.asarray(W, np.float64) for W, _ in start])
        b0 = np.stack([np.asarray(b, np.float64) for _, b in start]) + np.einsum("bd,bdk->bk", mu_r, Wr)
    steps = [np.full(B, float(C)) for C in sorted(Cs)] if np.ndim(Cs[0]) == 0 else [np.asarray(Cs[0], float)]
    for Cb in steps:
        s = np.sqrt(lam / K + 1.0 / Cb[:, None])[:, :, None]          # preconditioner (exact change of variables)

        def loss_grad(idx, u, s=s, Cb=Cb):
            """Loss and gradient of splits ``idx`` at rows ``u`` of their variables, each split on its own rows
            alone (``_SplitRows.loss_grad``): what a split computes never depends on the others beside it."""
            out = [rows[b].loss_grad(u_b, s[b], Cb[b], bs[b], mu_r[b], A) for b, u_b in zip(idx, u)]
            return np.array([f for f, _ in out]), np.stack([g for _, g in out])

        u0 = np.concatenate([(Wr * s).reshape(B, -1), b0 * bs[:, None]], axis=1)
        # stop when the gradient of the mean loss is below TOL, as scikit-learn does (it uses 1e-4)
        u, nit = minimize_lbfgs(loss_grad, u0, gtol=model.TOL * Cb * N / bs)
        Wr, b0 = u[:, :d * K].reshape(B, d, K) / s, u[:, d * K:] / bs[:, None]
        for b in range(B):
            paths[b].append((float(Cb[b]), V @ Wr[b], b0[b] - mu_r[b] @ Wr[b], int(nit[b])))
    return paths, V


class _SplitRows:
    """One split's training rows as the solver sees them: rotated (x[rows]·V, float32, as (d, n)), their group
    weights r (G, n), labels and how often each row is in the split. Every product and sum of a split runs over
    these rows alone, in blocks of a size fixed by (G, K): a head is a function of its own inputs, bit for bit,
    whether it is fitted alone or beside other splits (whose rows would otherwise change the blocking, and whose
    columns in one product change which BLAS kernel serves a row)."""

    def __init__(self, x, V, R, label, train, G, K):
        index, count = np.unique(np.asarray(train, np.int64), return_counts=True)
        self.G, self.K, self.n = G, K, len(index)
        self.ZT = V.T.astype(np.float32) @ x[index].T                  # (d, n) rotated rows (not centred)
        self.R = R[:, index]                                           # (G, n)
        self.weight = count.astype(np.float64) if (count > 1).any() else None   # a row in the split more than once
        w = np.ones(self.n) if self.weight is None else self.weight
        self.Rw, self.R2w = self.R * w, self.R * self.R * w
        self.N = G * float(w.sum())
        self.Rf = self.R.astype(np.float32)[:, None, :]                 # (G, 1, n)
        self.wf = None if self.weight is None else self.weight.astype(np.float32)
        step = max(256, BLOCK_BYTES // (G * K * 4))
        self.blocks = [(r0, min(r0 + step, self.n)) for r0 in range(0, self.n, step)]
        lab = label[index]
        # per block: flat indices of [g, yᵢ, i] in its (G, K, rows) layout, and each row's weight per group
        self.picks = [(((np.arange(G)[:, None] * K + lab[r0:r1]) * (r1 - r0) + np.arange(r1 - r0)).ravel(),
                       None if self.weight is None else np.tile(self.weight[r0:r1], G)) for r0, r1 in self.blocks]

    def mean(self, A) -> np.ndarray:
        """The mean of every group's rows r ⊙ (xV + a), rotated."""
        return ((self.Rw.sum(0).astype(np.float32) @ self.ZT.T).astype(np.float64) + self.Rw.sum(1) @ A) / self.N

    def variance(self, A, mu) -> np.ndarray:
        Z = self.ZT.T
        sq = ((self.R2w.sum(0).astype(np.float32) @ (Z * Z)).astype(np.float64)
              + 2 * np.einsum("gd,gd->d", (self.R2w.astype(np.float32) @ Z).astype(np.float64), A)
              + self.R2w.sum(1) @ (A * A))
        return np.maximum(sq - self.N * mu ** 2, 0.0)

    def loss_grad(self, u, s, C, bs, mu, A) -> tuple[float, np.ndarray]:
        """C·Σ CE + ½‖W‖² and its gradient in the preconditioned variables ``u`` (layout (G, K, rows) per block:
        reductions over classes are element-wise over contiguous rows); the loss summed in float64 (float32 sums
        made it too noisy for the line search at large C)."""
        G, K = self.G, self.K
        d = len(mu)
        W = u[:d * K].reshape(d, K) / s
        bias = u[d * K:] / bs - mu @ W
        W32 = np.ascontiguousarray(W.T).astype(np.float32)             # (K, d)
        shifted_groups = G > 1                                         # else r = 1 and a = 0: nothing to add
        AW = (A @ W).astype(np.float32)[:, :, None] if shifted_groups else None
        bias32 = bias.astype(np.float32)[None, :, None]
        fit, Psum = 0.0, np.zeros(K)
        gZ, gA = np.zeros((K, d)), np.zeros((G, K))
        for (r0, r1), (pick, pick_weight) in zip(self.blocks, self.picks):
            ZT = self.ZT[:, r0:r1]
            z = (W32 @ ZT)[None]                                       # (1 or G, K, rows)
            if shifted_groups:
                z = z + AW
                z *= self.Rf[..., r0:r1]
            z += bias32
            z -= z.max(1, keepdims=True)
            zy = z.reshape(-1).take(pick).astype(np.float64)
            if pick_weight is not None:
                zy *= pick_weight
            P = np.exp(z, out=z)                                       # in place: arrays this size cost page faults
            se = P.sum(1, keepdims=True)
            lse = np.log(se)
            if self.wf is not None:
                lse *= self.wf[r0:r1]
            fit += lse.sum(dtype=np.float64) - zy.sum()
            P /= se
            P.reshape(-1)[pick] -= 1.0                                 # softmax − one-hot
            if self.wf is not None:
                P *= self.wf[r0:r1]                                    # (each row as often as it is in the split)
            Psum += P.sum((0, 2)).astype(np.float64)
            if shifted_groups:
                P *= self.Rf[..., r0:r1]
                gA += P.sum(2).astype(np.float64)
            gZ += (P.sum(0) @ ZT.T).astype(np.float64)
        gW = gZ.T
        if shifted_groups:
            gW = gW + A.T @ gA
        gW = C * (gW - mu[:, None] * Psum[None, :]) + W
        loss = fit * C + 0.5 * (W * W).sum()
        return loss, np.concatenate([(gW / s).ravel(), C * Psum / bs])


def minimize_lbfgs(loss_grad, u0: np.ndarray, gtol: np.ndarray, ftol: float = 1e-12, maxiter: int = 3000,
                   memory: int = 10, max_tries: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Minimise B independent smooth functions by L-BFGS (Nocedal & Wright, alg. 7.4 with the compact form of
    eq. 7.24, backtracking Armijo line search), evaluating all of them in one call per round:
    ``loss_grad(idx, U) -> (f, g)`` for the problems ``idx`` at rows ``U``. Problem b stops when
    max|g| <= gtol[b] (scipy's ``gtol``), when a step lowers f by no more than ``ftol`` relatively (scipy's
    ``ftol``), when its line search fails ``max_tries`` times, or after ``maxiter`` iterations. Returns
    (the solutions (B, p), iterations per problem)."""
    B, p = u0.shape
    U = np.array(u0, np.float64)
    F, Gr = loss_grad(np.arange(B), U)
    pairs = _Pairs(B, p, memory)
    nit = np.zeros(B, int)
    going = np.abs(Gr).max(1) > gtol
    searching = np.zeros(B, bool)
    D, step, slope, tries = np.zeros((B, p)), np.zeros(B), np.zeros(B), np.zeros(B, int)
    while going.any():
        idx = np.flatnonzero(going)
        new = idx[~searching[idx]]
        if len(new):                                                  # a new direction, its first trial step
            d = -pairs.times(new, Gr[new])
            sl = np.einsum("bp,bp->b", d, Gr[new])
            bad = ~(sl < 0)                                           # not a descent direction: restart from −g
            if bad.any():
                pairs.count[new[bad]] = 0
                d[bad] = -Gr[new[bad]]
                sl[bad] = -np.einsum("bp,bp->b", d[bad], d[bad])
            D[new], slope[new], tries[new], searching[new] = d, sl, 0, True
            step[new] = np.where(pairs.count[new] > 0, 1.0, np.minimum(1.0, 1.0 / np.linalg.norm(d, axis=1)))
        Ft, Gt = loss_grad(idx, U[idx] + step[idx, None] * D[idx])
        tries[idx] += 1
        accept = np.isfinite(Ft) & (Ft <= F[idx] + 1e-4 * step[idx] * slope[idx])
        for j, b in enumerate(idx):
            if not accept[j]:                                         # backtrack: quadratic fit, kept in [0.1, 0.5]
                if tries[b] >= max_tries:
                    going[b] = False
                    continue
                t, excess = step[b], Ft[j] - F[b] - slope[b] * step[b]
                guess = -slope[b] * t * t / (2 * excess) if np.isfinite(excess) and excess > 0 else 0.1 * t
                step[b] = min(max(guess, 0.1 * t), 0.5 * t)
                continue
            s_ = step[b] * D[b]
            pairs.add(b, s_, Gt[j] - Gr[b])
            f_old = F[b]
            U[b] += s_
            F[b], Gr[b] = Ft[j], Gt[j]
            nit[b] += 1
            searching[b] = False
            going[b] = (np.abs(Gt[j]).max() > gtol[b] and f_old - F[b] > ftol * max(abs(f_old), abs(F[b]), 1.0)
                        and nit[b] < maxiter)
    return U, nit


class _Pairs:
    """The last ``m`` curvature pairs (s, y) of B problems, and products with their L-BFGS inverse Hessians."""

    def __init__(self, B: int, p: int, m: int):
        self.m = m
        self.S, self.Y = np.zeros((B, m, p)), np.zeros((B, m, p))   # slots, reused in turn
        self.SY, self.YY = np.zeros((B, m, m)), np.zeros((B, m, m))  # s_iᵀy_j, y_iᵀy_j between slots
        self.count, self.next = np.zeros(B, int), np.zeros(B, int)

    def add(self, b: int, s: np.ndarray, y: np.ndarray) -> None:
        """Keep (s, y) for problem b if its curvature sᵀy is positive (else skip it, as L-BFGS does)."""
        sy = float(s @ y)
        if not sy > 1e-10 * float(y @ y):
            return
        k = self.next[b]
        self.S[b, k], self.Y[b, k] = s, y
        self.SY[b, :, k], self.SY[b, k, :] = self.S[b] @ y, self.Y[b] @ s
        self.YY[b, :, k] = self.YY[b, k, :] = self.Y[b] @ y
        self.next[b], self.count[b] = (k + 1) % self.m, min(self.count[b] + 1, self.m)

    def times(self, idx: np.ndarray, g: np.ndarray) -> np.ndarray:
        """H·g for problems ``idx``, H = γI + [S γY] [[R⁻ᵀ(D + γYᵀY)R⁻¹, −R⁻ᵀ], [−R⁻¹, 0]] [S γY]ᵀ (Nocedal &
        Wright eq. 7.24; R the upper triangle of SᵀY, D its diagonal, pairs oldest first; γ = sᵀy/yᵀy of
        the newest pair)."""
        m, n = self.m, len(idx)
        count = self.count[idx]
        if not count.any():
            return g.copy()
        # every problem's arrays padded to all m slots, whatever the others hold: its sums run over the same terms
        # alone or beside others (a head does not depend on what is fitted with it)
        deep = hi = m
        everyone = n == len(self.count) and (idx == np.arange(n)).all()
        S, Y = (self.S, self.Y) if everyone else (self.S[idx], self.Y[idx])
        # slots oldest first, the first count[b] of them in use
        age = np.arange(deep)
        order = (self.next[idx, None] - count[:, None] + age) % m                     # (n, deep)
        used = age < count[:, None]
        rows = np.arange(n)[:, None]
        SY = self.SY[idx[:, None, None], order[:, :, None], order[:, None, :]]       # (n, deep, deep)
        YY = self.YY[idx[:, None, None], order[:, :, None], order[:, None, :]]
        both = used[:, :, None] & used[:, None, :]
        newest = order[rows[:, 0], count - 1]
        gamma = np.where(count > 0, self.SY[idx, newest, newest] / np.maximum(self.YY[idx, newest, newest], 1e-300), 1.0)
        eye = np.eye(deep)
        R = np.where(both, np.triu(SY), 0.0) + np.where(used[:, :, None], 0.0, eye)   # unused: identity rows
        Dg = np.where(used, np.einsum("bii->bi", SY), 0.0)
        sg = np.einsum("bmp,bp->bm", S, g)[rows, order] * used
        yg = np.einsum("bmp,bp->bm", Y, g)[rows, order] * used
        t = np.linalg.solve(R, sg[..., None])[..., 0]
        inner = Dg * t + gamma[:, None] * np.einsum("bij,bj->bi", np.where(both, YY, 0.0), t) - gamma[:, None] * yg
        top = np.linalg.solve(np.swapaxes(R, 1, 2), inner[..., None])[..., 0]
        cs, cy = np.zeros((n, hi)), np.zeros((n, hi))
        np.add.at(cs, (np.broadcast_to(rows, order.shape), order), np.where(used, top, 0.0))
        np.add.at(cy, (np.broadcast_to(rows, order.shape), order), np.where(used, -gamma[:, None] * t, 0.0))
        return gamma[:, None] * g + np.einsum("bmp,bm->bp", S, cs) + np.einsum("bmp,bm->bp", Y, cy)
