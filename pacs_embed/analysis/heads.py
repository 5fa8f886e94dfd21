"""Logistic-regression heads on frozen embeddings: scikit-learn's model, fitted fast, cached on disk.

The model is scikit-learn's ``LogisticRegression`` (multinomial, L2 on the weights, intercept not
penalised): minimise ``C·Σᵢ CE(W·xᵢ + b, yᵢ) + ½‖W‖²``. C is chosen from ``C_GRID`` on a seeded 20%
hold-out of the *source* domain and the head is the one trained on the other 80%, so model
selection never sees target data. What differs from plain scikit-learn is only how it is solved:

- the features are rotated onto the eigenvectors of their scatter matrix, centred, and the variables
  rescaled by ``√(λⱼ/K + 1/C)`` (a diagonal preconditioner; an exact change of variables, so the
  optimum is the same),
- the C grid is walked upward, each fit starting from the previous one's solution,
- the loss and gradient are computed in float32 with single-threaded BLAS (the loss summed in float64),
  L-BFGS (``minimize_lbfgs``: Nocedal & Wright's compact form, backtracking line search) in float64,
- several splits of the same rows (the seeds of a source) are fitted together (``fit_heads``): each has
  its own L-BFGS, run in lock-step rounds; ``evaluate`` collects the heads its methods ask for in a
  ``HeadBatch`` and fits them this way,
- a head is a function of its inputs, bit for bit: each split's products and sums run over its own rows
  only, in blocks of a size fixed by (groups, classes), with BLAS on one thread (``single_threaded_blas``) —
  so it is the same alone or in any batch, with any number of BLAS or worker threads
  (``tests/test_heads.py``). Another CPU's kernels may change the last bits,
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
    heads = fit_heads(x, y, [split(len(y), seed, "photo") for seed in range(5)])   # five seeds at once
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from ..errors import ArgumentError
from ..files import atomic_write
from .arguments import c_grid

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
SOLVERS = ("fast", "torch", "sklearn", "auto")   # this module's solver; the same model on a torch device
                                                 # (torch_heads.py); scikit-learn's (for comparison); "auto": torch
                                                 # when a CUDA device is present, else fast
HOLDOUT = 0.2
SOLVER = "pacs_embed-lbfgs-precond/6"   # part of every cache key: a solver change never reuses old heads
TOL = 3e-5                              # max |gradient| of the per-image mean loss at convergence (sklearn: 1e-4)
BATCH_BYTES = 256 << 20                 # splits fitted together hold logit arrays of at most this size (PACS: 2 MB)
BLOCK_BYTES = 64 << 20                  # a loss evaluation works through the rows in blocks whose logits take this
SELECT_ROWS = 10_000                    # above this many training rows, C is chosen on a stratified sample of them


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

    def product(self, x: np.ndarray) -> np.ndarray:
        """x·W in float32. Within ``shared_products`` (this thread) the last product is kept, and asked again for
        the same array it is not recomputed: the methods that score one target with one head share it."""
        last = getattr(_SHARED, "last", None)
        if last is not None and last[0] is self and last[1] is x:
            return last[2]
        out = np.asarray(x, np.float32) @ self.W.astype(np.float32)
        if getattr(_SHARED, "on", False):
            _SHARED.last = (self, x, out)   # holds x: its identity stays valid
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels of the rows of ``x``; rows with NaN or inf values are an error, not class 0."""
        return self.predict_affine(x)

    def predict_affine(self, x: np.ndarray, vectors=None, coef=None, scale=None) -> np.ndarray:
        """Class labels of x' = scale ⊙ (x + coef · vectors), row by row — the form of translation and the other
        affine operators — from x·W and vectors·W: (n x K) work beside the shared product, no copy of x.
        ``vectors`` (m, D); ``coef`` (n, m) or None (every row adds every vector once); ``scale`` (n,) or None."""
        if np.ndim(x) != 2 or np.shape(x)[1] != len(self.W):
            raise ArgumentError(f"the head was trained on {len(self.W)}-dimensional features; it was given an array of "
                             f"shape {np.shape(x)}")
        with np.errstate(invalid="ignore", over="ignore"):   # said below, in words
            shared = self.product(x)                         # may be shared with other methods: never written to
            b = self.b.astype(np.float32)
            if vectors is None and scale is None:
                scores = shared + b
            else:   # one new (n x K) array, then in place: at DomainNet size each is ~0.7 GB
                if vectors is None:
                    scores = shared.copy()
                else:
                    moved = np.asarray(vectors, np.float32) @ self.W.astype(np.float32)        # (m, K)
                    if coef is None:
                        scores = shared + moved.sum(0)
                    else:
                        scores = np.asarray(coef, np.float32) @ moved
                        scores += shared
                if scale is not None:
                    scores *= np.asarray(scale, np.float32)[:, None]
                scores += b
        best = scores.argmax(1)   # a row with NaN takes a NaN (argmax prefers it), one with +inf the inf: checked below
        if not np.isfinite(scores[np.arange(len(best)), best]).all():
            bad = np.flatnonzero(~np.isfinite(scores).all(1))
            raise ArgumentError(f"the head was given features with NaN or inf values in {len(bad)} of {len(scores)} "
                             f"rows (e.g. row {bad[0]}): made by a method's transform of the images, or passed in")
        return self.classes[best]

    def digest(self) -> str:
        """sha256 of the key and every array and number of the head: an entry whose arrays were changed (a negated W,
        permuted classes) no longer matches the digest stored beside them."""
        h = hashlib.sha256(self.key.encode())
        for a in (self.W, self.b, self.classes, np.float64(self.C), np.float64(self.holdout_accuracy)):
            h.update(_digest(np.ascontiguousarray(a)))
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, W=self.W, b=self.b, classes=self.classes, C=self.C, holdout_accuracy=self.holdout_accuracy,
                 grid=np.array(list(self.validation)), scores=np.array(list(self.validation.values())),
                 key=np.array(self.key), digest=np.array(self.digest()))
        return buf.getvalue()

    @classmethod
    def from_file(cls, path, key: str, dim: int, classes: np.ndarray) -> "Head":
        """The head stored at ``path`` for ``key``, checked to be one: its stored key, digest, shapes, dtypes and
        classes (``dim``-dimensional features, ``classes`` present in training); else ValueError saying why."""
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key:
                raise ArgumentError(f"it was stored for another key ({str(f['key'])[:12]}...)")
            head = cls(f["W"], f["b"], f["classes"], float(f["C"]), float(f["holdout_accuracy"]),
                       dict(zip(f["grid"].tolist(), f["scores"].tolist())), 0, key)
            stored = str(f["digest"])
        K = len(classes)
        if head.W.shape != (dim, K) or head.b.shape != (K,) or head.W.dtype.kind != "f" or head.b.dtype.kind != "f":
            raise ArgumentError(f"its arrays have shapes W {head.W.shape}, b {head.b.shape}; a head of {dim}-dimensional "
                             f"features and {K} classes needs ({dim}, {K}) and ({K},)")
        if head.classes.shape != (K,) or not np.array_equal(head.classes, classes):
            raise ArgumentError(f"its classes {head.classes.tolist()[:8]} are not the training classes {list(classes)[:8]}")
        if not (np.isfinite(head.W).all() and np.isfinite(head.b).all() and 0 <= head.holdout_accuracy <= 1):
            raise ArgumentError("it holds NaN or inf values")
        if head.digest() != stored:
            raise ArgumentError("its arrays do not match the digest stored with them")
        return head


