"""``lads``: LADS as its authors' code runs it (opt-in: name it in ``methods``).

Dunlap et al., ICLR 2023, "Using Language to Extend to Unseen Domains"; recipe read from the repository
lisadunlap/LADS (its code and configs, not only the paper) and re-implemented here in numpy, no code copied. Every
name below is read at commit ``CODE_COMMIT`` (08e812e), the commit of ``configs/base.yaml`` and
``configs/DomainNet/lads.yaml`` (the OfficeHome config's commit, 1110208, has the same ``Directional``). Point by point:

- **Per-class alignment target** (``AUGMENTATION.GENERIC: False`` in every config; ``methods/clip_transformations.py``,
  ``Noop.__init__``): for target domain d and class k, δ_{d,k} = normalise(e_{d,k} − e_{s,k}) with e the unit
  "{domain prompt} of a {class}" vectors of the target d and of the source s (LADS's ``NEUTRAL_TEXT_PROMPTS``).
- **One augmenter per target domain** (``methods/augmentations.py``, ``Directional.__init__``: one ``train_network``
  per text prompt), ``MLP``: f(x) = W₂·relu(W₁x + b₁) + b₂ with hidden width 384 (``configs/base.yaml``
  ``AUGMENTATION.MODEL.HIDDEN_DIM``), PyTorch's default ``nn.Linear`` initialisation. ``train_network`` builds this
  MLP whatever the config says: ``AUGMENTATION.MODEL.NUM_LAYERS: 1`` in the DomainNet and OfficeHome configs is read
  only by the end-to-end variant (``clip_transformations.AugE2EMLPMulti``), so every dataset gets two layers here too.
- **Loss** (``Directional.training_loop``): α·L_dir + (1 − α)·L_cc with α = 0.5 (``AUGMENTATION.ALPHA``;
  ``DOM_WEIGHT`` 1.0), where L_dir = mean_i [1 − cos(f(x_i) − x_i, δ_{d,y_i})] (``directional_loss_builder``)
  and L_cc is the class-weighted cross-entropy of the *unscaled* cosines cos(f(x_i), c_k) to the unit
  "a photo of a {class}" vectors c_k (``get_class_logits``; ``CrossEntropyLoss(weight=class_weights)``), class
  weights (1/count_k) / max_k(1/count_k) (``clip_transformations.py``, ``EmbeddingDataset.get_counts``).
- **Optimiser** (``train_network``): ``transformers.AdamW`` semantics (bias-corrected Adam, eps 1e-6, decoupled
  weight decay after the step), batches of 256 shuffled each epoch (``DATA.BATCH_SIZE``), 50 epochs
  (``AUGMENTATION.EPOCHS``); the epoch with the lowest validation loss (``eval_loop``) is kept. **Per dataset, as
  LADS's configs set the augmenter** (``SETTINGS``, each config read at the commit named there): DomainNet lr 1e-4,
  weight decay 0.005 (``configs/DomainNet/lads.yaml``); OfficeHome lr 1e-3, weight decay 0.005
  (``configs/OfficeHome/lads.yaml``); every other dataset (LADS has no config for PACS, VLCS or TerraIncognita)
  ``configs/base.yaml``'s lr 5e-3, weight decay 0.05. The method records which (``settings``); ``lads:lr=...``,
  ``weight_decay``, ``layers`` (1: linear) override them. The validation set here is the source's 20% hold-out
  (source data only) — the same hold-out then chooses the head's C, so it chooses both the augmenter's epoch and C;
  its loss is taken over the whole set at once (LADS averages per-batch means: the same but for the last batch's
  weight).
- **Augmented training set** (``Directional.augment_single``; ``INCLUDE_ORIG_TRAINING: True``): every training
  image plus normalise(f_d(normalise(x))) for each other domain d.
- **Several source prompts** (an ensemble description): averaged, as LADS's newest code does
  (``methods/clip_transformations.py`` at e1f4393, ``Base.__init__``: target − the mean of the source embeddings);
  at 08e812e ``Noop.__init__`` takes the first as the source (its configs name one).

Differences, stated: (1) LADS then trains its own MLP classifier (``ClipMLP``); here the augmented set trains the
package's logistic head (C on the hold-out), so that ``lads`` is compared with the other methods under one head.
(2) LADS's newest code (``methods/augmentations.py`` at 8e1447a) renamed ``Directional`` to ``LADS`` and made the
augmenter residual (``ResMLP``: x + MLP(x)); this follows the commit its configs were written with. Its per-image
choice of the most similar source prompt (``LADS.get_direction_vectors``) is called only by ``LADSBias``, and
commented out in ``LADS.training_loop``, so it is not part of the recipe. Target images are classified as they are.
Only source images and text are used.

Cost, measured by ``benchmarks/analysis_speed.py`` (2-core Xeon, PACS scale, random-weight CLIP cache): 8.4 s per
(source, seed, description) — three augmenters of 50 epochs and a head on 4x the rows — so some 8–9 minutes for a
default-sized report's 60 (4 sources x 5 seeds x 3 descriptions), which is why it runs only when named.

Usage::

    res = pa.evaluate(emb, ["none", "augment", "lads"])
"""
from __future__ import annotations

