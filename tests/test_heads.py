"""Logistic heads: scikit-learn's model, a faster solver, and a disk cache keyed by what a head depends on."""
import warnings

import numpy as np
import pytest

from optimum import assert_at_optimum, chosen_C, optimum

from pacs_embed.analysis.heads import (C_GRID, Head, HeadBatch, HeadCache, PendingHead, fit_head, fit_heads, head_key,
                                      minimize_lbfgs, shifted, split)


def problem(n=700, d=24, k=5, seed=0, signal=1.0):
    """Overlapping classes (never separable), anisotropic features with a shared mean, as CLIP's are."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    scale = np.linspace(2.0, 0.1, d)
    x = 3.0 + signal * rng.standard_normal((k, d))[y] * 0.3 + rng.standard_normal((n, d)) * scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_it_picks_the_optimum_s_C_and_reaches_the_optimum_at_every_C_of_the_grid():
    """By what the model is (tests/optimum.py): objective no higher than the float64 optimum's, the same clear
    predictions, the same C — on any CPU's kernels."""
    x, y = problem()
    train, holdout = split(len(y), 0, "photo")
    assert fit_head(x, y, train, holdout).C == chosen_C(x, y, train, holdout, C_GRID)
    for C in C_GRID:
        assert_at_optimum(fit_head(x, y, train, holdout, Cs=(C,)), optimum(x, y, train, C), x, y, train)


def test_the_optimum_check_catches_a_solver_stopped_early(monkeypatch):
    import pacs_embed.analysis.heads as heads
    monkeypatch.setattr(heads.model, "TOL", 1e-2)        # 300x looser than the solver's own
    x, y = problem()
    train, holdout = split(len(y), 0, "photo")
    for C in C_GRID:
        with pytest.raises(AssertionError):
            assert_at_optimum(fit_head(x, y, train, holdout, Cs=(C,)), optimum(x, y, train, C), x, y, train)


def test_shifted_copies_train_like_the_same_rows_written_out():
    x, y = problem(n=400, d=16, k=4, seed=3)
    train, holdout = split(len(y), 1, "cartoon")
    shifts = np.random.default_rng(0).standard_normal((3, 16)) * 0.3
    fast = fit_head(x, y, train, holdout, shifts=shifts)
    rows = np.concatenate([x] + [shifted(x[train], c) for c in shifts])
    labels = np.concatenate([y] + [y[train]] * 3)
    written = fit_head(rows, labels, np.concatenate([train, len(x) + np.arange(3 * len(train))]), holdout)
    assert fast.C == written.C and np.mean(fast.predict(x) == written.predict(x)) >= 0.995
    slow = fit_head(x, y, train, holdout, solver="sklearn", shifts=shifts)
    assert slow.C == fast.C


def test_heads_are_cached_on_disk_by_exactly_what_they_depend_on(tmp_path):
    x, y = problem(n=300, d=8, k=3)
    train, holdout = split(len(y), 0, "sketch")
    cache = HeadCache(tmp_path / "heads")
    first = fit_head(x, y, train, holdout, cache=cache)
    assert cache.fits == 1 and len(list((tmp_path / "heads").glob("*.npz"))) == 1
    again = fit_head(x, y, train, holdout, cache=HeadCache(tmp_path / "heads"))   # a new process, say
    assert np.array_equal(again.W, first.W) and again.C == first.C and again.validation == first.validation
    changed = [(x + 1e-3, y, train, holdout), (x, np.roll(y, 1), train, holdout),
               (x, y, *split(len(y), 1, "sketch"))]
    for args in changed:
        fit_head(*args, cache=cache)
    assert cache.fits == 4 and cache.hits == 0
    fit_head(x, y, train, holdout, cache=cache, shifts=np.ones((1, 8)) * 0.1)
    assert cache.fits == 5


def _rewrite(path, **change):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update({k: v(arrays) if callable(v) else v for k, v in change.items()})
    np.savez(path.with_suffix(""), **arrays)    # np.savez adds .npz


