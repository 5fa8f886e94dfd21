"""How close each solver gets to the logistic-regression optimum, on the full-size random-CLIP cache.

For one source domain (seed 0's 80% split) and C in {10, 1000}, the reference is scikit-learn run to full
convergence (tol 1e-10); printed: the share of all 9,991 images on which plain scikit-learn (its default
tol) and pacs_embed's solver predict as the reference does.

    .venv/bin/python benchmarks/head_convergence.py [--source sketch]
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
from pacs_embed.analysis.heads import fit_head, split  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="sketch")
    args = ap.parse_args()
    emb = pa.load(pacs_scale.clip_cache(), check=False)
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


if __name__ == "__main__":
    main()