import hashlib

import numpy as np

from .embeddings import l2_normalize
from .methods import Method, register

HIDDEN, EPOCHS, BATCH, LR, WEIGHT_DECAY, ALPHA, EPS = 384, 50, 256, 5e-3, 0.05, 0.5, 1e-6
LADS_REPO = "lisadunlap/LADS"
CODE_COMMIT = "08e812ead34b28c2a067b08ec65c75a42fbe8da0"   # where every class and function named above exists
# The augmenter's settings per dataset, as LADS's own configs set them (each read at the pinned commit named);
# datasets LADS has no config for (PACS, VLCS, TerraIncognita, your own) take configs/base.yaml's.
SETTINGS = {
    "base": dict(lr=LR, weight_decay=WEIGHT_DECAY, layers=2,
                 source="configs/base.yaml @ 08e812ead34b28c2a067b08ec65c75a42fbe8da0 (AUGMENTATION.MODEL)"),
    "DomainNet": dict(lr=1e-4, weight_decay=0.005, layers=2,
                      source="configs/DomainNet/lads.yaml @ 08e812ead34b28c2a067b08ec65c75a42fbe8da0"),
    "OfficeHome": dict(lr=1e-3, weight_decay=0.005, layers=2,
                       source="configs/OfficeHome/lads.yaml @ 111020810c41c5c581ad57b30a45b5e20b6067b4"),
}


def settings(dataset: str | None) -> dict:
    """The augmenter's lr, weight decay and layers for a registered dataset's name (``SETTINGS``; base otherwise)."""
    return SETTINGS.get(dataset or "", SETTINGS["base"])


def _linear(rng, fan_in, fan_out) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's default nn.Linear initialisation: weight and bias uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / np.sqrt(fan_in)
    return (rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
            rng.uniform(-bound, bound, fan_out).astype(np.float32))


def forward(x, params) -> np.ndarray:
    """f(x) = W₂·relu(W₁x + b₁) + b₂ (two layers) or W·x + b (one) for the rows of ``x``."""
    if len(params) == 2:
        W, b = params
        return x @ W + b
    W1, b1, W2, b2 = params
    return np.maximum(x @ W1 + b1, 0) @ W2 + b2


def _loss_grad(params, x, y, targets, class_vectors, weights, grad=True):
    """LADS's loss on the rows (x, y) and, with ``grad``, its gradient with respect to ``params``."""
    linear = len(params) == 2
    if linear:
        W2, b2 = params
        h = x
        f = h @ W2 + b2
    else:
        W1, b1, W2, b2 = params
        pre = x @ W1 + b1
        h = np.maximum(pre, 0)
        f = h @ W2 + b2
    n = len(x)
    # directional: 1 − cos(f − x, δ_y)
    r = f - x
    rn = np.linalg.norm(r, axis=1, keepdims=True) + 1e-12
    d = targets[y]
    cos = (r * d).sum(1, keepdims=True) / rn
    loss_dir = float((1 - cos).mean())
    # class consistency: weighted cross-entropy of unscaled cosines to "a photo of a {class}"
    fn_norm = np.linalg.norm(f, axis=1, keepdims=True) + 1e-12
    fn = f / fn_norm
    logits = fn @ class_vectors.T
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    w = weights[y]
    loss_cc = float(-(w * logp[np.arange(n), y]).sum() / w.sum())
    loss = ALPHA * loss_dir + (1 - ALPHA) * loss_cc
    if not grad:
        return loss, None
    g_r = -(d / rn - cos * r / rn ** 2) / n * ALPHA
    G = np.exp(logp)
    G[np.arange(n), y] -= 1.0
    G *= (w / w.sum())[:, None] * (1 - ALPHA)
    g_fn = G @ class_vectors
    g_f = g_r + (g_fn - (g_fn * fn).sum(1, keepdims=True) * fn) / fn_norm
    if linear:
        return loss, [h.T @ g_f, g_f.sum(0)]
    dh = (g_f @ W2.T) * (pre > 0)
    return loss, [x.T @ dh, dh.sum(0), h.T @ g_f, g_f.sum(0)]


