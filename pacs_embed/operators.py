"""Domain-transfer operators: name -> function, all with one signature (open question 2).

An operator maps L2-normalised image embeddings ``x`` (n, D) of a *target* domain into the space
the source head was trained on, given the unit text embeddings of the source and target domains::

    op(x, t_src, t_tgt, ctx) -> x'

The head is trained on ``op(x_source, t_src, t_src, ctx)`` (the operator with no domain shift), so
operators that change the geometry (centering) see the same geometry at training and test time.
Add your own::

    @register("my_op")
    def my_op(x, t_src, t_tgt, ctx): ...
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embeddings import l2_normalize


@dataclass
class Context:
    image_mean: np.ndarray   # mean of the source *training* images (unit vectors): no target images used
    text_mean: np.ndarray    # mean of the unit text embeddings of all domain descriptions
    alpha: float = 0.5       # interpolation weight


OPERATORS: dict = {}


def register(name: str):
    """Decorator: add an operator to the registry under ``name``."""
    def add(fn):
        OPERATORS[name] = fn
        return fn
    return add


def delta(t_src: np.ndarray, t_tgt: np.ndarray) -> np.ndarray:
    """The paper's Δ = ET(t_src) − ET(t_tgt) (unit text vectors): added to a target image, moves it to the source."""
    return t_src - t_tgt


@register("translate")
def translate(x, t_src, t_tgt, ctx):
    """The paper: x + Δ, with x and both text vectors unit-norm, the sum not renormalised."""
    return x + delta(t_src, t_tgt)


@register("translate_renorm")
def translate_renorm(x, t_src, t_tgt, ctx):
    """x + Δ, renormalised to the unit sphere where the head was trained."""
    return l2_normalize(x + delta(t_src, t_tgt))


@register("project_out")
def project_out(x, t_src, t_tgt, ctx):
    """Along the domain direction d = (t_tgt − t_src)/|·|, set each image's coordinate to the source images' mean."""
    d = t_tgt - t_src
    if not np.linalg.norm(d):
        return x
    d = d / np.linalg.norm(d)
    return x - np.outer((x - ctx.image_mean) @ d, d)


@register("center")
def center(x, t_src, t_tgt, ctx):
    """Modality-gap centering: subtract each modality's mean, renormalise, then translate and renormalise."""
    xc = l2_normalize(x - ctx.image_mean)
    s, t = l2_normalize(t_src - ctx.text_mean), l2_normalize(t_tgt - ctx.text_mean)
    return l2_normalize(xc + s - t)


@register("interpolate")
def interpolate(x, t_src, t_tgt, ctx):
    """Part of the way: normalise(x + α Δ) — α=0 is no translation, α=1 translate_renorm."""
    return l2_normalize(x + ctx.alpha * delta(t_src, t_tgt))
