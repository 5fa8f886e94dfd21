"""The text side: how each domain is described, and the unit text vectors every method uses.

A *description* of a domain is a list of prompts whose normalised mean embedding stands for the
domain (Δ = t_src − t_tgt is taken between two of them), plus the *phrasings* of the domain used
for "{phrasing} of a {class}" prompts (domain-aware zero-shot). How the prompts are made is one of
``DESCRIPTIONS``:

- ``paper``: the domain's prompt ("a cartoon"), as in the paper;
- ``ensemble``: several phrasings ("a cartoon", "a comic illustration", ...), averaged;
- ``nouns``: "{prompt} of a {noun}" over N generic nouns that are not classes, averaged (the
  class-averaged description of the paper's open question 1);
- ``nouns_ensemble``: every phrasing × every noun.

``domain_prompts`` (a dict from domain folder name to one prompt or a list) replaces a domain's
prompt in every description: ``paper`` and ``ensemble`` use your prompts as they are, ``nouns``
expands them with the nouns. Domains you do not name keep their dataset's prompts (``templates``:
the registry entry the cache matches, or a templates file of your own).

Usage::

    text = text_side(emb, ("paper", "nouns"), domain_prompts={"cartoon": "a comic strip"})
    text.vectors("paper")        # (n_domains, D) unit vectors, in emb.domains order
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import MISSING, dataclass, field, replace
from typing import Callable

import numpy as np

from ..cache import Cache
from ..errors import ArgumentError, ArgumentTypeError, PacsEmbedError, UnknownName, add_note
from ..templates import class_prompts, domain_class_prompts, domain_prompt, legacy_templates, templates_for
from ..registry import match
from ..text_encoder import TextEncoder
from ..text_encoder import preload_text_tower as _preload_text_tower
from .arguments import check_cache_path, check_names, check_noun_count, check_prompt_dict, did_you_mean
from .embeddings import Embeddings, l2_normalize

NO_DESCRIPTION = "-"   # the ``description`` of results from methods that use no domain description


def _paper(base, ensemble, nouns, of):
    return base, base


def _ensemble(base, ensemble, nouns, of):
    return ensemble, ensemble


def _nouns(base, ensemble, nouns, of):
    return [of(p, n) for p in base for n in nouns], base


def _nouns_ensemble(base, ensemble, nouns, of):
    return [of(p, n) for p in ensemble for n in nouns], ensemble


# How a domain is described: name -> f(prompts, phrasings, nouns, of) -> (prompts to average, phrasings).
DESCRIPTIONS: dict[str, Callable] = {
    "paper": _paper,
    "ensemble": _ensemble,
    "nouns": _nouns,
    "nouns_ensemble": _nouns_ensemble,
}


_ENCODING = threading.RLock()   # one encoding at a time, whichever thread of evaluate first reads a vector


class OnFirstUse:
    """A dataclass field whose value may be given as a function of no arguments: it is called when the field is
    first read (once, under a lock) and its result kept. Text vectors use it so that a prompt is read from the
    cache — or encoded — only when something reads its vector: a cache that holds only the domain prompts still
    gives Table 1 and translation, and a new prompt is not encoded with "{prompt} of a {class}" for every class
    unless a method uses those. A field declared ``= OnFirstUse()`` is required; ``field(default=OnFirstUse())``
    defaults to None."""

    def __set_name__(self, owner, name):
        self.slot = f"_{name}"

    def __get__(self, obj, owner=None):
        if obj is None:
            return MISSING   # the class's own attribute: no default, as a plain annotated field
        value = obj.__dict__[self.slot]
        if callable(value):
            with _ENCODING:
                value = obj.__dict__[self.slot]
                if callable(value):
                    value = obj.__dict__[self.slot] = value()
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = None if value is self else value


def computed_state(obj) -> dict:
    """``obj.__dict__`` with its OnFirstUse fields computed: what pickling their holder stores (the functions that
    make them are local to ``text_side`` and cannot be pickled; the vectors can). Use as ``__getstate__``."""
    for name, attr in vars(type(obj)).items():
        if isinstance(attr, OnFirstUse):
            getattr(obj, name)
    return dict(obj.__dict__)


def stored(obj, name: str):
    """What the OnFirstUse field ``obj.name`` holds, without computing it: its value, or the function that makes it."""
    return obj.__dict__[f"_{name}"]


def computed(obj, name: str) -> bool:
    """Whether ``obj.name`` (an OnFirstUse field) holds its value already, i.e. reading it computes nothing."""
    return not callable(stored(obj, name))


@dataclass(frozen=True, eq=False)
class Description:
    """One domain's description: the prompts averaged into ``vector``, and its phrasings."""
    domain: str
    prompts: list[str]
    phrasings: list[str]
    vector: np.ndarray | None = None          # (D,) unit: normalised mean of the prompts' unit vectors
    # (n_classes, D) unit: "{phrasing} of a {class}", averaged over phrasings (encoded when first read)
    class_vectors: np.ndarray | None = field(default=OnFirstUse(), repr=False)
    __getstate__ = computed_state


