"""What a head should be, by what the model is: scikit-learn's objective and its optimum, reached in float64.

A solver is right when its objective is no higher than the optimum's (within ``GAP``, relative) and its predictions
agree with the optimum's wherever the optimum's margin between its top two classes exceeds ``MARGIN`` of its largest
logit (float32 features and products cannot resolve closer calls: an almost flat model, C = 0.01, has many).
Comparing argmax with scikit-learn fitted on float32 features compared near-ties, and failed on AVX2 CPUs.

Usage::

    ref = optimum(x, y, train, C)
    assert_at_optimum(head, ref, x, y, train)
"""
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

GAP = 1e-5      # relative excess of the objective (this solver: <= 1e-6 on the tests' problems; stopped early: 1e-4-1e-2)
MARGIN = 1e-5   # of the largest |logit|: ~100 float32 ulps (stopped early, disagreements have margins of 5e-3 and more)


def objective(x, y, train, C, W, b) -> float:
    """C·Σᵢ CE(W·xᵢ + b, yᵢ) + ½‖W‖² over the training rows, in float64 (scikit-learn's multinomial objective)."""
    z = x[train].astype(np.float64) @ np.asarray(W, np.float64) + np.asarray(b, np.float64)
    z -= z.max(1, keepdims=True)
    target = np.searchsorted(np.unique(y[train]), y[train])
    return float(C * (np.log(np.exp(z).sum(1)) - z[np.arange(len(target)), target]).sum() + 0.5 * (np.square(W)).sum())


def optimum(x, y, train, C) -> LogisticRegression:
    """scikit-learn's solution on float64 features, run to full convergence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit(x[train].astype(np.float64), y[train])


def assert_at_optimum(head, ref, x, y, train) -> None:
    C = ref.C
    best = objective(x, y, train, C, ref.coef_.T, ref.intercept_)
    mine = objective(x, y, train, C, head.W, head.b)
    assert mine - best <= GAP * abs(best), f"C={C}: objective {mine:.8g}, the optimum's {best:.8g}"
    logits = x.astype(np.float64) @ ref.coef_.T + ref.intercept_
    top = np.sort(logits, 1)
    clear = top[:, -1] - top[:, -2] > MARGIN * np.abs(logits).max()
    assert clear.mean() >= 0.9, f"C={C}: only {clear.mean():.1%} of rows have a margin float32 can resolve"
    differ = (head.predict(x) != ref.predict(x)) & clear
    assert not differ.any(), f"C={C}: {differ.sum()} of {clear.sum()} clear predictions differ from the optimum's"


def chosen_C(x, y, train, holdout, Cs) -> float:
    """The C the optimum's path picks on the hold-out (ties: the smaller C)."""
    scores = {C: np.mean(optimum(x, y, train, C).predict(x[holdout]) == y[holdout]) for C in sorted(Cs)}
    return max(scores, key=lambda C: (scores[C], -C))
