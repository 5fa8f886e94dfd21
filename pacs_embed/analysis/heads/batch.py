"""Heads asked for now and fitted later, together: ``evaluate``'s methods ask a ``HeadBatch`` for the heads they need
(a ``PendingHead`` each); the batch fits those of the same rows (the seeds of a source) in one solver run when asked
to, or when a head is first used.

Usage::

    batch = HeadBatch(HeadCache())
    head = batch.ask(x, y, train, holdout)      # a PendingHead (or a Head from the cache)
    batch.flush(); head.predict(x_target)
"""
from __future__ import annotations

import threading


from .model import C_GRID, Head, array_digest, classes_in, head_key
from .solvers import as_inputs, fit_heads
from .store import HeadCache


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
        x, y, shifts = as_inputs(x, y, shifts)
        xd = array_digest(x)
        key = head_key(x, y, train, holdout, self.Cs, shifts, xd)
        classes = classes_in(y, train)                      # a one-class training set fails here, not at the flush
        rows = xd + array_digest(y) + (b"" if shifts is None else array_digest(shifts))
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
