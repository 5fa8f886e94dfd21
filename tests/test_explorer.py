"""The live explorer: an edit of a description re-scores every test-time operator on every target — the numbers
``evaluate`` gives for that description — from products kept across edits; heads trained on descriptions wait
for a refit, said; the panel is driven by its own callbacks."""
import numpy as np
import pytest

from pacs_embed import analysis as pa

METHODS = ["none", "translate", "translate_calibrated", "interpolate", "gap_shift", "zeroshot", "augment",
           "project_out"]


def evaluated(emb, prompts, source, seeds, methods):
    res = pa.evaluate(emb, methods, seeds=seeds, domain_prompts=prompts, sources=[source], head_cache=False,
                      progress=False)
    t = res.table[(res.table.source == source) & (res.table.target != source) & res.table.method.isin(methods)]
    return t.groupby(["method", "target"]).accuracy.mean().unstack()


@pytest.fixture
def emb(cache_copy):
    return pa.load(cache_copy)


def test_an_edit_gives_what_evaluate_gives_for_that_description_and_trained_heads_wait_for_a_refit(emb):
    ex = pa.explore(emb, source="photo", seeds=[0, 1], methods=METHODS, head_cache=False)
    first = ex.last
    assert set(first.accuracy.index) == set(METHODS) and "photo" not in first.accuracy.columns
    want = evaluated(emb, ex.prompts, "photo", [0, 1], METHODS)
    assert np.allclose(first.accuracy.loc[METHODS].values, want.loc[METHODS, first.accuracy.columns].values)
    assert ex.trained == {"augment", "project_out"} and ex.reads == set() and first.stale == []

    products = len(ex.products)
    edit = ex.apply(cartoon="a comic strip")
    assert len(ex.products) == products                        # no new x·W: the kept products served the edit
    assert edit.prompts["cartoon"] == "a comic strip" and edit.stale == ["augment", "project_out"]
    live = [m for m in METHODS if m not in ex.trained]
    want = evaluated(emb, edit.prompts, "photo", [0, 1], live)
    assert np.allclose(edit.accuracy.loc[live].values, want.loc[live, edit.accuracy.columns].values)
    assert edit.accuracy.loc["augment"].equals(first.accuracy.loc["augment"])       # kept, marked out of date
    assert np.allclose(edit.change.values, (edit.accuracy - first.accuracy).values)
    assert "(out of date)" in " ".join(edit.table().index)

    again = ex.refit()
    want = evaluated(emb, edit.prompts, "photo", [0, 1], METHODS)
    assert again.stale == [] and np.allclose(again.accuracy.loc[METHODS].values,
                                             want.loc[METHODS, again.accuracy.columns].values)


def test_the_similarity_rows_are_table_1_s_measure_for_the_typed_descriptions(emb, cache_copy):
    ex = pa.explore(cache_copy, methods=["none"], head_cache=False)          # a cache's path loads it
    edit = ex.apply(sketch="a pencil sketch")
    from pacs_embed.analysis.similarity import similarity_matrix
    sim = similarity_matrix(ex.text.vectors("paper"), emb.x, emb.domain, len(emb.domains))   # (described, images)
    i, j = emb.domains.index("sketch"), emb.domains.index("art_painting")
    assert edit.similarity.loc["sketch", "art_painting"] == pytest.approx(sim[i, j], abs=1e-6)
    assert edit.similarity.shape == (4, 4)


def test_the_panel_applies_a_typed_prompt_a_preset_and_another_source(emb):
    ex = pa.explore(emb, methods=["none", "translate"], head_cache=False)
    panel = ex.widget()
    c = panel.controls
    c["boxes"]["cartoon"].value = "a comic strip"               # what pressing Enter does
    assert ex.prompts["cartoon"] == "a comic strip" and "comic" not in c["results"].value  # results, not prompts
    assert "applied in" in c["results"].value and "translate" in c["results"].value
    c["preset"].value = "ensemble"
    assert isinstance(ex.prompts["cartoon"], list) and " | " in c["boxes"]["cartoon"].value
    c["source"].value = "sketch"
    assert ex.source == "sketch" and "sketch" not in ex.last.accuracy.columns
    with pytest.raises(KeyError, match="no domain 'cartoonz'"):
        ex.apply(cartoonz="x")


def test_a_method_that_reads_description_of_a_class_prompts_waits_for_a_refit_which_encodes_them(emb):
    """zeroshot_domain reads "{description} of a {class}" for every class: a new description would be a text-tower
    pass over every class (25 s at DomainNet size), so it waits, said, until refit."""
    ex = pa.explore(emb, methods=["none", "translate", "zeroshot_domain"], head_cache=False)
    assert ex.reads == {"zeroshot_domain"} and ex.trained == set()
    edit = ex.apply(cartoon="a comic strip")
    assert edit.stale == ["zeroshot_domain"]
    again = ex.refit()
    want = evaluated(emb, edit.prompts, ex.source, [0], ["zeroshot_domain"])
    assert again.stale == [] and np.allclose(again.accuracy.loc[["zeroshot_domain"]].values,
                                             want.loc[["zeroshot_domain"], again.accuracy.columns].values)
