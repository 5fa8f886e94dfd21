"""``lads``: learned, text-guided augmentation in the spirit of LADS (opt-in: name it in ``methods``).

Dunlap et al., ICLR 2023, "Using Language to Extend to Unseen Domains" (repository
lisadunlap/LADS; this is a re-implementation in numpy from the paper's description, no code copied).
For every other domain d, a small residual MLP f_d(x) = x + W₂·relu(W₁x + b₁) + b₂ is trained on the
source training images with

    L = ½ · (1 − cos(f_d(x) − x, t_d − t_src))                  (domain alignment)
      + ½ · CE(100 · cos(f_d(x), e_{d,k}), y)                   (class consistency)

where e_{d,k} are the unit "{phrasing of d} of a {class}" vectors, by AdamW (lr 1e-3, weight decay
0.01, batches of 256, ``STEPS`` steps, seeded by (seed, source)). The logistic head is then trained
on the real source training images plus every normalise(f_d(x)); target images are classified as they are.
Only source images and text are used. Cost, measured by ``benchmarks/analysis_speed.py`` on a 2-core
CPU at PACS scale: about 4–5 s per (source, seed, description), the three networks and a head on 4x
the rows — some 4 minutes for the default report's 60, which is why it runs only when named.

Usage::

    res = pa.evaluate(emb, ["none", "augment", "lads"])
"""
from __future__ import annotations

import hashlib

import numpy as np

from .embeddings import l2_normalize
from .methods import Method, register

HIDDEN, STEPS, BATCH, LR, WEIGHT_DECAY, LOGIT_SCALE = 128, 300, 256, 1e-3, 0.01, 100.0


def train_augmenter(x, y, direction, class_vectors, rng) -> tuple:
    """Fit f(x) = x + W₂ relu(W₁x + b₁) + b₂ with the LADS losses; returns its parameters."""
    n, d = x.shape
    params = [rng.standard_normal((d, HIDDEN)) / np.sqrt(d), np.zeros(HIDDEN),
              rng.standard_normal((HIDDEN, d)) * 0.01 / np.sqrt(HIDDEN), np.zeros(d)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    delta = direction / max(np.linalg.norm(direction), 1e-12)
    E = np.asarray(class_vectors, np.float64)
    for step in range(1, STEPS + 1):
        i = rng.integers(0, n, min(BATCH, n))
        xb, yb = x[i].astype(np.float64), y[i]
        W1, b1, W2, b2 = params
        pre = xb @ W1 + b1
        h = np.maximum(pre, 0)
        r = h @ W2 + b2
        f = xb + r
        k = len(xb)
        # domain alignment: 1 − cos(r, δ)
        rn = np.linalg.norm(r, axis=1, keepdims=True) + 1e-12
        cos_r = (r @ delta)[:, None] / rn
        g_r = -(delta[None] / rn - cos_r * r / rn ** 2) / k * 0.5
        # class consistency: cross-entropy of scaled cosines to the class prompts
        fn = np.linalg.norm(f, axis=1, keepdims=True)
        fe = f @ E.T
        logits = LOGIT_SCALE * fe / fn
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(k), yb] -= 1.0
        G = p / k * 0.5 * LOGIT_SCALE
        g_f = G @ E / fn - (G * fe).sum(1, keepdims=True) * f / fn ** 3
        g_r = g_r + g_f
        dh = (g_r @ W2.T) * (pre > 0)
        grads = [xb.T @ dh, dh.sum(0), h.T @ g_r, g_r.sum(0)]
        for j, (p_, g) in enumerate(zip(params, grads)):   # AdamW
            m[j] = 0.9 * m[j] + 0.1 * g
            v[j] = 0.999 * v[j] + 0.001 * g * g
            mh, vh = m[j] / (1 - 0.9 ** step), v[j] / (1 - 0.999 ** step)
            p_ -= LR * (mh / (np.sqrt(vh) + 1e-8) + WEIGHT_DECAY * p_)
    return params


def augment(x, params) -> np.ndarray:
    W1, b1, W2, b2 = params
    return (x + np.maximum(x @ W1 + b1, 0) @ W2 + b2).astype(np.float32)


@register("lads")
class LADS(Method):
    """Head trained on source images plus their LADS augmentations toward every other described domain."""
    default = False

    def fit(self, src):
        digest = hashlib.sha256(f"lads/{src.seed}/{src.domain}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        xt, yt = src.x[src.train], src.y[src.train]
        s = src.description.vector
        extra = [l2_normalize(augment(xt, train_augmenter(xt, yt, d.vector - s, d.class_vectors, rng)))
                 for d in src.descriptions if d.domain != src.domain]
        self.head = src.fit_head(src.x, extra=np.concatenate(extra), extra_from=np.tile(src.train, len(extra)))
        return self

    def predict(self, x, source, target):
        return self.head.predict(x)