TAMPERED = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "not a head": lambda p: p.write_bytes(b"not a head"),
    "a pickle": lambda p: np.save(p.with_suffix(""), np.array([{"W": 1}], dtype=object), allow_pickle=True) or
                          p.with_suffix(".npy").replace(p),
    "negated W": lambda p: _rewrite(p, W=lambda a: -a["W"]),
    "permuted classes": lambda p: _rewrite(p, classes=lambda a: a["classes"][::-1].copy()),
    "a 2-class head": lambda p: _rewrite(p, W=lambda a: a["W"][:, :2], b=lambda a: a["b"][:2],
                                         classes=lambda a: a["classes"][:2]),
    "wrong shape": lambda p: _rewrite(p, W=lambda a: a["W"][:-1]),
    "all NaN": lambda p: _rewrite(p, W=lambda a: np.full_like(a["W"], np.nan)),
    "out-of-range classes": lambda p: _rewrite(p, classes=lambda a: a["classes"] + 10),
    "another key's entry": lambda p: _rewrite(p, key=np.array("0" * 40)),
}


@pytest.mark.parametrize("damage", list(TAMPERED))
def test_a_damaged_or_foreign_cache_entry_is_refitted_with_a_notice(tmp_path, damage):
    from pacs_embed.analysis.heads import HeadCacheWarning
    x, y = problem(n=200, d=6, k=3)
    train, holdout = split(len(y), 0, "photo")
    head = fit_head(x, y, train, holdout, cache=HeadCache(tmp_path))
    entry = tmp_path / f"{head.key}.npz"
    TAMPERED[damage](entry)
    cache = HeadCache(tmp_path)
    with pytest.warns(HeadCacheWarning, match=f"{head.key}.npz is refitted"):
        again = fit_head(x, y, train, holdout, cache=cache)
    assert np.array_equal(again.W, head.W) and cache.fits == 1              # the same head as a clean cache gives
    classes = np.unique(y[train])
    assert np.array_equal(Head.from_file(entry, head.key, 6, classes).W, head.W)   # rewritten, and no pickle needed


def test_a_source_with_one_class_is_a_clear_error():
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="only class"):
        fit_head(x, np.zeros(20, int), *split(20, 0, "photo"))


@pytest.mark.parametrize("solver", ["fast", "sklearn"])
@pytest.mark.parametrize("args, says", [
    (lambda x, y, tr, ho: (x, y[:-5], tr, ho), "one label per row"),
    (lambda x, y, tr, ho: (x, y, np.append(tr, len(x) + 3), ho), r"train split must be row indices in \[0, 60\)"),
    (lambda x, y, tr, ho: (x, y, tr, ho[:0]), "holdout split is empty"),
    (lambda x, y, tr, ho: (x, y, np.ones(len(x), bool), ho), "bool values"),      # a mask, not indices
    (lambda x, y, tr, ho: (np.where(np.arange(len(x))[:, None] == 7, np.nan, x), y, tr, ho), "NaN or inf in 1 of 60 rows"),
])
def test_fit_head_names_inputs_it_cannot_use(solver, args, says):
    x, y = problem(n=60, d=6, k=3)
    with pytest.raises(ValueError, match=says):
        fit_head(*args(x, y, *split(60, 0, "photo")), solver=solver)


def test_a_head_given_features_of_another_width_or_with_nan_says_so():
    x, y = problem(n=60, d=6, k=3)
    head = fit_head(x, y, *split(60, 0, "photo"))
    with pytest.raises(ValueError, match="trained on 6-dimensional features"):
        head.predict(x[:, :4])
    with pytest.raises(ValueError, match="NaN or inf values in 1 of 60 rows"):
        head.predict(np.where(np.arange(60)[:, None] == 2, np.inf, x))


def test_a_key_follows_the_bytes_and_read_only_images_are_hashed_once(monkeypatch):
    from pacs_embed.analysis import heads
    x, y = problem()[:2]
    x = x.astype(np.float32)                                    # as embeddings are
    train, holdout = split(len(y), 0, "d")
    before = head_key(x, y, train, holdout, C_GRID)
    x[0, 0] += 1e-3                                             # a writable array is hashed as it is now
    assert head_key(x, y, train, holdout, C_GRID) != before
    x.flags.writeable = False                                   # evaluate hands methods read-only source images
    calls = []
    monkeypatch.setattr(heads.model.hashlib, "sha256", lambda *a, real=heads.model.hashlib.sha256: calls.append(1) or real(*a))
    keys = {head_key(x, y, train, holdout, C_GRID) for _ in range(3)}
    assert len(keys) == 1
    assert len(calls) == (1 + 5) + 2 * (1 + 4)                  # key + 5 parts, then key + 4 (x memoised) twice
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 5
    assert head_key(x, y2, train, holdout, C_GRID) not in keys  # labels, split, grid and shifts still count
    assert head_key(x, y, train, holdout, C_GRID, shifts=np.ones((1, x.shape[1]))) not in keys


