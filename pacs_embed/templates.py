"""Prompt templates and the prompts they make: pure text, no model.

A dataset's templates come from its registry entry (``registry.py``, ``data/datasets.json``) — a prompt per domain,
ensembles of phrasings, and generic nouns that name none of the dataset's classes; a dataset the registry does not
know gets the generic templates: "a {domain folder}" and "a photo of a {class}", as before the registry — the prompts
such caches hold. A ``--prompts`` file replaces them (``load_templates``).

Usage::

    entry = match(["photo", "art_painting", "cartoon", "sketch"], ["dog", ...])   # DatasetEntry or None
    t = templates_for(domains, classes)           # the entry's templates, or the generic ones
    domain_prompt("cartoon", t), class_prompts(["alarm_clock"], t)
"""
from __future__ import annotations

import json
from pathlib import Path
from .errors import ArgumentError
from .registry import match, registry

LAYOUT = "see the templates of any entry in pacs_embed/data/datasets.json for the layout"


GENERIC = {"class_template": "a photo of a {class}", "domain_class_template": "{domain} of a {class}",
           "domains": {}, "ensembles": {}}


def templates_for(domains, classes) -> dict:
    """The prompt templates for a cache with these domains and classes: its registry entry's, or the generic ones
    (domain prompts "a {domain}", and PACS's generic nouns less any that is one of these classes)."""
    entry = match(domains, classes)
    if entry is not None:
        return entry.templates
    taken = {readable(c).lower() for c in classes}
    nouns = [n for n in registry()["PACS"].templates["nouns"] if n not in taken and f"{n}s" not in taken]
    return {**GENERIC, "nouns": nouns}


def load_templates(file=None) -> dict:
    """The prompt templates in ``file`` (JSON: domains, class_template, domain_class_template, ensembles, nouns,
    optionally readable), or PACS's."""
    if file is None:
        return registry()["PACS"].templates
    try:
        templates = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArgumentError(f"prompt file {str(file)!r}: {e}") from e
    problem = _template_problem(templates)
    if problem:
        raise ArgumentError(f"prompt file {str(file)!r}: {problem} ({LAYOUT})")
    return templates


def _template_problem(t) -> str | None:
    """What is wrong with a templates dict, or None."""
    def strings(v):
        return isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v)
    if not isinstance(t, dict):
        return f"expected a JSON object, got {type(t).__name__}"
    if not (isinstance(t.get("domains", {}), dict) and all(isinstance(v, str) and v.strip()
                                                           for v in t.get("domains", {}).values())):
        return '"domains" must map domain folder names to prompts'
    if "{class}" not in str(t.get("class_template", "{class}")):
        return '"class_template" must contain {class}'
    dct = str(t.get("domain_class_template", "{domain} {class}"))
    if "{domain}" not in dct or "{class}" not in dct:
        return '"domain_class_template" must contain {domain} and {class}'
    if not (isinstance(t.get("ensembles", {}), dict) and all(strings(v) for v in t.get("ensembles", {}).values())):
        return '"ensembles" must map domain folder names to lists of prompts'
    if not strings(t.get("nouns", [])):
        return '"nouns" must be a list of words'
    if not (isinstance(t.get("readable", {}), dict) and all(isinstance(v, str) and v.strip()
                                                            for v in t.get("readable", {}).values())):
        return '"readable" must map class folder names to words'
    return None


def readable(name: str, templates: dict | None = None) -> str:
    """A folder name as words: the templates' ``readable`` form, else underscores as spaces."""
    return ((templates or {}).get("readable") or {}).get(name) or name.replace("_", " ")


def domain_prompt(domain: str, templates: dict | None = None) -> str:
    """The templates' prompt for a domain folder name, else 'a <domain name>'."""
    templates = load_templates() if templates is None else templates
    return templates.get("domains", {}).get(domain) or f"a {readable(domain)}"


def class_prompts(classes, templates=None) -> list[str]:
    templates = load_templates() if templates is None else templates
    template = templates.get("class_template", "a photo of a {class}")
    return [template.replace("{class}", readable(c, templates)) for c in classes]


def domain_class_prompts(domain_text: str, classes, templates=None) -> list[str]:
    """'{domain text} of a {class}' (the templates' ``domain_class_template``) for each class or noun."""
    templates = load_templates() if templates is None else templates
    template = templates.get("domain_class_template", "{domain} of a {class}")
    return [template.replace("{domain}", domain_text).replace("{class}", readable(c, templates)) for c in classes]


def default_prompts(domains, classes, templates=None) -> list[str]:
    """What extraction encodes: domain prompts, class prompts, domain x class prompts (no duplicates)."""
    templates = templates_for(domains, classes) if templates is None else templates
    out = [domain_prompt(d, templates) for d in domains] + class_prompts(classes, templates)
    for d in domains:
        out += domain_class_prompts(domain_prompt(d, templates), classes, templates)
    return list(dict.fromkeys(out))


def legacy_templates() -> dict:
    """The templates every dataset but PACS had before the registry (PACS's, whose domain prompts fall back to
    "a {folder}"): the prompts caches made then hold."""
    return {**registry()["PACS"].templates, "domains": {}, "ensembles": {}, "readable": {}}