class HeadCacheWarning(UserWarning):
    """A head cache entry was damaged or did not belong to its key: it is refitted."""


_UNWRITABLE = threading.Lock()   # one "cannot write the head cache" warning per cache, whatever the threads


class HeadCache:
    """Fitted heads by key: in memory, and in ``folder`` (``None``: memory only). Unreadable entries are refitted."""

    def __init__(self, folder=None):
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, Head] = {}
        self.hits = self.fits = 0

    def get(self, key: str, dim: int, classes: np.ndarray) -> Head | None:
        """The head stored for ``key`` (``dim``-dimensional features, ``classes`` present in training), or None. An
        entry that is unreadable or does not prove it belongs to its key (``Head.from_file``) is refitted and
        rewritten, with a one-line warning; a forged entry that passes every check is out of scope."""
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        path = self.folder / f"{key}.npz" if self.folder else None
        if path and path.is_file():
            try:
                head = Head.from_file(path, key, dim, classes)
            except Exception as e:  # noqa: BLE001 - any damage: refitted and rewritten
                warnings.warn(f"head cache entry {path} is refitted: {e if isinstance(e, ValueError) else type(e).__name__}",
                              HeadCacheWarning, stacklevel=2)
                return None
            self.memory[key] = head
            self.hits += 1
            return head
        return None

    def put(self, key: str, head: Head) -> None:
        self.memory[key] = head
        self.fits += 1
        folder = self.folder
        if folder:
            entry = folder / f"{key}.npz"
            try:   # a temporary name of its own: two threads may fit the same head
                atomic_write(entry, head.to_bytes(), private=True)
            except OSError as e:  # a read-only folder or a full disk must not stop an analysis: said once
                with _UNWRITABLE:
                    if self.folder is not None:
                        self.folder = None
                        warnings.warn(f"cannot write the head cache entry {entry}: {e.strerror or e}; heads are kept "
                                      f"in memory only", HeadCacheWarning, stacklevel=2)


