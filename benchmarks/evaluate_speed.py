"""Evaluation speed at PACS scale (9,991 x 512 synthetic unit vectors, PACS domain sizes), one seed.

    .venv/bin/python benchmarks/evaluate_speed.py
"""
import time, numpy as np
from pathlib import Path
from pacs_embed.embeddings import Embeddings, l2_normalize
from pacs_embed.evaluate import TextSide, evaluate
rng = np.random.default_rng(0)
counts = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
D = 512
cls = rng.standard_normal((7, D)); dom = rng.standard_normal((4, D))
x, y, d = [], [], []
for i, n in enumerate(counts.values()):
    lab = rng.integers(0, 7, n)
    x.append(cls[lab] + 0.7 * dom[i] + 1.5 * rng.standard_normal((n, D))); y.append(lab); d.append(np.full(n, i))
emb = Embeddings(l2_normalize(np.concatenate(x)).astype(np.float32), np.concatenate(y), np.concatenate(d), list(counts), [f"c{k}" for k in range(7)], [], Path("-"), True)
t = l2_normalize(rng.standard_normal((4, D)))
text = TextSide({"paper": t, "ensemble": l2_normalize(t + 0.1), "nouns": l2_normalize(t - 0.1)}, l2_normalize(cls), np.stack([l2_normalize(cls)] * 4))
t0 = time.perf_counter()
r = evaluate(emb=emb, text=text, seeds=[0], prompt_sets=("paper",), methods=["none"], progress=False)
print("1 seed, none only:", round(time.perf_counter() - t0, 1), "s")
t0 = time.perf_counter()
r = evaluate(emb=emb, text=text, seeds=[0], prompt_sets=("paper", "ensemble", "nouns"), progress=False)
print("1 seed, all methods, 3 prompt sets:", round(time.perf_counter() - t0, 1), "s")
