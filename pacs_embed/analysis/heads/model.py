"""The heads' model: scikit-learn's multinomial logistic regression on frozen embeddings, C chosen on a seeded source
hold-out; a fitted ``Head`` and the key of exactly what it depends on.

Usage::

    train, holdout = split(len(y), seed=0, name="photo")
    key = head_key(x, y, train, holdout, C_GRID)
    head.predict(x_target); head.holdout_accuracy; head.C
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np

from ...errors import ArgumentError


C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


SOLVERS = ("fast", "torch", "sklearn", "auto")   # this module's solver; the same model on a torch device


                                                 # (solvers.torch_path); scikit-learn's (for comparison); "auto": torch
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
        kept = getattr(_SHARED, "kept", None)
        key = (self.key or id(self), id(x))
        if kept is not None and key in kept and kept[key][0] is x:
            return kept[key][1]
        out = np.asarray(x, np.float32) @ self.W.astype(np.float32)
        if getattr(_SHARED, "on", False):
            _SHARED.last = (self, x, out)   # holds x: its identity stays valid
        if kept is not None:
            kept[key] = (x, out)
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
            h.update(array_digest(np.ascontiguousarray(a)))
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


_SHARED = threading.local()   # shared_products' last product, kept_products' store, per thread


@contextlib.contextmanager
def kept_products(store: dict):
    """Inside it, every ``Head.product`` this thread computes is kept in ``store`` (keyed by the head's key and the
    array's identity) and reused while the same array is asked again — across calls: the explorer keeps the plain
    heads' x·W for every target, so an edit of a description costs only the (n x K) work of each operator."""
    before = getattr(_SHARED, "kept", None)
    _SHARED.kept = store
    try:
        yield store
    finally:
        _SHARED.kept = before


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


_digests: dict[int, tuple] = {}   # id(array) -> (weak reference, digest): read-only arrays that own their data


def array_digest(a: np.ndarray) -> bytes:
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
    h.update(x_digest or array_digest(np.ascontiguousarray(x, np.float32)))
    parts = [np.asarray(y, np.int64), np.asarray(train, np.int64), np.asarray(holdout, np.int64),
             np.asarray(Cs, np.float64)]
    if shifts is not None:
        parts.append(np.ascontiguousarray(shifts, np.float32))
    for a in parts:
        h.update(array_digest(a))
    return h.hexdigest()[:40]


def shifted(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """normalise(x + shift), row by row: a copy of ``x`` moved by one text direction."""
    moved = np.asarray(x, np.float64) + shift
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


def classes_in(y, train) -> np.ndarray:
    """The classes present in the training rows; at least two, or a clear error."""
    classes = np.unique(y[train])
    if len(classes) < 2:
        raise ArgumentError(f"cannot train a classifier: the training images hold only class(es) {classes.tolist()}")
    return classes


def best(path, classes, x, y, holdout, key: str = "") -> Head:
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