def train_augmenter(x, y, holdout_x, holdout_y, targets, class_vectors, rng, lr: float | None = None,
                    weight_decay: float | None = None, layers: int = 2) -> list[np.ndarray]:
    """One LADS augmenter toward one domain: ``targets`` (K, D) are the per-class directions δ_k, ``class_vectors``
    (K, D) the unit "a photo of a {class}" vectors; ``layers`` 2 (an MLP, hidden 384) or 1 (linear); returns the
    parameters of the epoch with the lowest hold-out loss."""
    x, holdout_x = np.asarray(x, np.float32), np.asarray(holdout_x, np.float32)
    targets, class_vectors = np.asarray(targets, np.float32), np.asarray(class_vectors, np.float32)
    d = x.shape[1]
    counts = np.bincount(y, minlength=len(class_vectors)).astype(np.float64)
    inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = (inverse / inverse.max()).astype(np.float32)
    lr = LR if lr is None else lr
    weight_decay = WEIGHT_DECAY if weight_decay is None else weight_decay
    params = [*_linear(rng, d, HIDDEN), *_linear(rng, HIDDEN, d)] if layers == 2 else [*_linear(rng, d, d)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    best, best_loss, step = [p.copy() for p in params], np.inf, 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for lo in range(0, len(x), BATCH):
            i = order[lo:lo + BATCH]
            _, grads = _loss_grad(params, x[i], y[i], targets, class_vectors, weights)
            step += 1
            for j, (p, g) in enumerate(zip(params, grads)):   # transformers.AdamW (correct_bias=True)
                m[j] = 0.9 * m[j] + 0.1 * g
                v[j] = 0.999 * v[j] + 0.001 * g * g
                size = lr * np.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step)
                p -= (size * m[j] / (np.sqrt(v[j]) + EPS)).astype(np.float32)
                p -= (lr * weight_decay * p).astype(np.float32)
        if len(holdout_x):
            loss, _ = _loss_grad(params, holdout_x, holdout_y, targets, class_vectors, weights, grad=False)
        else:   # no hold-out: the last epoch
            loss = -step
        if loss < best_loss:
            best, best_loss = [p.copy() for p in params], loss
    return best


@register("lads")
class LADS(Method):
    """Head trained on the source training images plus their LADS augmentations toward every other described domain
    (the recipe and its sources: ``pacs_embed/analysis/lads.py``). ``lr``, ``weight_decay``, ``layers``: the
    augmenter's; None (the default) takes LADS's own config for the dataset (``SETTINGS``), e.g.
    ``--methods lads:layers=1``."""
    default = False
    family = "train-time augmentation"
    trains_on_text = True

    def __init__(self, lr: float | None = None, weight_decay: float | None = None, layers: int | None = None):
        self.lr, self.weight_decay, self.layers = lr, weight_decay, layers

    def fit(self, src):
        digest = hashlib.sha256(f"lads/{src.seed}/{src.domain}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        xt, yt = l2_normalize(src.x[src.train]), src.y[src.train]
        xh, yh = l2_normalize(src.x[src.holdout]), src.y[src.holdout]
        photo = np.asarray(src.class_vectors, np.float32)
        own = np.asarray(src.description.class_vectors, np.float64)
        extra = []
        chosen = {k: v for k, v in self.get_params().items() if v is not None}   # else LADS's config for the dataset
        self.settings = {**settings(src.dataset), **chosen}
        knobs = {k: self.settings[k] for k in ("lr", "weight_decay", "layers")}
        for d in src.descriptions:
            if d.domain == src.domain:
                continue
            targets = l2_normalize(np.asarray(d.class_vectors, np.float64) - own)   # δ_{d,k}
            params = train_augmenter(xt, yt, xh, yh, targets, photo, rng, **knobs)
            extra.append(l2_normalize(forward(xt, params)).astype(np.float32))
        self.head = src.fit_head(src.x, extra=np.concatenate(extra), extra_from=np.tile(src.train, len(extra)))
        return self

    def predict(self, x, source, target):
        return self.head.predict(x)
