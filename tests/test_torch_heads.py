"""The torch solver (``solver="torch"``): the heads' model on a torch device, checked on CPU torch against
the float64 optimum (tests/optimum.py) and the numpy solver — the same C, the same clear predictions — and kept out of the analysis unless chosen."""
import subprocess
import sys

import numpy as np
import pytest

from pacs_embed.analysis.heads import C_GRID, HeadCache, fit_head, resolve_solver, shifted, split
from optimum import assert_at_optimum, chosen_C, optimum
from test_heads import problem

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("seed, signal", [(0, 1.0), (1, 0.3), (2, 3.0)])
def test_it_picks_the_optimum_s_C_and_reaches_the_optimum_as_the_numpy_solver_does(seed, signal):
    x, y = problem(seed=seed, signal=signal)
    train, holdout = split(len(y), seed, "photo")
    on_torch, fast = (fit_head(x, y, train, holdout, solver=s) for s in ("torch", "fast"))
    assert on_torch.C == fast.C == chosen_C(x, y, train, holdout, C_GRID)
    assert_at_optimum(on_torch, optimum(x, y, train, on_torch.C), x, y, train)
    assert on_torch.validation.keys() == set(C_GRID) and on_torch.iterations > 0


def test_every_C_of_the_grid_reaches_the_optimum():
    x, y = problem()
    train, holdout = split(len(y), 0, "photo")
    for C in C_GRID:
        assert_at_optimum(fit_head(x, y, train, holdout, Cs=(C,), solver="torch"), optimum(x, y, train, C), x, y, train)


def test_shifted_copies_and_the_head_cache_work_as_with_the_numpy_solver(tmp_path):
    x, y = problem(n=400, d=16, k=4, seed=3)
    train, holdout = split(len(y), 1, "cartoon")
    shifts = np.random.default_rng(0).standard_normal((3, 16)) * 0.3
    on_torch = fit_head(x, y, train, holdout, shifts=shifts, solver="torch", cache=HeadCache(tmp_path))
    rows = np.concatenate([x] + [shifted(x[train], c) for c in shifts])
    labels = np.concatenate([y] + [y[train]] * 3)
    written = fit_head(rows, labels, np.concatenate([train, len(x) + np.arange(3 * len(train))]), holdout)
    assert on_torch.C == written.C and np.mean(on_torch.predict(x) == written.predict(x)) >= 0.995
    cache = HeadCache(tmp_path)
    again = fit_head(x, y, train, holdout, shifts=shifts, solver="torch", cache=cache)
    assert cache.hits == 1 and np.array_equal(again.W, on_torch.W)                      # read back, not refitted
    fast = fit_head(x, y, train, holdout, shifts=shifts, cache=cache)
    assert fast.key != on_torch.key and cache.fits == 1                                  # its own key: no mixing


def test_evaluate_with_the_torch_solver_gives_the_numpy_solver_s_results():
    from pacs_embed.analysis import evaluate
    from test_analysis import synthetic
    emb, text = synthetic(n_per=20)
    kw = dict(methods=["none", "translate", "augment"], text=text, seeds=range(2), head_cache=False, progress=False)
    a, b = evaluate(emb, solver="torch", **kw).table, evaluate(emb, solver="fast", **kw).table
    assert np.abs(a.accuracy.to_numpy() - b.accuracy.to_numpy()).max() <= 0.02


def test_auto_is_the_numpy_solver_without_cuda_and_the_analysis_never_imports_torch_for_it():
    if torch.cuda.is_available():
        assert resolve_solver("auto") == "torch"
        return
    code = ("import sys; from pacs_embed.analysis.heads import resolve_solver, fit_head, split\n"
            "import numpy as np; x = np.random.default_rng(0).standard_normal((60, 4)).astype('float32')\n"
            "y = np.arange(60) % 3; fit_head(x, y, *split(60, 0, 'photo'), solver='auto')\n"
            "print(resolve_solver('auto'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["fast", "False"]
    with pytest.raises(ValueError, match="choose one of"):
        resolve_solver("gpu")
