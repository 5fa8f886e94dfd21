"""Every way of classifying target images, in one registry: baselines, test-time operators, train-time augmentation.

The contract (the paper's open question 2 is "which method?", so any method plugs in here):

1. ``fit(src)`` sees only what a method may legitimately see — a ``Source``: the source domain's
   unit image embeddings and labels (``src.x``, ``src.y``) with their seeded 80/20 split
   (``src.train``, ``src.holdout``), and the text side: every domain's description under the current
   strategy (``src.descriptions``, ``src.description`` for the source), the class prompts
   (``src.class_vectors``) and an encoder for new prompts (``src.encode``). ``src.fit_head(features)``
   gives the standard logistic head (C chosen on the source hold-out; cached on disk). Under
   ``evaluate`` it returns at once and the head is fitted later, together with the other seeds'
   heads on the same features — or as soon as the method uses it.
2. ``predict(x, source, target)`` labels target images ``x`` given the source and target
   ``Description`` (``.vector`` is the unit text vector t; ``.class_vectors`` "{phrasing} of a {class}"):
   one class index (into ``emb.classes``) per row of ``x``; anything else is an error naming the method.

A method never sees target images or labels before predicting (``tests/test_methods.py`` poisons
the target domains and checks every registered method fits the same). ``evaluate`` fits each method
once per (source, seed, description) and scores it on every other domain.

Worked example — a test-time operator is one line, wrapped for you: the head is trained on
``op(x_src, t_src, t_src)`` and applied to ``op(x_tgt, t_src, t_tgt)``::

    @register("half_translate")
    def half_translate(x, t_src, t_tgt):
        return x + 0.5 * (t_src - t_tgt)

and a learned method fits whatever it needs on the source::

    @register("translated_centroids")
    class TranslatedCentroids(Method):
        '''Nearest source class centroid, after moving target images by Δ.'''
        def fit(self, src):
            tr = src.train
            self.centroids = np.stack([src.x[tr][src.y[tr] == k].mean(0) for k in range(src.n_classes)])
            return self
        def predict(self, x, source, target):
            return ((x + source.vector - target.vector) @ self.centroids.T).argmax(1)

``uses_text = False`` marks a method whose results do not depend on the domain descriptions
(reported once, with description "-"); ``seeded = False`` one that does not depend on the source
split (fitted once per source); ``default = False`` one that runs only when named; ``family`` (one of
``FAMILIES``) what kind of method it is — figures colour a family alike.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .arguments import did_you_mean
from .embeddings import group_means, l2_normalize
from .heads import C_GRID, Head, HeadBatch, HeadCache, PendingHead, fit_head
from .text import Description, OnFirstUse
from ..errors import ArgumentError, ArgumentTypeError, UnknownName

METHODS: dict[str, Callable[[], "Method"]] = {}
FAMILIES = ("baseline", "zero-shot", "test-time operator", "modality gap and projection", "train-time augmentation",
            "other")   # Method.family, in the order figures show them


@dataclass
class Source:
    """What a method may see when it is fitted: one source domain's data and the text side."""
    x: np.ndarray                     # (n, D) unit image embeddings of every image of the source domain
    y: np.ndarray                     # (n,) their labels
    train: np.ndarray                 # indices (into x) of the seeded 80% that heads train on
    holdout: np.ndarray               # indices of the 20% that chooses C
    domain: str
    seed: int
    description: Description          # the source domain's description
    descriptions: list[Description]   # every domain's description (same strategy), in the cache's domain order
    class_vectors: np.ndarray = OnFirstUse()   # (n_classes, D) unit "a photo of a {class}" (read when first used)
    n_classes: int
    encode: Callable | None = None    # prompts -> unit text vectors (new prompts are encoded and cached)
    heads: HeadCache | None = None
    Cs: tuple = C_GRID
    solver: str = "fast"
    batch: HeadBatch | None = None    # evaluate's: heads are fitted together with the other seeds' when first used
    dataset: str = ""                 # the registered dataset's name ("" when the registry does not know it)

    def fit_head(self, features: np.ndarray, extra: np.ndarray | None = None,
                 extra_from: np.ndarray | None = None, shifts: np.ndarray | None = None) -> Head | PendingHead:
        """The standard head on ``features`` (one row per source image, as ``x``): trained on the 80%,
        C chosen on the 20%. ``extra`` rows (augmentation), each made from source row ``extra_from[i]``,
        join training when their source row is a training row (never the hold-out's). ``shifts``
        (m, D): the head also trains on normalise(features[i] + c) for every training row i and shift
        c — the same as ``extra`` rows, but fitted without materialising them (much faster). Under
        ``evaluate`` the head is a ``PendingHead``: fitted with its batch when first used."""
        features = np.asarray(features, np.float32)
        if len(features) != len(self.y):
            raise ArgumentError(f"fit_head wants one row per source image ({len(self.y)}), got {len(features)}")
        self._check_inputs(features, extra, extra_from, shifts)
        train, y = self.train, self.y
        if extra is not None:
            keep = np.isin(extra_from, self.train)
            train = np.concatenate([train, len(y) + np.arange(int(keep.sum()))])
            features = np.concatenate([features, np.asarray(extra, np.float32)[keep]])
            y = np.concatenate([y, self.y[extra_from[keep]]])
        try:
            if self.batch is not None and self.solver == "fast":
                return self.batch.ask(features, y, train, self.holdout, shifts)
            return fit_head(features, y, train, self.holdout, self.Cs, self.heads, self.solver, shifts)
        except ValueError as e:
            raise ArgumentError(f"source domain {self.domain!r}: {e}. Leave it out as a source (`pacs-embed report "
                             f"--sources ...`, evaluate(..., sources=[...])); it is still scored as a target") from None

    def _check_inputs(self, features, extra, extra_from, shifts) -> None:
        """``features``, ``extra``/``extra_from`` and ``shifts`` as fit_head needs them (shapes that fit, finite
        values), or an error saying what is wrong."""
        width = features.shape[1] if features.ndim == 2 else None
        if extra is not None:
            extra = np.asarray(extra)
            if extra_from is None:
                raise ArgumentError("fit_head: extra rows need extra_from, the source row each was made from")
            extra_from = np.asarray(extra_from)
            if extra.ndim != 2 or extra.shape[1] != width or extra_from.shape != (len(extra),):
                raise ArgumentError(f"fit_head: extra must be (m, {width}) rows with one source row index each in "
                                 f"extra_from; got extra {extra.shape}, extra_from {extra_from.shape}")
            if len(extra_from) and (extra_from.dtype.kind not in "iu" or extra_from.min() < 0
                                    or extra_from.max() >= len(self.y)):
                raise ArgumentError(f"fit_head: extra_from must index the {len(self.y)} source images; it holds "
                                 f"{extra_from.dtype} values from {extra_from.min()} to {extra_from.max()}")
        if shifts is not None and np.size(shifts) and np.shape(shifts)[-1] != width:
            raise ArgumentError(f"fit_head: shifts must be {width}-dimensional, as the features are; got shape "
                             f"{np.shape(shifts)}")
        for what, a in (("features", features), ("extra rows", extra), ("shifts", shifts)):
            if a is not None and a is not self.x and not np.isfinite(a).all():   # x: checked by load
                bad = np.flatnonzero(~np.isfinite(np.asarray(a, np.float64).reshape(len(a), -1)).all(1))
                raise ArgumentError(f"source domain {self.domain!r}: the {what} given to fit_head hold NaN or inf in "
                                 f"{len(bad)} of {len(a)} rows (e.g. row {bad[0]}); the method's transform made them")


