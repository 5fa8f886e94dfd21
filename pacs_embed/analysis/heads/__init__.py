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

The package, top to bottom: ``model`` (the model, ``Head``, ``split``, ``head_key``), ``store``
(``HeadCache``), ``lbfgs`` (the ``fast`` solver), ``solvers`` (``fit_head``/``fit_heads``; the torch and
scikit-learn solvers), ``batch`` (``HeadBatch``: heads asked for now, fitted together later).

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
from .batch import HeadBatch, PendingHead, resolved
from .lbfgs import minimize_lbfgs, single_threaded_blas
from .model import (C_GRID, HOLDOUT, SELECT_ROWS, SOLVER, SOLVERS, TOL, Head, head_key, kept_products, shared_products, shifted,
                    split)
from .solvers import check_solver, fit_head, fit_heads, resolve_solver, selection_rows
from .store import HeadCache, HeadCacheWarning

__all__ = ["C_GRID", "HOLDOUT", "SELECT_ROWS", "SOLVER", "SOLVERS", "TOL", "Head", "HeadBatch", "HeadCache",
           "HeadCacheWarning", "PendingHead", "check_solver", "fit_head", "fit_heads", "head_key", "minimize_lbfgs",
           "resolve_solver", "resolved", "selection_rows", "kept_products", "shared_products", "shifted", "single_threaded_blas",
           "split"]
