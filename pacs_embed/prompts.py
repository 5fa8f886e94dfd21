"""Prompt sets (kept as data in ``data/prompts.json``) and lazy prompt encoding through the cache.

Usage::

    vectors = prompt_embeddings(cache_path, ["a photo", "a watercolor"])   # (2, D) float32, raw
"""
from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np

from . import cache as _cache
from .models import ModelSpec, encode_text, load_text_tower, resolve


def load_prompt_set(file=None) -> dict:
    """The prompt set in ``file`` (JSON), or the packaged PACS one."""
    if file is None:
        return json.loads(resources.files("pacs_embed").joinpath("data/prompts.json").read_text())
    try:
        return json.loads(Path(file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"prompt file {str(file)!r}: {e}") from e


def readable(name: str) -> str:
    return name.replace("_", " ")


def domain_prompt(domain: str, prompt_set: dict | None = None) -> str:
    """The set's prompt for a domain folder name, else 'a <domain name>'."""
    prompt_set = prompt_set or load_prompt_set()
    return prompt_set.get("domains", {}).get(domain) or f"a {readable(domain)}"


def class_prompts(classes, prompt_set=None) -> list[str]:
    template = (prompt_set or load_prompt_set()).get("class_template", "a photo of a {class}")
    return [template.replace("{class}", readable(c)) for c in classes]


def _of(prompt_set: dict, domain_text: str, thing: str) -> str:
    template = prompt_set.get("domain_class_template", "{domain} of a {class}")
    return template.replace("{domain}", domain_text).replace("{class}", readable(thing))


def domain_class_prompts(domain: str, classes, prompt_set=None) -> list[str]:
    prompt_set = prompt_set or load_prompt_set()
    return [_of(prompt_set, domain_prompt(domain, prompt_set), c) for c in classes]


def noun_prompts(domain: str, prompt_set=None, n: int | None = None) -> list[str]:
    """'{domain prompt} of a {noun}' for the set's first ``n`` generic nouns (class-averaged domains)."""
    prompt_set = prompt_set or load_prompt_set()
    nouns = prompt_set.get("nouns", [])[:n]
    return domain_class_prompts(domain, nouns, prompt_set)


def default_prompts(domains, classes, prompt_set=None) -> list[str]:
    """What extraction encodes: domain prompts, class prompts, domain x class prompts (no duplicates)."""
    prompt_set = prompt_set or load_prompt_set()
    out = [domain_prompt(d, prompt_set) for d in domains] + class_prompts(classes, prompt_set)
    for d in domains:
        out += domain_class_prompts(d, classes, prompt_set)
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=4)
def _text_tower(spec: ModelSpec, device):
    return load_text_tower(spec, device)


def _spec_for(path, model) -> ModelSpec:
    attrs = _cache.read_attrs(path)
    spec = resolve(model or attrs["model_id"], revision=None if model or attrs["revision"].startswith("sha256:")
                   else attrs["revision"])
    if not _cache.same_model(attrs, spec.model_id, spec.revision):
        raise _cache.CacheError(
            f"{str(path)!r} was made with {attrs['model_id']} @ {attrs['revision']}, but the model given resolves "
            f"to {spec.model_id} @ {spec.revision}; embeddings of different models or revisions do not mix.")
    return spec


def check_model(path, model: str | None = None) -> dict:
    """The cache's provenance; raises CacheError if ``model`` (when given) is not the cache's model and revision."""
    if model:
        _spec_for(path, model)
    return _cache.read_attrs(path)


def prompt_embeddings(path, prompts, model: str | None = None, device: str | None = None) -> np.ndarray:
    """Raw embeddings of ``prompts`` in order: cached ones are read, missing ones encoded and appended.

    Parameters: ``path`` an embedding cache; ``model`` (optional) must resolve to the cache's own
    model and revision; ``device`` for the text tower (default: CUDA if present, else CPU).
    Returns a (len(prompts), D) float32 array.
    """
    prompts = list(prompts)
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("prompts must be non-empty strings")
    if not prompts:
        return np.zeros((0, _cache.read_attrs(path)["embed_dim"]), np.float32)
    have = _cache.read_prompts(path)
    missing = [p for p in dict.fromkeys(prompts) if p not in have]
    if missing or model:
        spec = _spec_for(path, model)
    if missing:
        vectors = encode_text(_text_tower(spec, device), missing)
        _cache.append_prompts(path, missing, vectors, spec.model_id, spec.revision)
        have.update(zip(missing, vectors))
    return np.stack([have[p] for p in prompts]).astype(np.float32)


def _paper(domain, prompt_set, n):
    return [domain_prompt(domain, prompt_set)]


def _ensemble(domain, prompt_set, n):
    return prompt_set.get("ensembles", {}).get(domain) or [domain_prompt(domain, prompt_set)]


def _nouns(domain, prompt_set, n):
    return noun_prompts(domain, prompt_set, n)


def _nouns_ensemble(domain, prompt_set, n):
    return [_of(prompt_set, p, noun) for p in _ensemble(domain, prompt_set, n) for noun in prompt_set.get("nouns", [])[:n]]


# How a domain is described in text: name -> f(domain, prompt_set, n_nouns) -> prompts to average.
DOMAIN_PROMPT_SETS = {
    "paper": _paper,                    # the paper's single prompt ("a cartoon")
    "ensemble": _ensemble,              # several phrasings of the domain
    "nouns": _nouns,                    # "{domain prompt} of a {noun}" over N generic nouns (open question 1)
    "nouns_ensemble": _nouns_ensemble,  # every phrasing x every noun
}


def domain_prompt_lists(domains, how: str = "paper", prompt_set=None, n_nouns: int | None = None) -> dict[str, list[str]]:
    """{domain: prompts whose mean embedding describes it}, for ``how`` in DOMAIN_PROMPT_SETS."""
    if how not in DOMAIN_PROMPT_SETS:
        raise KeyError(f"unknown domain prompt set {how!r}; choose from {sorted(DOMAIN_PROMPT_SETS)}")
    prompt_set = prompt_set or load_prompt_set()
    return {d: DOMAIN_PROMPT_SETS[how](d, prompt_set, n_nouns) for d in domains}