class Method:
    """Base class: ``fit(src) -> self`` on the source, then ``predict(x, source, target) -> labels``.

    Parameters follow scikit-learn's contract: each is an ``__init__`` keyword argument with a default, stored under
    its own name; ``get_params``, ``set_params`` and ``clone`` work from the signature. A method with parameters other
    than its defaults is named ``name:param=value`` (``make``, ``--methods interpolate:weight=0.25``)."""
    uses_text = True      # results depend on the domain descriptions (fitted and reported per description)
    seeded = True         # results depend on the source split
    default = True        # part of every evaluation unless methods are named
    family = "other"      # which kind of method it is: figures colour a family alike (FAMILIES)
    trains_on_text = False  # its head is trained on features made from the domain descriptions (the explorer
                            # refits it only when asked)

    def get_params(self) -> dict:
        """{parameter: value} of this method (its ``__init__`` keyword arguments)."""
        return {p: getattr(self, p) for p in _init_params(type(self))}

    def set_params(self, **params) -> "Method":
        known = self.get_params()
        for key, value in params.items():
            if key not in known:
                raise UnknownName(f"method {type(self).__name__} has no parameter {key!r}"
                                  f"{did_you_mean(key, known)}; its parameters: {sorted(known) or 'none'}")
            setattr(self, key, value)
        return self

    def clone(self) -> "Method":
        """A new, unfitted instance with the same parameters."""
        return type(self)(**self.get_params())

    def fit(self, src: Source) -> "Method":
        return self

    def predict(self, x: np.ndarray, source: Description, target: Description) -> np.ndarray:
        raise NotImplementedError


