"""The dataset registry, as data (``data/datasets.json``): one entry per dataset (PACS and DomainBed's VLCS,
OfficeHome, TerraIncognita, DomainNet) — domain folders in display order with their published image counts, class
folders with readable forms, what the domains are (and so what a domain prompt can mean there), its prompt templates
(``templates.py`` speaks them) and its citation. A cache is matched to its entry by its domain and class folder names,
in any of their common spellings.

Usage::

    entry = match(["photo", "art_painting", "cartoon", "sketch"], ["dog", ...])   # DatasetEntry or None
    registry()["DomainNet"].n_images
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources


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