def user_prompts(domain_prompts: dict | None, domains) -> dict[str, list[str]]:
    """Check ``domain_prompts`` ({domain: prompt or [prompts]}) against the cache's domains; values as lists."""
    out = {}
    for d, value in check_prompt_dict(domain_prompts).items():
        if d not in domains:
            raise UnknownName(f"domain_prompts names domain {d!r}{did_you_mean(d, domains)}, which this cache does not have; its domains are "
                           f"{list(domains)}")
        given = value
        value = list(value) if isinstance(value, (list, tuple)) else [value]
        if not value or any(not isinstance(p, str) or not p.strip() for p in value):
            raise ArgumentError(f"domain_prompts[{d!r}] must be a prompt or a non-empty list of prompts, not {given!r}")
        out[d] = value
    return out


def describe(domain: str, description: str, templates: dict, domain_prompts: dict | None = None,
             n_nouns: int | None = None) -> Description:
    """The (not yet encoded) description of ``domain`` by the strategy ``description`` in DESCRIPTIONS."""
    if description not in DESCRIPTIONS:
        raise UnknownName(f"unknown description {description!r}{did_you_mean(description, DESCRIPTIONS)}; choose from {sorted(DESCRIPTIONS)}")
    mine = (domain_prompts or {}).get(domain)
    base = mine or [domain_prompt(domain, templates)]
    ensemble = mine or templates.get("ensembles", {}).get(domain) or base
    nouns = templates.get("nouns", [])[:n_nouns]
    prompts, phrasings = DESCRIPTIONS[description](base, ensemble, nouns,
                                           lambda p, n: domain_class_prompts(p, [n], templates)[0])
    return Description(domain, list(prompts), list(phrasings))