class Operator(Method):
    """A test-time operator ``op(x, t_src, t_tgt, **params) -> x'``: head trained on op(x_src, t_src, t_src). Its
    parameters are the function's keyword-only arguments (with their defaults)."""
    family = "test-time operator"

    def __init__(self, op, **params):
        self.op = op
        self.params = {**_operator_params(op), **params}

    def get_params(self) -> dict:
        return dict(self.params)

    def set_params(self, **params) -> "Operator":
        known = _operator_params(self.op)
        for key in params:
            if key not in known:
                raise UnknownName(f"operator {getattr(self.op, '__name__', 'op')!r} has no parameter {key!r}"
                                  f"{did_you_mean(key, known)}; its parameters: {sorted(known) or 'none'}")
        self.params.update(params)
        return self

    def clone(self) -> "Operator":
        return Operator(self.op, **self.params)

    def fit(self, src):
        t = src.description.vector
        features = self.op(src.x, t, t, **self.params)
        features = np.asarray(features)
        if features.shape == src.x.shape and float(np.abs(features - src.x).max()) <= 1e-6:
            features = src.x   # no shift, no change (up to rounding): the plain head
        self.trains_on_text = features is not src.x
        self.head = src.fit_head(features)
        return self

    def predict(self, x, source, target):
        affine = getattr(self.op, "affine", None)   # the op's form as scale ⊙ (x + coef · vectors): no copy of x
        if affine is not None:
            return self.head.predict_affine(x, *affine(x, source.vector, target.vector, **self.params))
        return self.head.predict(self.op(x, source.vector, target.vector, **self.params))


def _init_params(cls) -> list[str]:
    init = cls.__init__
    if init is object.__init__:
        return []
    return [p.name for p in inspect.signature(init).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _operator_params(op) -> dict:
    return {p.name: p.default for p in inspect.signature(op).parameters.values() if p.kind == p.KEYWORD_ONLY}


def register(name: str):
    """Decorator: add a method under ``name`` — a ``Method`` subclass, or an operator function
    ``op(x, t_src, t_tgt) -> x'``. Registering a name again replaces the method."""
    def add(obj):
        if inspect.isclass(obj) and issubclass(obj, Method):
            METHODS[name] = obj
        elif callable(obj):
            sig = inspect.signature(obj).parameters.values()
            n_args = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in sig)
            if n_args != 3 or any(p.kind == p.KEYWORD_ONLY and p.default is p.empty for p in sig):
                raise ArgumentTypeError(f"operator {name!r} must take (x, t_src, t_tgt) and, as parameters, keyword-only "
                                        f"arguments with defaults (x, t_src, t_tgt, *, weight=0.5); it takes {n_args} "
                                        f"positional arguments")
            METHODS[name] = lambda: Operator(obj)
        else:
            raise ArgumentTypeError(f"register({name!r}) takes a Method subclass or a function op(x, t_src, t_tgt)")
        return obj
    return add


def parse(spec: str) -> tuple[str, dict]:
    """``"interpolate:weight=0.25,foo=bar"`` -> ("interpolate", {"weight": 0.25, "foo": "bar"}); values are Python
    literals where they parse as one, else strings."""
    import ast
    name, _, rest = str(spec).partition(":")
    params = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ArgumentError(f"method {spec!r}: parameters are written name:param=value[,param=value]; "
                                f"{part!r} is not one")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    return name, params


