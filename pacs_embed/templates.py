"""Datasets and their prompt templates, as data (``data/datasets.json``): pure text, no model.

The registry holds one entry per dataset (PACS and DomainBed's VLCS, OfficeHome, TerraIncognita, DomainNet):
domain folders in display order with their published image counts, class folders with readable forms, what the
domains are (and so what a domain prompt can mean there), and the prompt templates — a prompt per domain,
ensembles of phrasings, and generic nouns that name none of the dataset's classes. A cache is matched to its entry
by its domain and class folder names (``match``); a dataset the registry does not know gets the generic templates:
"a {domain folder}" and "a photo of a {class}", as before the registry — the prompts such caches hold.

Usage::

    entry = match(["photo", "art_painting", "cartoon", "sketch"], ["dog", ...])   # DatasetEntry or None
    t = templates_for(domains, classes)           # the entry's templates, or the generic ones
    domain_prompt("cartoon", t), class_prompts(["alarm_clock"], t)
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from .errors import ArgumentError

LAYOUT = "see the templates of any entry in pacs_embed/data/datasets.json for the layout"


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the registry."""
    name: str
    domains: dict            # folder -> published image count, in display order
    classes: list
    templates: dict          # domains, class_template, domain_class_template, ensembles, nouns (+ readable)
    about: str = ""          # what the domains are: what a description can and cannot mean there
    citation: str = ""
    counts_source: str = ""
    domain_names: dict = field(default_factory=dict)
    synonyms: dict = field(default_factory=dict)   # class -> other words for it (no noun may be one)

    @property
    def n_images(self) -> int:
        return sum(self.domains.values())

    def order(self, domains) -> list[str]:
        """``domains`` in the entry's display order (any it does not know after, as given)."""
        domains = list(domains)
        return [d for d in self.domains if d in domains] + [d for d in domains if d not in self.domains]

    def coverage(self, counts: dict) -> str:
        """'OfficeHome: 15,588 of 15,588 images', or what differs, for a cache's {domain: images}."""
        have = sum(counts.values())
        line = f"{self.name}: {have:,} of {self.n_images:,} images"
        differs = [f"{d} {counts.get(d, 0):,} of {n:,}" for d, n in self.domains.items() if counts.get(d, 0) != n]
        extra = [d for d in counts if d not in self.domains]
        if differs:
            line += " (" + ", ".join(differs) + ")"
        if extra:
            line += f"; domains not in {self.name}: {extra}"
        return line


@lru_cache(maxsize=1)
def registry() -> dict[str, DatasetEntry]:
    """name -> DatasetEntry for every dataset the package knows."""
    data = json.loads(resources.files("pacs_embed").joinpath("data/datasets.json").read_text())
    out = {}
    for name, e in data["datasets"].items():
        templates = {**e["templates"], "readable": e.get("readable", {})}
        out[name] = DatasetEntry(name, e["domains"], e["classes"], templates, e.get("about", ""), e.get("citation", ""),
                                 e.get("counts_source", ""), e.get("domain_names", {}), e.get("synonyms", {}))
    return out


def spelling(name: str) -> str:
    """A folder name as matched against the registry: letters and digits only, lower case — so that the common
    spellings of one folder ("Real World", "Real_World", "RealWorld", "real_world") are one name."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def match(domains, classes) -> DatasetEntry | None:
    """The registry entry of a cache with these domain and class folders: the one that has every one of them, in any
    of their common spellings (``spelling``) — a sample such as pacs-mini, or a cache of some of a dataset's domains,
    is still that dataset — else None. The entry is returned in the cache's own spellings (its domain and class
    names, prompt and ensemble keys renamed), so that everything downstream speaks the cache's names."""
    domains, classes = list(domains), list(classes)
    if not domains or not classes:
        return None
    for entry in registry().values():
        dkeys = {spelling(d): d for d in entry.domains}
        ckeys = {spelling(c): c for c in entry.classes}
        if all(spelling(d) in dkeys for d in domains) and all(spelling(c) in ckeys for c in classes):
            renamed = {dkeys[spelling(d)]: d for d in domains} | {ckeys[spelling(c)]: c for c in classes}
            return entry if all(k == v for k, v in renamed.items()) else _renamed(entry, renamed)
    return None


def _renamed(entry: DatasetEntry, names: dict) -> DatasetEntry:
    """``entry`` with its folder names spelled as ``names`` maps them (the cache's own spellings)."""
    def keys(d: dict) -> dict:
        return {names.get(k, k): v for k, v in d.items()}
    templates = dict(entry.templates)
    for key in ("domains", "ensembles", "readable"):
        if isinstance(templates.get(key), dict):
            templates[key] = keys(templates[key])
    return replace(entry, domains=keys(entry.domains), classes=[names.get(c, c) for c in entry.classes],
                   templates=templates, domain_names=keys(entry.domain_names), synonyms=keys(entry.synonyms))


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