@dataclass
class TextSide:
    """Unit text vectors: every domain's description per strategy, and the class prompts."""
    descriptions: dict[str, list[Description]]   # strategy -> one Description per domain, in emb.domains order
    # (n_classes, D) unit: "a photo of a {class}" (encoded when first read)
    class_vectors: np.ndarray | None = field(default=OnFirstUse(), repr=False)
    encode: Callable | None = field(default=None, repr=False)   # prompts -> unit vectors (encodes missing ones)
    __getstate__ = computed_state

    def fits(self, emb: Embeddings, what: str) -> "TextSide":
        """This text side, checked to describe ``emb``: every domain in its order and every class, in the images'
        dimension; otherwise an error naming what differs. Domains left unnamed (``from_vectors`` without
        ``domains``) are given ``emb``'s names (methods tell the source's description from the others by name)."""
        dim, n_classes = emb.x.shape[1], len(emb.classes)
        if computed(self, "class_vectors") and np.shape(self.class_vectors) != (n_classes, dim):
            raise ArgumentError(f"{what}: the text side's class vectors have shape {np.shape(self.class_vectors)}; the "
                             f"cache has {n_classes} classes of dimension {dim}")
        for description, described in self.descriptions.items():
            names = [d.domain for d in described]
            unnamed = names == [f"domain {i}" for i in range(len(names))]
            if len(names) != len(emb.domains) or not (unnamed or names == list(emb.domains)):
                raise ArgumentError(f"{what}: the text side's {description!r} description describes domains {names}; the cache's "
                                 f"are {list(emb.domains)} (one description per domain, in that order)")
            bad = [d.domain for d in described if np.shape(d.vector) != (dim,)
                   or computed(d, "class_vectors") and np.shape(d.class_vectors) != (n_classes, dim)]
            if bad:
                raise ArgumentError(f"{what}: the text side's {description!r} vectors of {bad} are not {dim}-dimensional "
                                 f"(with {n_classes} class vectors each), as the cache's images are")
        if all([d.domain for d in ds] == list(emb.domains) for ds in self.descriptions.values()):
            return self
        named = {description: [replace(d, domain=name, class_vectors=stored(d, "class_vectors")) for d, name in zip(ds, emb.domains)]
                 for description, ds in self.descriptions.items()}
        return replace(self, descriptions=named, class_vectors=stored(self, "class_vectors"))

    def vectors(self, description: str) -> np.ndarray:
        """(n_domains, D): the unit description vector of every domain."""
        return np.stack([d.vector for d in self.descriptions[description]])

    @classmethod
    def from_vectors(cls, domain_vectors: dict, class_vectors, domain_class_vectors=None, domains=None) -> "TextSide":
        """A text side from given vectors (synthetic data): {strategy: (n_domains, D)}, (n_classes, D)."""
        out = {}
        for description, vecs in domain_vectors.items():
            names = domains or [f"domain {i}" for i in range(len(vecs))]
            dcv = domain_class_vectors if domain_class_vectors is not None else [class_vectors] * len(vecs)
            out[description] = [Description(n, [], [], l2_normalize(np.asarray(v, np.float32)),
                                    l2_normalize(np.asarray(c, np.float32))) for n, v, c in zip(names, vecs, dcv)]
        return cls(out, l2_normalize(np.asarray(class_vectors, np.float32)))


def text_for(emb: Embeddings, text, what: str) -> TextSide:
    """``text`` checked to be a text side that describes ``emb`` (``TextSide.fits``), or an error naming ``what``."""
    if not isinstance(text, TextSide):
        raise ArgumentTypeError(f"{what} takes a text side (text = pa.text_side(emb, ...)), not a {type(text).__name__}")
    return text.fits(emb, what)


def _uses_nouns(description: str) -> bool:
    """Whether the strategy ``description`` (in DESCRIPTIONS) makes its prompts from the generic nouns."""
    def of(p, n):
        return f"{p} of a {n}"
    return DESCRIPTIONS[description](["p"], ["p"], [], of) != DESCRIPTIONS[description](["p"], ["p"], ["noun"], of)


def repeated(descriptions: dict) -> dict[str, str]:
    """{strategy: the earlier strategy it repeats} for strategies in ``descriptions`` ({strategy: [Description per
    domain]}) that describe every domain with the same prompts and phrasings as an earlier one — e.g. ``ensemble``
    for a dataset whose templates hold no ensembles (each domain's falls back to its one prompt, as ``paper``)."""
    def prompts(ds):
        return [(d.prompts, d.phrasings) for d in ds]
    out, seen = {}, {}
    for description, ds in descriptions.items():
        if not all(d.prompts for d in ds):   # given as vectors (TextSide.from_vectors): no prompts to compare
            continue
        key = repr(prompts(ds))
        if key in seen:
            out[description] = seen[key]
        else:
            seen[key] = description
    return out


def needed_prompts(domains, classes, descriptions=("paper",), domain_prompts: dict | None = None,
                   n_nouns: int | None = None, templates: dict | None = None) -> tuple[dict, list[str]]:
    """({strategy: [Description per domain]} not yet encoded, every prompt they and the class prompts need)."""
    templates = templates or templates_for(domains, classes)
    descriptions, n_nouns = check_names(descriptions, "descriptions") or [], check_noun_count(n_nouns)
    mine = user_prompts(domain_prompts, domains)
    descs = {description: [describe(d, description, templates, mine, n_nouns) for d in domains] for description in descriptions}
    _check_nouns(descs, len(templates.get("nouns", [])), n_nouns)
    if mine and set(mine) != set(domains):
        _warn_uneven_ensembles(descs, mine)
    for description, same in repeated(descs).items():
        warnings.warn(f"the descriptions {description!r} and {same!r} describe every domain with the same prompts (no separate "
                      f"{description!r} phrasings are held for these domains, or domain_prompts replace them), so their results "
                      f"are the same", stacklevel=3)
    wanted = class_prompts(classes, templates)
    for ds in descs.values():
        for d in ds:
            wanted += d.prompts + [q for p in d.phrasings for q in domain_class_prompts(p, classes, templates)]
    return descs, list(dict.fromkeys(wanted))


