"""The dataset registry: one consistent entry per DomainBed dataset and PACS, recognised from a cache's names."""
import re

import pytest

from pacs_embed.cache import Cache
from pacs_embed.synthetic import make_store
from pacs_embed.registry import match, registry
from pacs_embed.templates import class_prompts, default_prompts, domain_prompt, legacy_templates, readable, templates_for

# DomainBed (Gulrajani & Lopez-Paz, ICLR 2021): images per dataset, and classes
PUBLISHED = {"PACS": (9_991, 7, 4), "VLCS": (10_729, 5, 4), "OfficeHome": (15_588, 65, 4),
             "TerraIncognita": (24_788, 10, 4), "DomainNet": (586_575, 345, 6)}


def test_every_domainbed_dataset_and_pacs_has_an_entry_with_its_published_counts():
    assert set(registry()) == set(PUBLISHED)
    for name, (images, n_classes, n_domains) in PUBLISHED.items():
        e = registry()[name]
        assert (e.n_images, len(e.classes), len(e.domains)) == (images, n_classes, n_domains), name
        assert len(set(e.classes)) == len(e.classes) and e.citation and e.counts_source and e.about


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_each_entry_describes_every_domain_and_reads_every_class(name):
    e = registry()[name]
    t = e.templates
    assert set(t["domains"]) == set(e.domains), "a prompt per domain, written for what the domain is"
    assert set(t["ensembles"]) <= set(e.domains) and all(len(v) >= 2 for v in t["ensembles"].values())
    for c in e.classes:
        words = readable(c, t)
        assert "_" not in words and words.strip() == words and words
    assert all("_" not in p for p in class_prompts(e.classes, t))


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_no_generic_noun_is_a_class_or_a_class_synonym_of_its_dataset(name):
    e = registry()[name]
    nouns = e.templates["nouns"]
    assert len(nouns) >= 50 and len(set(nouns)) == len(nouns)
    taken = set()
    for c in e.classes:
        words = readable(c, e.templates).lower()
        taken |= {words, words.rstrip("s"), c.lower()} | set(re.split(r"[ -]", words)) if " " in words else {words, words.rstrip("s"), c.lower()}
        taken |= {s.lower() for s in e.synonyms.get(c, [])}
    clash = sorted(n for n in nouns if n in taken or n.rstrip("s") in taken or f"{n}s" in taken)
    assert not clash, f"{name}: nouns that name a class: {clash}"


def test_the_class_free_nouns_of_the_old_pacs_list_are_kept_for_pacs():
    """PACS works exactly as before: its prompts and nouns are those the notebooks recorded values with."""
    t = registry()["PACS"].templates
    assert [domain_prompt(d, t) for d in ("photo", "art_painting", "cartoon", "sketch")] == [
        "a photo", "an art painting", "a cartoon", "a black and white drawing"]
    assert t["nouns"][:3] == ["goose", "goldfish", "chair"] and len(t["nouns"]) == 100


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_a_cache_is_matched_to_its_entry_and_info_says_how_many_images_it_holds(tmp_path, name):
    e = registry()[name]
    assert match(list(e.domains), e.classes) is e
    store = make_store(tmp_path / f"{name}.h5", name, scale=0.002, dim=8, prompts="none")   # in memory: no file
    with Cache.open(store) as cache:
        line = cache.dataset()
    assert line.startswith(f"{name}: ") and f"of {e.n_images:,} images" in line


def test_an_unknown_dataset_keeps_the_generic_prompts_and_drops_nouns_that_are_its_classes():
    t = templates_for(["day", "night"], ["chair", "lamp", "zebra"])
    assert match(["day", "night"], ["chair"]) is None
    assert domain_prompt("night", t) == "a night" and class_prompts(["chair"], t) == ["a photo of a chair"]
    assert "chair" not in t["nouns"] and "lamp" not in t["nouns"] and "goose" in t["nouns"]


def test_the_former_defaults_stay_readable_for_caches_that_hold_them():
    old = legacy_templates()
    assert domain_prompt("infograph", old) == "a infograph" and class_prompts(["Alarm_Clock"], old) == [
        "a photo of a Alarm Clock"]


def test_a_registered_datasets_cache_with_the_former_default_prompts_and_no_model_uses_them_with_a_warning(tmp_path):
    import warnings
    import numpy as np
    from pacs_embed import analysis as pa
    from pacs_embed.datasets import Record
    from pacs_embed.storage import MemoryStore
    made = make_store(tmp_path / "new.h5", "OfficeHome", scale=0.005, dim=8, prompts="none")
    with Cache.open(made) as c:
        ix, x, attrs, domains, classes = c.index, c.image_vectors(), dict(c.attrs), c.domains, c.classes
    texts = default_prompts(domains, classes, legacy_templates())   # what caches made before the registry hold
    records = [Record(p, int(d), int(k), 0, 0, h) for p, d, k, h in zip(ix["path"], ix["domain"], ix["label"], ix["sha256"])]
    old = MemoryStore(tmp_path / "old.h5", attrs, domains, classes, records, x, ix["ok"], [], texts,
                      np.random.default_rng(0).standard_normal((len(texts), 8)).astype(np.float32))
    emb = pa.load(old)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        rows = pa.table1(emb)["reproduced"].index.tolist()
    assert rows == ["a Art", "a Clipart", "a Product", "a Real World"]
    assert any("former defaults" in str(w.message) for w in said)


@pytest.mark.parametrize("real_world", ["Real World", "Real_World", "RealWorld", "real_world"])
def test_a_dataset_s_common_folder_spellings_are_recognised_and_spoken_back_in_the_cache_s_own(real_world):
    from pacs_embed.templates import domain_prompt, templates_for
    from pacs_embed.registry import match
    domains = ["Art", "Clipart", "Product", real_world]
    classes = ["Alarm_Clock", "Backpack"] if real_world != "real_world" else ["alarm_clock", "backpack"]
    entry = match(domains, classes)
    assert entry is not None and entry.name == "OfficeHome"
    assert list(entry.domains)[-1] == real_world and entry.order(domains)[-1] == real_world
    t = templates_for(domains, classes)
    assert domain_prompt(real_world, t) == domain_prompt("Real World", registry()["OfficeHome"].templates)
    assert match(["Art", "Clipart", "Product", "Real Worlds"], classes) is None      # not a spelling: another name
