"""How close each solver gets to the logistic-regression optimum, on the full-size random-CLIP cache.

For one source domain (seed 0's 80% split) and C in {10, 1000}, the reference is scikit-learn run to full
convergence (tol 1e-10); printed: the share of all 9,991 images on which plain scikit-learn (its default
tol) and pacs_embed's solver predict as the reference does.

    .venv/bin/python benchmarks/head_convergence.py [--source sketch]
    .venv/bin/python benchmarks/head_convergence.py --tol     # pacs_embed's tolerance: time vs agreement

``--tol`` instead fits every source's plain and ``augment`` head (seed 0, the full C grid, paper
descriptions) at several tolerances and compares each with the same solver run to 1e-8.
"""
import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
import pacs_scale  # noqa: E402

from pacs_embed import analysis as pa  # noqa: E402
from pacs_embed.analysis import heads  # noqa: E402
from pacs_embed.analysis.heads import fit_head, single_threaded_blas, split  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="sketch")
    ap.add_argument("--tol", action="store_true", help="time and agreement of pacs_embed's solver per tolerance")
    args = ap.parse_args()
    emb = pa.load(pacs_scale.clip_cache("byte"), check=False)   # the cache its logs were printed on
    if args.tol:
        return tolerances(emb)
    i = emb.in_domain(args.source)
    x, y = emb.x[i], emb.label[i]
    train, holdout = split(len(i), 0, args.source)
    for C in (10.0, 1000.0):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(x[train].astype(np.float64), y[train])
        t_ref = time.perf_counter() - t
        want = ref.predict(emb.x)
        agree = {s: float((fit_head(x, y, train, holdout, Cs=(C,), solver=s).predict(emb.x) == want).mean())
                 for s in ("sklearn", "fast")}
        print(f"{args.source}, C={C:g}: same predictions as the fully converged solution ({t_ref:.0f} s to get): "
              f"scikit-learn default {agree['sklearn']:.2%}, pacs_embed {agree['fast']:.2%}")


def tolerances(emb, tols=(1e-8, 1e-5, 3e-5, 1e-4)):
    """Seconds, iterations and agreement with the 1e-8 solution, per tolerance (8 heads each)."""
    from pacs_embed.analysis.text import text_side
    descs = text_side(emb, ("paper",)).descriptions["paper"]
    ref, default = None, heads.model.TOL
    print(f"pacs_embed's solver, 4 sources x (plain, augment) heads, full C grid; now TOL = {heads.model.TOL:g}")
    for tol in tols:
        heads.model.TOL, seconds, iterations, preds = tol, 0.0, 0, []
        for s, d in zip(emb.domains, descs):
            i = emb.in_domain(s)
            train, holdout = split(len(i), 0, s)
            for shifts in (None, [o.vector - d.vector for o in descs if o.domain != s]):
                t = time.perf_counter()
                with single_threaded_blas():
                    h = fit_head(emb.x[i], emb.label[i], train, holdout, shifts=shifts)
                seconds += time.perf_counter() - t
                iterations += h.iterations
                preds.append((h.C, h.predict(emb.x)))
        ref = ref or preds
        agree = [float((p == q).mean()) for (_, p), (_, q) in zip(preds, ref)]
        same_c = all(c == rc for (c, _), (rc, _) in zip(preds, ref))
        print(f"tol {tol:g}: {seconds:5.2f} s, {iterations} L-BFGS iterations, same predictions as tol 1e-8 on "
              f"{np.mean(agree):.3%} of images (worst head {min(agree):.3%}), same C: {same_c}")
    heads.model.TOL = default


if __name__ == "__main__":
    main()