def _check_nouns(descs: dict, held: int, n_nouns) -> None:
    """A description that averages over generic nouns needs the templates to hold some (and says when fewer than
    ``n_nouns`` are held)."""
    for description in descs:
        if _uses_nouns(description) and not held:
            raise ArgumentError(f"the {description!r} description averages over generic nouns, and the prompt templates hold "
                                f"none; add a \"nouns\" list to the templates file or leave {description!r} out")
        if _uses_nouns(description) and n_nouns is not None and n_nouns > held:
            warnings.warn(f"n_nouns={n_nouns}, but the prompt templates hold {held} nouns: the {description!r} description "
                          f"averages over those {held}", stacklevel=4)


def _warn_uneven_ensembles(descs: dict, mine: dict) -> None:
    """An ensemble that averages the user's prompts for some domains and the packaged phrasings for others is said."""
    for description in descs:
        sizes = {d.domain: len(d.prompts) for d in descs[description]}
        if "ensemble" in description and any(sizes[d] != sizes[o] for d in mine for o in sizes if o not in mine):
            warnings.warn(f"the {description!r} description averages your {', '.join(f'{d}: {sizes[d]}' for d in mine)} "
                          f"prompt(s) for the domains you named and the packaged phrasings for the others "
                          f"({', '.join(f'{o}: {n}' for o, n in sizes.items() if o not in mine)}): an average of "
                          f"fewer prompts is a less smoothed description, so compare its domains with care, or give "
                          f"every domain its prompts", stacklevel=4)


def text_side(emb: Embeddings, descriptions=("paper",), domain_prompts: dict | None = None,
              n_nouns: int | None = None, templates: dict | None = None) -> TextSide:
    """The text side of ``descriptions``, through the cache: every description's vector now; the class prompts
    and "{phrasing} of a {class}" when a method first reads them. Prompts the cache lacks are encoded (and added
    to it), each time together with every other prompt of that kind the text side may need."""
    cache = check_cache_path(emb, "text_side")
    templates = templates or cache_templates(emb)
    descs, _ = needed_prompts(emb.domains, emb.classes, descriptions, domain_prompts, n_nouns, templates)
    unit: dict[str, np.ndarray] = {}

    def vectors(prompts) -> np.ndarray:   # (len(prompts), D) unit float64; reads or encodes only unseen prompts
        new = [p for p in dict.fromkeys(prompts) if p not in unit]
        if new:
            unit.update(zip(new, l2_normalize(cache.prompt_vectors(new, TextEncoder(cache)).astype(np.float64))))
        return np.stack([unit[p] for p in prompts])

    def of_classes(p):
        return domain_class_prompts(p, emb.classes, templates)

    every_domain_class = [q for ds in descs.values() for d in ds for p in d.phrasings for q in of_classes(p)]

    def class_vectors(d: Description):   # (n_classes, D), averaged over the phrasings: float32, as the images
        def make():
            vectors(every_domain_class)   # every description's at once: one pass of the text tower
            return l2_normalize(np.mean([vectors(of_classes(p)) for p in d.phrasings], axis=0)).astype(np.float32)
        return make

    try:
        vectors([p for ds in descs.values() for d in ds for p in d.prompts])
    except PacsEmbedError as e:   # say which descriptions lack prompts when the others could run
        held = cache.prompts
        lacking = [description for description, ds in descs.items() if any(p not in held for d in ds for p in d.prompts)]
        if 0 < len(lacking) < len(descs):
            add_note(e, f"(the description(s) {lacking} need them; the cache holds every prompt of "
                        f"{[description for description in descs if description not in lacking]}: leave the others out with descriptions=[...] "
                        f"in Python, --descriptions on the command line)")
        raise
    encoded = {description: [Description(d.domain, d.prompts, d.phrasings,
                                 l2_normalize(vectors(d.prompts).mean(0)).astype(np.float32), class_vectors(d))
                     for d in ds] for description, ds in descs.items()}

    return TextSide(encoded, lambda: vectors(class_prompts(emb.classes, templates)).astype(np.float32),
                    Encoder(cache))