def seeded(method: str) -> bool:
    """Whether a method's results depend on the source split (``in_domain`` and unknown names: yes)."""
    return METHODS[base_name(method)]().seeded if base_name(method) in METHODS else True


def base_name(spec: str) -> str:
    """The registered name of a method spec (``"interpolate:weight=0.25"`` -> ``"interpolate"``)."""
    return str(spec).partition(":")[0]


def make(name: str) -> Method:
    """A fresh, unfitted instance of the method registered as ``name`` — with parameters when it is written
    ``name:param=value[,param=value]`` (an unknown parameter is an error naming the method's parameters)."""
    base, params = parse(name)
    if base not in METHODS:
        raise UnknownName(f"unknown method {base!r}{did_you_mean(base, METHODS)}; registered: {list(METHODS)}")
    method = METHODS[base]()
    return method.set_params(**params) if params else method


# Each method's parameters: the default and the range a sweep walks (DomainBed's hparams_registry, as data)
PARAMETERS = {
    "translate": {"step": (1.0, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])},
    "interpolate": {"weight": (0.5, [0.0, 0.25, 0.5, 0.75, 1.0])},
    "translate_calibrated": {"unshared": ("image", ["image", "middle", "text"])},
    # None: LADS's own config for the dataset (lads.SETTINGS); the ranges span its configs' values
    "lads": {"lr": (None, [1e-4, 1e-3, 5e-3, 1e-2]), "weight_decay": (None, [0.0, 0.005, 0.05]), "layers": (None, [1, 2])},
}


def default_methods() -> list[str]:
    return [n for n in METHODS if make(n).default]


def delta(t_src: np.ndarray, t_tgt: np.ndarray) -> np.ndarray:
    """The paper's Δ = ET(t_src) − ET(t_tgt) (unit text vectors): added to a target image, moves it to the source."""
    return t_src - t_tgt


# ---- baselines ---------------------------------------------------------------------------------

@register("none")
class NoTranslation(Method):
    """x' = x: the source head on target images as they are (the paper's baseline)."""
    family = "baseline"
    uses_text = False

    def fit(self, src):
        self.head = src.fit_head(src.x)
        return self

    def predict(self, x, source, target):
        return self.head.predict(x)


@register("zeroshot")
class ZeroShot(Method):
    """ŷ = argmax_k cos(x, e_k), e_k = "a photo of a {class}": zero-shot CLIP (Radford et al., 2021); no head."""
    family = "zero-shot"
    uses_text, seeded = False, False

    def fit(self, src):
        self.class_vectors = src.class_vectors
        return self

    def predict(self, x, source, target):
        return (x @ self.class_vectors.T).argmax(1)


@register("zeroshot_domain")
class ZeroShotDomain(Method):
    """ŷ = argmax_k cos(x, e_{tgt,k}), e_{tgt,k} = "{target phrasing} of a {class}" (averaged over the
    description's phrasings): zero-shot CLIP told the target domain; no head."""
    family = "zero-shot"
    seeded = False

    def predict(self, x, source, target):
        return (x @ target.class_vectors.T).argmax(1)


# ---- test-time operators ---------------------------------------------------------------------
# Notation: x a unit image embedding, t_src / t_tgt the unit description vectors of the source and
# target domains, Δ = t_src − t_tgt, normalise(v) = v / |v|. Every statistic a method learns comes
# from the source domain's training images or from text, never from target images.