_SHARED = threading.local()   # shared_products' last product, per thread


@contextlib.contextmanager
def shared_products():
    """Inside it, ``Head.product`` keeps this thread's last product: scoring one target, the plain head's x·W is
    computed once for none, translate, translate_renorm, interpolate, translate_calibrated and project_pair (each
    adds its (n x K) part with ``predict_affine``). ``evaluate`` scores a target's methods inside one, those that
    share a head one after another."""
    _SHARED.on, _SHARED.last = True, None
    try:
        yield
    finally:
        _SHARED.on, _SHARED.last = False, None


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


def head_key(x, y, train, holdout, Cs, shifts=None, x_digest: bytes | None = None, solver: str = "fast") -> str:
    """Hash of exactly what a head depends on: features, labels, split, C grid, shifts and solver
    (``x_digest``: ``x``'s, when already known)."""
    h = hashlib.sha256(SOLVER.encode() if solver == "fast" else f"{SOLVER}/{solver}".encode())
    if solver == "fast" and len(train) > SELECT_ROWS:   # C chosen on a sample: another procedure, another key
        h.update(f"select {SELECT_ROWS}".encode())
    h.update(x_digest or _digest(np.ascontiguousarray(x, np.float32)))
    parts = [np.asarray(y, np.int64), np.asarray(train, np.int64), np.asarray(holdout, np.int64),
             np.asarray(Cs, np.float64)]
    if shifts is not None:
        parts.append(np.ascontiguousarray(shifts, np.float32))
    for a in parts:
        h.update(_digest(a))
    return h.hexdigest()[:40]