def test_heads_of_several_seeds_fitted_together_are_the_heads_fitted_one_by_one():
    x, y = problem(n=500, d=16, k=4, seed=5)
    shifts = np.random.default_rng(1).standard_normal((2, 16)) * 0.2
    splits = [split(len(y), seed, "art") for seed in range(3)]
    for s in (None, shifts):
        together = fit_heads(x, y, splits, shifts=s)
        for (train, holdout), head in zip(splits, together):
            alone = fit_head(x, y, train, holdout, shifts=s)
            assert head.C == alone.C and head.key == alone.key
            assert np.mean(head.predict(x) == alone.predict(x)) >= 0.995


def test_a_batch_fits_a_head_asked_twice_once_and_fits_when_a_head_is_first_used(monkeypatch):
    from pacs_embed.analysis import heads
    x, y = problem(n=300, d=8, k=3)
    calls = []
    monkeypatch.setattr(heads.solvers, "lbfgs_paths", lambda *a, real=heads.solvers.lbfgs_paths: calls.append(len(a[2])) or real(*a))
    batch = HeadBatch(HeadCache())
    asked = [batch.ask(x, y, *split(len(y), seed, "photo")) for seed in (0, 1, 0)]
    assert all(isinstance(h, PendingHead) for h in asked) and asked[0] is asked[2] and len(batch) == 2
    assert calls == []                                          # nothing fitted until a head is used ...
    accuracy = asked[1].holdout_accuracy
    assert calls == [2] and len(batch) == 0                     # ... then both seeds, in one solver run
    assert accuracy == fit_head(x, y, *split(len(y), 1, "photo")).holdout_accuracy
    assert batch.ask(x, y, *split(len(y), 0, "photo")) is asked[0].resolved()   # now from the cache


def test_a_head_that_cannot_be_fitted_raises_where_it_is_used(monkeypatch):
    from pacs_embed.analysis import heads
    x, y = problem(n=200, d=6, k=3)

    def broken(*a):
        raise FloatingPointError("the solver diverged")
    monkeypatch.setattr(heads.solvers, "lbfgs_paths", broken)
    batch = HeadBatch()
    head = batch.ask(x, y, *split(len(y), 0, "photo"))
    batch.flush()
    with pytest.raises(FloatingPointError, match="diverged"):
        head.predict(x)
    with pytest.raises(ValueError, match="only class"):         # a one-class training set: at once
        batch.ask(x, np.zeros(len(y), int), *split(len(y), 0, "photo"))


def test_lbfgs_solves_problems_of_very_different_scales_side_by_side():
    rng = np.random.default_rng(0)
    scales = np.array([1e-2, 1.0, 1e2])
    targets = rng.standard_normal((3, 50))
    H = [np.diag(np.linspace(1, 30, 50)) * s for s in scales]   # condition number 30, scales 1e4 apart

    def loss_grad(idx, U):
        g = np.stack([H[b] @ (u - targets[b]) for b, u in zip(idx, U)])
        return np.array([0.5 * (u - targets[b]) @ gb for b, u, gb in zip(idx, U, g)]), g
    U, iterations = minimize_lbfgs(loss_grad, np.zeros((3, 50)), gtol=1e-8 * scales, ftol=0.0)   # gradient test only
    assert np.abs(U - targets).max() < 1e-6
    assert (iterations < 200).all()