def inverse_norms(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """1 / |x_i + v| for every row, from |x|² + 2x·v + |v|² (no copy of x); 0 where x_i + v = 0 (it stays 0)."""
    x32, v = np.asarray(x, np.float32), np.asarray(v, np.float64)
    sq = np.einsum("nd,nd->n", x32, x32, dtype=np.float64) + 2 * (x32 @ v.astype(np.float32)) + v @ v
    r = np.sqrt(np.maximum(sq, 0.0))
    return np.divide(1.0, r, out=np.zeros_like(r), where=r > 0)


def _moved(x, step):
    """``affine`` of an operator x' = normalise(x + step): (vectors, coef, scale)."""
    return step[None], None, inverse_norms(x, step)


@register("translate")
def translate(x, t_src, t_tgt, *, step=1.0):
    """x' = x + step·Δ, not renormalised (the paper: C(EI(x) + Δ), Δ = ET(t_src) − ET(t_tgt); ``step`` 1 is the
    paper's; ``translate:step=0.5`` walks half of it)."""
    return x + step * delta(t_src, t_tgt)


translate.affine = lambda x, t_src, t_tgt, step=1.0: ((step * delta(t_src, t_tgt))[None], None, None)


@register("translate_renorm")
def translate_renorm(x, t_src, t_tgt):
    """x' = normalise(x + Δ): the paper's translation, put back on the unit sphere the head was trained on."""
    return l2_normalize(x + delta(t_src, t_tgt))


translate_renorm.affine = lambda x, t_src, t_tgt: _moved(x, delta(t_src, t_tgt))


@register("interpolate")
def interpolate(x, t_src, t_tgt, *, weight=0.5):
    """x' = normalise(x + weight·Δ): by default half of the paper's step (between none and translate_renorm)."""
    return l2_normalize(x + weight * delta(t_src, t_tgt))


interpolate.affine = lambda x, t_src, t_tgt, weight=0.5: _moved(x, weight * delta(t_src, t_tgt))


@register("translate_calibrated")
class TranslateCalibrated(Method):
    """x' = x + α·Δ, α the slope of the source images' class structure on the class prompts' (this package's own).

    |Δ| between unit text vectors depends on the text geometry (and the modality gap), not on how far apart the image
    clouds are; α rescales Δ to image-space distances, estimated on the source alone from c_k, the class centroids of
    the source *training* images, and e_k, the unit class prompts ("a photo of a {class}"), both centred:

    - ``unshared="image"`` (default): α = Σ⟨c_k, e_k⟩ / Σ|e_k|², the least-squares slope of the centroids on the
      prompts. Exact when the class structure the two do not share is the images' (orthogonal to the text: it does
      not inflate α); class structure only the *text* has shrinks it by Σ|shared|² / Σ|e_k|² (errors in variables),
      toward ``none``.
    - ``unshared="text"``: α = Σ|c_k|² / Σ⟨c_k, e_k⟩, the reverse regression: exact when the unshared structure is the
      text's, inflated by the images' own.
    - ``unshared="middle"``: their geometric mean.

    From source images and class prompts the two cannot be told apart (each class gives one image and one text
    vector: the shared scale, the image-only and the text-only structure are three unknowns for two moments), so
    the truth lies between the two slopes, ``alpha_range``; ``shared`` = (Σ⟨c, e⟩)² / (Σ|c|² Σ|e|²) says how much of
    their class structure the images and prompts share (1: all; the range then closes). ``tests/test_science.py``:
    within 5% of the best step from target data in five worlds with image-only structure, the truth inside the
    range in worlds with text-only structure up to twice the shared part, where ``unshared="text"`` lands within 20%.
    Where image class structure does not follow the text (α near 0, e.g. a random-weight model) it falls back
    towards ``none``. Head: the plain one.
    """
    family = "test-time operator"
    UNSHARED = ("image", "text", "middle")

    def __init__(self, unshared: str = "image"):
        self.unshared = unshared

    def fit(self, src):
        if self.unshared not in self.UNSHARED:
            raise ArgumentError(f"translate_calibrated: unshared={self.unshared!r}; choose one of {self.UNSHARED}")
        tr = src.train
        present = np.flatnonzero(np.bincount(src.y[tr], minlength=src.n_classes))
        c = group_means(src.x[tr], src.y[tr], src.n_classes)[present]
        e = np.asarray(src.class_vectors, np.float64)[present]
        c, e = c - c.mean(0), e - e.mean(0)   # Σ_{k<l} ⟨c_k − c_l, e_k − e_l⟩ = K Σ_k ⟨c_k − c̄, e_k − ē⟩ (same for |·|²)
        both, text, image = float((c * e).sum()), float((e * e).sum()), float((c * c).sum())
        if len(present) < 2 or text <= 0:
            self.alpha_range, self.shared = (1.0, 1.0), float("nan")
        elif both <= 0 or image <= 0:    # no class structure in common: no step can be told
            self.alpha_range, self.shared = (0.0, 0.0), 0.0
        else:
            self.alpha_range, self.shared = (both / text, image / both), both * both / (image * text)
        lo, hi = self.alpha_range
        self.alpha = {"image": lo, "text": hi, "middle": float(np.sqrt(lo * hi))}[self.unshared]
        self.head = src.fit_head(src.x)
        return self

    def predict(self, x, source, target):
        return self.head.predict_affine(x, (self.alpha * delta(source.vector, target.vector))[None])


@register("gap_shift")
class GapShift(Method):
    """x' = normalise(x − g + Δ), g = μ_I − μ_T; the head is trained on normalise(x_src − g).

    The modality-gap shift of Liang et al., NeurIPS 2022 ("Mind the Gap: Understanding the Modality
    Gap in Multi-modal Contrastive Representation Learning"): image and text embeddings live in two
    separated cones; moving images along the gap vector g (image mean − text mean) into the text cone
    makes text differences such as Δ meaningful for them. μ_I is the mean of the source training
    images, μ_T the mean of the unit class-prompt vectors (not of the domain descriptions, so g does
    not depend on how domains are described, and a prompt edit reuses the heads).
    """
    family = "modality gap and projection"

    def fit(self, src):
        self.gap = src.x[src.train].mean(0) - src.class_vectors.mean(0)
        self.head = src.fit_head(l2_normalize(src.x - self.gap))
        return self

    def predict(self, x, source, target):
        return self.head.predict_affine(x, *_moved(x, delta(source.vector, target.vector) - self.gap))


@register("project_out")
class ProjectOut(Method):
    """x' = P x with P = I − A(AᵀA)⁺Aᵀ, A = [t_d − t̄]: every domain direction removed, at training and test.

    Chuang et al., 2023 ("Debiasing Vision-Language Models via Biased Prompts"): project the spurious
    directions spanned by the prompts that describe them (here: every domain description, centred
    on their mean t̄) out of the embeddings; the head is trained on the projected source images, and
    target images are projected the same way (no translation needed).
    """
    family = "modality gap and projection"
    trains_on_text = True

    def fit(self, src):
        A = np.stack([d.vector for d in src.descriptions]).astype(np.float64)
        U, sv, _ = np.linalg.svd((A - A.mean(0)).T, full_matrices=False)   # (D, n_domains): domain directions
        self.Q = U[:, sv > 1e-8 * max(sv.max(), 1e-30)].astype(np.float32)  # orthonormal basis of their span
        self.head = src.fit_head(self.project(src.x))
        return self

    def project(self, x):
        """P x = x − Q Qᵀ x (= (I − A A⁺) x), without forming the D x D matrix."""
        return x - (x @ self.Q) @ self.Q.T

    def predict(self, x, source, target):
        # (P x)·W = x·W − (x Q)(Qᵀ W): the projection as an affine step, with no projected copy of x
        return self.head.predict_affine(x, self.Q.T, -(np.asarray(x, np.float32) @ self.Q))


@register("project_pair")
class ProjectPair(Method):
    """Along d = normalise(t_tgt − t_src), set each target image's coordinate to the mean coordinate of
    the source training images: x' = x − ((x − μ_I)·d) d. Head: the plain one (this package's first
    reading of "projecting the domain out"; Chuang et al.'s projection is ``project_out``)."""
    family = "modality gap and projection"

    def fit(self, src):
        self.mean = src.x[src.train].mean(0)
        self.head = src.fit_head(src.x)
        return self

    def predict(self, x, source, target):
        d = target.vector - source.vector
        if not np.linalg.norm(d):
            return self.head.predict(x)
        d = d / np.linalg.norm(d)
        return self.head.predict_affine(x, d[None], -(x @ d - self.mean @ d)[:, None])


# ---- train-time augmentation -------------------------------------------------------------------

@register("augment")
class Augment(Method):
    """x' = x; the head also trains on normalise(x + t_d − t_src) for every source training image x and
    every other described domain d (the paper's translation, run backwards at training time: source
    images moved toward each target description). Target images are classified as they are."""
    family = "train-time augmentation"
    trains_on_text = True

    def fit(self, src):
        s = src.description.vector
        self.head = src.fit_head(src.x, shifts=[d.vector - s for d in src.descriptions if d.domain != src.domain])
        return self

    def predict(self, x, source, target):
        return self.head.predict(x)
