"""Every source -> target pair, every method, every seed: one tidy results table.

Methods: ``none`` (the paper's baseline: the source head on raw target images), every operator
in ``operators.OPERATORS`` (test-time, per domain prompt set), ``augment`` (train-time: the head
also sees source images translated toward each other described domain), ``zeroshot`` ("a photo of
a {class}") and ``zeroshot_domain`` ("{target domain prompt} of a {class}"). All methods of a pair
are scored on the same target images.

Usage::

    res = evaluate(cache, seeds=range(5), prompt_sets=("paper", "nouns"))
    res.table          # source, target, method, prompt_set, seed, accuracy, n
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .embeddings import Embeddings, l2_normalize, load
from .heads import fit_head
from .operators import OPERATORS, Context
from .prompts import class_prompts, domain_class_prompts, domain_prompt_lists, load_prompt_set, prompt_embeddings

BASELINES = ("none", "zeroshot", "zeroshot_domain")
NO_TEXT = "-"   # prompt_set of methods that use no domain description


@dataclass
class TextSide:
    """Unit text vectors: per prompt set, one per domain (mean of its prompts); class and domain x class prompts."""
    domain: dict[str, np.ndarray]       # prompt set -> (n_domains, D)
    classes: np.ndarray                 # (n_classes, D)  "a photo of a {class}"
    domain_classes: np.ndarray          # (n_domains, n_classes, D)  "{domain prompt} of a {class}"
    prompts: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # prompt set -> domain -> prompts


def text_side(cache, domains, classes, prompt_sets=("paper",), n_nouns: int | None = None, prompt_set=None) -> TextSide:
    """Encode (through the cache, only what is missing) every prompt the methods need."""
    ps = prompt_set or load_prompt_set()
    lists = {how: domain_prompt_lists(domains, how, ps, n_nouns) for how in prompt_sets}
    cls = class_prompts(classes, ps)
    dcls = [domain_class_prompts(d, classes, ps) for d in domains]
    wanted = list(dict.fromkeys(cls + sum(dcls, []) + [p for lst in lists.values() for ps_ in lst.values() for p in ps_]))
    vec = dict(zip(wanted, l2_normalize(prompt_embeddings(cache, wanted))))
    mean = lambda prompts: l2_normalize(np.mean([vec[p] for p in prompts], axis=0))  # noqa: E731
    return TextSide({how: np.stack([mean(lst[d]) for d in domains]) for how, lst in lists.items()},
                    np.stack([vec[p] for p in cls]),
                    np.stack([np.stack([vec[p] for p in row]) for row in dcls]), lists)


@dataclass
class Results:
    table: pd.DataFrame                 # one row per (source, target, method, prompt_set, seed)
    correct: dict                       # (source, target, method, prompt_set) -> (n_seeds, n_target) bool
    heads: dict = field(default_factory=dict)  # (source, seed) -> the plain head; (source, seed, method, prompt_set) -> others


def _methods(methods):
    known = [*BASELINES, *OPERATORS, "augment"]
    methods = list(methods or known)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise KeyError(f"unknown method(s) {unknown}; choose from {known}")
    return methods


def _method_heads(xs, ys, s, seed, domains, head, text, prompt_sets, methods, alpha) -> dict:
    """(method, prompt set) -> (head, operator context) for the operators and train-time augmentation.

    An operator's head is trained on op(x_src, t_src, t_src): where that leaves the features unchanged
    the plain head serves; identical features share one head.
    """
    out, fitted = {}, {}
    for how in prompt_sets:
        D = text.domain[how]
        ctx = Context(image_mean=xs[head.train].mean(0), text_mean=D.mean(0), alpha=alpha)
        for name in [m for m in methods if m in OPERATORS]:
            feats = OPERATORS[name](xs, D[s], D[s], ctx)
            key = "plain" if np.allclose(feats, xs) else hashlib.sha1(np.ascontiguousarray(feats).tobytes()).hexdigest()
            if key not in fitted:
                fitted[key] = head if key == "plain" else fit_head(feats, ys, seed, domains[s])
            out[(name, how)] = (fitted[key], ctx)
        if "augment" in methods:
            others = [d for d in range(len(domains)) if d != s]
            moved = np.concatenate([l2_normalize(xs + D[d] - D[s]) for d in others])
            out[("augment", how)] = (fit_head(xs, ys, seed, domains[s], extra=(moved, np.tile(ys, len(others))),
                                              extra_index=np.tile(np.arange(len(ys)), len(others))), ctx)
    return out


def evaluate(cache=None, seeds=range(5), prompt_sets=("paper",), methods=None, n_nouns: int | None = None,
             alpha: float = 0.5, emb: Embeddings | None = None, text: TextSide | None = None,
             sources=None, progress: bool = True) -> Results:
    """Train a head per (source domain, seed) and score every method on every other domain.

    ``sources`` limits the source domains (default: all); targets are always all other domains.
    """
    emb = emb or load(cache)
    text = text or text_side(cache, emb.domains, emb.classes, prompt_sets, n_nouns)
    methods, seeds = _methods(methods), list(seeds)
    rows, correct, heads = [], {}, {}

    def record(s, t, method, how, seed, hits):
        rows.append((s, t, method, how, seed, float(hits.mean()), len(hits)))
        correct.setdefault((s, t, method, how), [None] * len(seeds))[seeds.index(seed)] = hits

    domains = emb.domains
    jobs = [(domains.index(s), seed) for s in (sources or domains) for seed in seeds]
    for s, seed in tqdm(jobs, desc="heads", disable=not progress):
        src = emb.in_domain(domains[s])
        head = fit_head(emb.x[src], emb.label[src], seed, domains[s])
        heads[(domains[s], seed)] = head
        rows.append((domains[s], domains[s], "in_domain", NO_TEXT, seed, head.holdout_accuracy, len(head.holdout)))
        op_heads = _method_heads(emb.x[src], emb.label[src], s, seed, domains, head, text, prompt_sets, methods, alpha)
        heads.update({(domains[s], seed, *key): h for key, (h, _) in op_heads.items() if h is not head})
        for t in (t for t in range(len(domains)) if t != s):
            tgt = emb.in_domain(domains[t])
            xt, yt = emb.x[tgt], emb.label[tgt]
            pair = (domains[s], domains[t])
            if "none" in methods:
                record(*pair, "none", NO_TEXT, seed, head.model.predict(xt) == yt)
            if "zeroshot" in methods:
                record(*pair, "zeroshot", NO_TEXT, seed, (xt @ text.classes.T).argmax(1) == yt)
            if "zeroshot_domain" in methods:
                record(*pair, "zeroshot_domain", "paper", seed, (xt @ text.domain_classes[t].T).argmax(1) == yt)
            for (name, how), (h, ctx) in op_heads.items():
                D = text.domain[how]
                x_in = xt if name == "augment" else OPERATORS[name](xt, D[s], D[t], ctx)
                record(*pair, name, how, seed, h.model.predict(x_in) == yt)
    table = pd.DataFrame(rows, columns=["source", "target", "method", "prompt_set", "seed", "accuracy", "n"])
    return Results(table, {k: np.stack(v) for k, v in correct.items()}, heads)