def shifted(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """normalise(x + shift), row by row: a copy of ``x`` moved by one text direction."""
    moved = np.asarray(x, np.float64) + shift
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


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
    """``fit_head`` with the torch solver (``torch_heads.py``, imported here: only when chosen), cached under a key
    of its own."""
    from .torch_heads import lbfgs_path
    x, y, shifts = _inputs(x, y, shifts)
    Cs = c_grid(Cs)
    _check_rows(x, y, [(train, holdout)])
    classes = _classes(y, train)
    key = head_key(x, y, train, holdout, Cs, shifts, solver="torch")
    if cache is not None and (hit := cache.get(key, x.shape[1], classes)) is not None:
        return hit
    xt, yt = _written_out(x[train], y[train], shifts)   # then sent to the device
    head = _best(lbfgs_path(xt, np.searchsorted(classes, yt), len(classes), Cs, TOL / 10), classes, x, y, holdout, key)
    if cache is not None:
        cache.put(key, head)
    return head


def fit_heads(x: np.ndarray, y: np.ndarray, splits, Cs=C_GRID, cache: HeadCache | None = None,
              shifts: np.ndarray | None = None, keys: list[str] | None = None) -> list[Head]:
    """``fit_head`` for several (train, holdout) splits of the same rows (the seeds of a source), fitted together:
    each split runs its own L-BFGS and their loss evaluations share one matrix product (five seeds of each PACS
    source: ``benchmarks/analysis_speed.py`` prints the time against one by one). Heads already in ``cache``
    are read, not fitted. ``keys``: the splits' ``head_key``s, when already known."""
    x, y, shifts = _inputs(x, y, shifts)
    Cs = c_grid(Cs)
    _check_rows(x, y, splits)
    heads: list[Head | None] = [None] * len(splits)
    todo: dict[tuple, list[int]] = {}          # the classes present in training -> splits to fit (one batch)
    if keys is None:
        xd = _digest(x)
        keys = [head_key(x, y, train, holdout, Cs, shifts, xd) for train, holdout in splits]
    for i, ((train, _), key) in enumerate(zip(splits, keys)):
        if cache is not None and (hit := cache.get(key, x.shape[1], _classes(y, train))) is not None:
            heads[i] = hit
            continue
        todo.setdefault(tuple(_classes(y, train).tolist()), []).append(i)
    groups = 1 + (0 if shifts is None else len(shifts))
    for classes, batch in todo.items():
        classes = np.array(classes, dtype=y.dtype)
        # the solver holds a few (groups, classes, rows) float32 arrays per split: at most BATCH_BYTES in all,
        # and a rotated copy of its own rows each (a (n, d) float32 array)
        per_split = max(groups * len(classes), x.shape[1]) * len(x) * 4
        size = max(1, BATCH_BYTES // per_split)
        for part in (batch[k:k + size] for k in range(0, len(batch), size)):
            whole = [i for i in part if len(splits[i][0]) <= SELECT_ROWS]
            sampled = [i for i in part if len(splits[i][0]) > SELECT_ROWS]
            with single_threaded_blas():
                if whole:
                    paths, _ = _lbfgs_paths(x, y, [splits[i] for i in whole], classes, Cs, shifts)
                    for i, path in zip(whole, paths):
                        heads[i] = _best(path, classes, x, y, splits[i][1], keys[i])
                if sampled:
                    for i, head in zip(sampled, _fit_sampled(x, y, [splits[i] for i in sampled], classes, Cs, shifts,
                                                             [keys[i] for i in sampled])):
                        heads[i] = head
            if cache is not None:
                for i in part:
                    cache.put(keys[i], heads[i])
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
        sample = selection_rows(train, y, SELECT_ROWS, key)
        # the loss sums over rows, so a sample of n of N rows at C·N/n has the full objective's balance at C
        scale = len(train) / len(sample)
        grid = sorted(Cs)
        paths, V = _lbfgs_paths(x, y, [(sample, holdout)], classes, [c * scale for c in grid], shifts)
        h = _best([(c, W, b, nit) for c, (_, W, b, nit) in zip(grid, paths[0])], classes, x, y, holdout)
        paths, _ = _lbfgs_paths(x, y, [(train, holdout)], classes, [np.array([h.C])], shifts, start=[(h.W, h.b)],
                                rotation=V)
        C, W, b, nit = paths[0][0]
        head = _best([(C, W, b, nit)], classes, x, y, holdout, key)
        head.validation = {**h.validation, C: head.holdout_accuracy}
        head.iterations += h.iterations
        heads.append(head)
    return heads


class PendingHead:
    """A head asked for but not fitted yet (see ``HeadBatch``): fitted with its batch the first time anything of
    it is used, then it behaves as the ``Head`` (``resolved()`` returns that)."""

    def __init__(self, batch: "HeadBatch", work: int = 0):
        self._batch, self._head, self._error, self._done = batch, None, None, threading.Event()
        self.work = work   # rows x copies its group trains on: groups with less work are done sooner

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def resolved(self) -> Head:
        if not self._done.is_set():
            self._batch.flush()
            self._done.wait()
        if self._error is not None:
            raise self._error
        return self._head

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolved(), name)

    def __repr__(self):
        return repr(self._head) if self._done.is_set() else "PendingHead(not fitted yet)"


class HeadBatch:
    """Collects head requests and fits those that train on the same rows together (``fit_heads``): ``evaluate``
    asks for every method's heads of every seed first, then flushes, so the seeds of a source share one solver
    run. A pending head used before the flush fits what is pending at that moment.

    Usage::

        batch = HeadBatch(cache, C_GRID)
        heads = [batch.ask(x, y, *split(len(y), seed, "photo")) for seed in range(5)]
        batch.flush()          # or use any head: it flushes
    """

    def __init__(self, cache: HeadCache | None = None, Cs=C_GRID):
        self.cache, self.Cs = cache, tuple(Cs)
        self.lock = threading.Lock()
        self.pending: dict[bytes, list] = {}      # rows (digest of x, y, shifts) -> [(train, holdout, key, head)]
        self.rows: dict[bytes, tuple] = {}        # the same digest -> (x, y, shifts)
        self.asked: dict[str, PendingHead] = {}   # key -> its pending head until fitted (asked twice: one fit)

    def __len__(self) -> int:
        return sum(len(g) for g in self.pending.values())

    def ask(self, x, y, train, holdout, shifts=None) -> Head | PendingHead:
        """The head ``fit_head(x, y, train, holdout, Cs, cache, shifts=shifts)`` will be: at once when cached."""
        x, y, shifts = _inputs(x, y, shifts)
        xd = _digest(x)
        key = head_key(x, y, train, holdout, self.Cs, shifts, xd)
        classes = _classes(y, train)                      # a one-class training set fails here, not at the flush
        rows = xd + _digest(y) + (b"" if shifts is None else _digest(shifts))
        with self.lock:   # asked for already (maybe being fitted right now), or fitted?
            if key in self.asked:
                return self.asked[key]
            if self.cache is not None and (hit := self.cache.get(key, x.shape[1], classes)) is not None:
                return hit
            head = self.asked[key] = PendingHead(self, len(x) * (1 + (0 if shifts is None else len(shifts))))
            self.rows.setdefault(rows, (x, y, shifts))
            self.pending.setdefault(rows, []).append((train, holdout, key, head))
        return head

    def _take(self) -> list[tuple]:
        """Every pending group as (x, y, shifts, requests); the most work first."""
        with self.lock:
            pending, rows, self.pending, self.rows = self.pending, self.rows, {}, {}
        groups = [(*rows[k], g) for k, g in pending.items()]
        return sorted(groups, key=lambda g: -len(g[3]) * g[0].shape[0] * (1 + (0 if g[2] is None else len(g[2]))))

    def _fit(self, group) -> int:
        x, y, shifts, requests = group
        try:
            heads = fit_heads(x, y, [(t, h) for t, h, _, _ in requests], self.Cs, self.cache, shifts,
                              [k for _, _, k, _ in requests])
        except BaseException as e:  # noqa: BLE001 - raised where each head is used
            heads = [e] * len(requests)
        for (*_, pending), head in zip(requests, heads):
            if isinstance(head, BaseException):
                pending._error = head
            else:
                pending._head = head
            pending._done.set()
        with self.lock:   # from now on the cache answers (a head that failed is tried again when asked again)
            for _, _, key, _ in requests:
                self.asked.pop(key, None)
        return len(requests)

    def flush(self, pool=None, progress=None) -> None:
        """Fit everything pending: the groups side by side on ``pool`` (a ThreadPoolExecutor) when given;
        ``progress(n)`` is called as each group's n heads are done."""
        if pool is None:
            for group in self._take():
                n = self._fit(group)
                if progress is not None:
                    progress(n)
            return
        for f in self.submit(pool, progress):
            f.result()

    def submit(self, pool, progress=None) -> list:
        """``flush`` without waiting: the groups' fits submitted to ``pool`` (the most work first), their futures
        returned. Work submitted after them may wait on their heads (``PendingHead.resolved``) without deadlock:
        the fits are ahead of it in the pool's queue."""
        futures = [pool.submit(self._fit, g) for g in self._take()]
        if progress is not None:
            for f in futures:
                f.add_done_callback(lambda f: f.exception() is None and progress(f.result()))
        return futures


def resolved(head):
    """The fitted ``Head`` of a head or pending head."""
    return head.resolved() if isinstance(head, PendingHead) else head


def _classes(y, train) -> np.ndarray:
    """The classes present in the training rows; at least two, or a clear error."""
    classes = np.unique(y[train])
    if len(classes) < 2:
        raise ArgumentError(f"cannot train a classifier: the training images hold only class(es) {classes.tolist()}")
    return classes


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


def _inputs(x, y, shifts):
    """Rows as contiguous float32, labels as an array, shifts as (m, d) float64 or None (no shift)."""
    x = np.ascontiguousarray(x, np.float32)
    shifts = None if shifts is None or len(shifts) == 0 else np.asarray(shifts, np.float64).reshape(-1, x.shape[1])
    return x, np.asarray(y), shifts


def _best(path, classes, x, y, holdout, key: str = "") -> Head:
    """The head of ``path`` [(C, W, b, iterations)] most accurate on rows ``holdout`` (ties: the smaller C)."""
    best, scores, iterations = None, {}, 0
    for C, W, b, nit in path:
        iterations += nit
        head = Head(W, b, classes, C, 0.0)
        scores[C] = float((head.predict(x[holdout]) == y[holdout]).mean())
        if best is None or scores[C] > scores[best.C]:
            best = head
    best.holdout_accuracy, best.validation, best.iterations, best.key = scores[best.C], scores, iterations, key
    return best


def _sklearn_head(x, y, train, holdout, Cs, shifts) -> Head:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    x, y, shifts = _inputs(x, y, shifts)
    _check_rows(x, y, [(train, holdout)])
    classes = _classes(y, train)
    xt, yt = _written_out(x[train], y[train], shifts)
    path = []
    for C in Cs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = LogisticRegression(C=C, max_iter=1000).fit(xt, yt)
        W, b = (m.coef_.T, m.intercept_) if len(m.classes_) > 2 else (
            np.stack([-m.coef_[0], m.coef_[0]], 1) / 2, np.array([-m.intercept_[0], m.intercept_[0]]) / 2)
        path.append((C, W, b, int(np.max(m.n_iter_))))
    return _best(path, classes, x, y, holdout)


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


def _lbfgs_paths(x, y, splits, classes, Cs, shifts=None, start=None, rotation=None) -> list[list[tuple]]:
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
        u, nit = minimize_lbfgs(loss_grad, u0, gtol=TOL * Cb * N / bs)
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