def test_the_compact_lbfgs_product_is_the_two_loop_recursion():
    from pacs_embed.analysis.heads.lbfgs import _Pairs
    rng = np.random.default_rng(2)
    p, m = 30, 5
    A = rng.standard_normal((p, p))
    A = A @ A.T + p * np.eye(p)                                 # curvature pairs y = A s of a convex quadratic

    def two_loop(pairs, g):                                     # Nocedal & Wright, algorithm 7.4
        q, alphas = g.copy(), []
        for s, y in reversed(pairs):
            alphas.append((s @ q) / (s @ y))
            q -= alphas[-1] * y
        s, y = pairs[-1]
        q *= (s @ y) / (y @ y)
        for (s, y), a in zip(pairs, reversed(alphas)):
            q += (a - (y @ q) / (s @ y)) * s
        return q
    pairs, kept = _Pairs(3, p, m), [[], [], []]
    for step in range(14):                                      # more pairs than slots; problems hold 0-5
        if step == 8:                                           # a restart (as after a bad direction)
            pairs.count[0], kept[0] = 0, []
        for b in range(3):
            if step < 3 * b:
                continue
            s = rng.standard_normal(p)
            pairs.add(b, s, A @ s)
            kept[b] = (kept[b] + [(s, A @ s)])[-m:]
        g = rng.standard_normal((3, p))
        for idx in (np.arange(3), np.array([1, 2]), np.array([0]), np.array([2])):
            got = pairs.times(idx, g[idx])
            for row, b in zip(got, idx):
                want = two_loop(kept[b], g[b]) if kept[b] else g[b]
                assert np.allclose(row, want, rtol=1e-9, atol=1e-12), (step, b)


def test_a_batch_too_large_for_memory_is_fitted_in_parts(monkeypatch):
    from pacs_embed.analysis import heads
    x, y = problem(n=300, d=8, k=3)
    splits = [split(len(y), seed, "art") for seed in range(5)]
    runs = []
    monkeypatch.setattr(heads.solvers, "lbfgs_paths", lambda *a, real=heads.solvers.lbfgs_paths: runs.append(len(a[2])) or real(*a))
    monkeypatch.setattr(heads.model, "BATCH_BYTES", 2 * 8 * 300 * 4)      # room for two splits' rotated rows (d = 8 > 3 classes)
    parts = fit_heads(x, y, splits)
    assert runs == [2, 2, 1]
    assert all(np.array_equal(h.W, fit_head(x, y, *s).W) and h.key == fit_head(x, y, *s).key for h, s in zip(parts, splits))


def _bits(head) -> tuple:
    return head.C, head.W.tobytes(), head.b.tobytes()


@pytest.mark.parametrize("kind", ["plain", "shifted copies", "repeated rows", "C on a sample"])
def test_a_head_is_a_function_of_its_inputs_alone_bit_for_bit(kind, monkeypatch):
    """The same W, b and C whether a head is fitted alone, beside other seeds, in another order, or from several
    threads at once (a batch used to change the blocking of its sums, and so the last bits)."""
    from concurrent.futures import ThreadPoolExecutor
    from pacs_embed.analysis import heads
    x, y = problem(n=900, d=32, k=5, seed=4)
    splits = [split(len(y), seed, "photo") for seed in range(4)]
    shifts = None
    if kind == "shifted copies":
        shifts = np.random.default_rng(1).standard_normal((2, 32)) * 0.2
    if kind == "repeated rows":
        splits = [(np.sort(np.concatenate([t, t[::3]])), h) for t, h in splits]
    if kind == "C on a sample":
        monkeypatch.setattr(heads.model, "SELECT_ROWS", 300)
    alone = [_bits(fit_heads(x, y, [s], shifts=shifts)[0]) for s in splits]
    assert [_bits(h) for h in fit_heads(x, y, splits, shifts=shifts)] == alone
    assert [_bits(h) for h in fit_heads(x, y, splits[::-1], shifts=shifts)] == alone[::-1]
    with heads.single_threaded_blas(), ThreadPoolExecutor(4) as pool:   # as evaluate does: the main thread pins BLAS
        threaded = list(pool.map(lambda s: _bits(fit_heads(x, y, [s], shifts=shifts)[0]), splits))
    assert threaded == alone


def test_a_head_does_not_depend_on_the_blas_thread_count():
    import hashlib
    import os
    import subprocess
    import sys
    code = ("import sys, hashlib; sys.path.insert(0, 'tests'); from test_heads import problem\n"
            "from pacs_embed.analysis.heads import fit_heads, split\n"
            "x, y = problem(n=1500, d=64, k=7); hs = fit_heads(x, y, [split(len(y), s, 'photo') for s in range(3)])\n"
            "print(hashlib.sha256(b''.join(h.W.tobytes() + h.b.tobytes() for h in hs)).hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = {n: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                                 env={**os.environ, "OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n}).stdout
               for n in ("1", "2", "4")}
    assert len(set(digests.values())) == 1, digests