@dataclass(frozen=True)
class Encoder:
    """prompts -> (n, D) unit float64 text vectors through ``cache``: cached prompts are read, the others encoded
    with its model and added (``Cache.prompt_vectors`` with a ``TextEncoder``). Pickles as the cache's path."""
    cache: Cache

    def __call__(self, prompts) -> np.ndarray:
        return l2_normalize(self.cache.prompt_vectors(list(prompts), TextEncoder(self.cache)).astype(np.float64))


def cache_templates(emb: Embeddings) -> dict:
    """The prompt templates for ``emb``: the prompt set chosen at extraction (``extract --prompts FILE``, recorded in
    the cache), else its dataset's (``templates.templates_for``). A cache of a registered dataset
    made before the registry holds the former defaults ("a infograph", "a photo of a Alarm Clock"): when it lacks
    the registry's prompts and its model cannot be loaded here to encode them, those stored forms are used, with a
    warning (a prompt default is part of the cache format)."""
    if emb.cache is not None and (chosen := emb.cache.templates()) is not None:
        return chosen   # the prompt set chosen at extraction (`extract --prompts FILE`)
    templates = templates_for(emb.domains, emb.classes)
    entry = match(emb.domains, emb.classes)
    if entry is None or entry.name == "PACS" or emb.cache is None:
        return templates
    held = emb.cache.prompts
    if all(domain_prompt(d, templates) in held for d in emb.domains):
        return templates
    old = legacy_templates()
    if not all(domain_prompt(d, old) in held for d in emb.domains) or _encodable(emb.cache):
        return templates
    warnings.warn(f"{emb.cache}: this {entry.name} cache holds the prompts of pacs_embed's former defaults (e.g. "
                  f"{domain_prompt(emb.domains[0], old)!r}), not the dataset's ({domain_prompt(emb.domains[0], templates)!r}), "
                  f"and its model cannot be loaded here to encode those; the stored forms are used. Encode the new ones "
                  f"where the model is (`pacs-embed prompts CACHE ...`) to use them.", stacklevel=3)
    return old


def _encodable(cache: Cache) -> bool:
    """Whether the cache's own text tower can be found on this machine (nothing is downloaded)."""
    from ..text_encoder import _spec_for
    try:
        _spec_for(cache, None, local_only=True)
        return True
    except PacsEmbedError:
        return False


def cached_prompts(emb: Embeddings) -> list[str]:
    """Every prompt the cache of ``emb`` holds (those of extraction and those added since), in order.

    Usage: ``pa.cached_prompts(emb)``; from the shell, ``pacs-embed prompts CACHE --list``."""
    return list(check_cache_path(emb, "cached_prompts").prompts)


def described(text: TextSide, description: str = "paper"):
    """A table of which prompts describe each domain under ``description`` (one row per domain), as the text side uses them."""
    import pandas as pd
    return pd.DataFrame([{"domain": d.domain, "prompts": " | ".join(d.prompts[:6]) + (f" ... ({len(d.prompts)})"
                                                                                      if len(d.prompts) > 6 else "")}
                         for d in text.descriptions[description]]).set_index("domain")


def preload_text_tower(emb: Embeddings):
    """Load ``emb``'s text tower in a background thread (returned), so the first prompt edit of a session
    does not wait for torch, transformers and the weights — in a notebook, once no cell is running; see
    ``pacs_embed.prompts.preload_text_tower``.

    Usage: ``pa.preload_text_tower(emb)`` right after ``pa.load``.
    """
    return _preload_text_tower(check_cache_path(emb, "preload_text_tower"))
