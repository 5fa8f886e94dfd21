"""A wrong argument to the analysis is an error that names it (not a failure deep inside, nor a silent surprise)."""
import pytest

from pacs_embed import analysis as pa
from test_analysis import synthetic


@pytest.fixture(scope="module")
def world():
    return synthetic(n_per=5)


@pytest.mark.parametrize("kwargs, error, says", [
    (dict(seeds=0), ValueError, r"seeds=0: give a number of seeds, 1 or more"),
    (dict(seeds=[]), ValueError, "seeds is empty"),
    (dict(seeds=[0, 0]), ValueError, "repeat a seed"),
    (dict(seeds=[0.5]), TypeError, "seeds must be integers"),
    (dict(Cs=[]), ValueError, "Cs must be one or more positive numbers"),
    (dict(Cs=[1.0, -1.0]), ValueError, "Cs must be one or more positive numbers"),
    (dict(methods=["translate", 3]), TypeError, "methods must be a name or a list of names"),
    (dict(methods=["translat"]), KeyError, "unknown method 'translat'"),
    (dict(descriptions=["papr"]), KeyError, "no description"),
    (dict(sources=["d9"]), KeyError, r"unknown source domain\(s\) \['d9'\]"),
    (dict(methods=[]), ValueError, "methods is empty: name at least one"),   # not quietly every method
    (dict(sources=[]), ValueError, "sources is empty"),
    (dict(descriptions=[]), ValueError, "descriptions is empty"),
    (dict(sources=["d0", "d1", "d0"]), ValueError, r"sources \['d0', 'd1', 'd0'\] repeat \['d0'\]"),   # not rows twice
    (dict(methods=["none", "none"]), ValueError, "methods .* repeat"),
    (dict(solver="lbfgs"), ValueError, r"solver 'lbfgs': choose one of \('fast', 'torch', 'sklearn', 'auto'\)"),   # not quietly 'fast'
])
def test_a_wrong_evaluate_argument_is_named(world, kwargs, error, says):
    emb, text = world
    with pytest.raises(error, match=says):
        pa.evaluate(emb, **{"methods": ["none"], "seeds": [0], "text": text, "progress": False, **kwargs})


def test_one_name_where_a_list_is_expected_is_that_one_name(world):
    emb, text = world
    res = pa.evaluate(emb, "translate", seeds=[0], descriptions="paper", sources="d0", text=text, progress=False)
    assert set(res.table.method) == {"translate", "in_domain"} and set(res.table.source) == {"d0"}


@pytest.mark.parametrize("kwargs, error, says", [
    (dict(domain_prompts="a comic strip"), TypeError, "domain_prompts must be a dict"),
    (dict(domain_prompts={"cartoon": 3}), ValueError, r"domain_prompts\['cartoon'\] must be a prompt .* not 3"),
    (dict(domain_prompts={"cartoon": ["a comic", " "]}), ValueError, "non-empty list of prompts"),
    (dict(domain_prompts={"comics": "a comic"}), KeyError, "names domain 'comics'"),
    (dict(descriptions=["nouns"], n_nouns=0), ValueError, "n_nouns must be a positive number"),
])
def test_a_wrong_text_argument_is_named_before_anything_is_encoded(cache_copy, kwargs, error, says):
    emb = pa.load(cache_copy)
    with pytest.raises(error, match=says):
        pa.text_side(emb, **{"descriptions": ["paper"], **kwargs})


def test_the_nouns_description_without_nouns_is_named_and_more_nouns_than_held_is_said(cache_copy):
    emb, templates = pa.load(cache_copy), pa.load_templates()
    with pytest.raises(ValueError, match="'nouns' description averages over generic nouns, and the prompt templates hold none"):
        pa.text_side(emb, ["paper", "nouns"], templates={**templates, "nouns": []})
    assert pa.text_side(emb, ["paper"], templates={**templates, "nouns": []}).descriptions["paper"]   # not needed there
    few = {**templates, "nouns": templates["nouns"][:3]}
    with pytest.warns(UserWarning, match="n_nouns=5, but the prompt templates hold 3 nouns"):
        text = pa.text_side(emb, ["nouns"], n_nouns=5, templates=few)
    assert len(text.descriptions["nouns"][0].prompts) == 3


def test_a_bootstrap_of_no_resamples_is_refused(world):
    emb, text = world
    res = pa.evaluate(emb, ["none", "translate"], seeds=[0, 1], text=text, progress=False)
    with pytest.raises(ValueError, match="n_boot must be a whole number, 1 or more, not 0"):
        pa.gains(res, n_boot=0)


@pytest.fixture(scope="module")
def evaluated(world):
    emb, text = world
    return pa.evaluate(emb, ["none", "translate"], seeds=[0, 1], text=text, progress=False)


@pytest.mark.parametrize("call, says", [
    (lambda emb, text, res: pa.evaluate("cache.h5"), r"evaluate takes the loaded embeddings first \(emb = pa.load\('cache.h5'\)"),
    (lambda emb, text, res: pa.table1("cache.h5"), "table1 takes the loaded embeddings"),
    (lambda emb, text, res: pa.text_side("cache.h5"), "text_side takes the loaded embeddings"),
    (lambda emb, text, res: pa.prompt_similarity("cache.h5", ["a photo"]), "prompt_similarity takes the loaded embeddings"),
    (lambda emb, text, res: pa.description_similarity(emb, "paper"), "description_similarity takes a text side"),
    (lambda emb, text, res: pa.paper_comparison("cache.h5"), "paper_comparison takes the loaded embeddings"),
    (lambda emb, text, res: pa.gains(res.table), r"gains takes the Results of evaluate .* gains\(res\)"),
    (lambda emb, text, res: pa.method_means(res), r"method_means takes the results table, res.table"),
    (lambda emb, text, res: pa.summary(res), r"summary takes the results table, res.table"),
    (lambda emb, text, res: pa.grid(res, "none"), r"grid takes the results table, res.table"),
    (lambda emb, text, res: pa.summary(pa.gains(res)), "summary takes a results table .* with columns"),
    (lambda emb, text, res: pa.plots.accuracy_grid(res), "accuracy_grid takes the results table"),
    (lambda emb, text, res: pa.plots.gains_plot(res.table), r"gains_plot takes the gains table, pa.gains\(res\)"),
    (lambda emb, text, res: pa.plots.table1_heatmap(emb), r"table1_heatmap takes the tables of pa.table1\(emb\)"),
    (lambda emb, text, res: pa.plots.projection("cache.h5", text.vectors("paper")), "projection takes the loaded embeddings"),
    (lambda emb, text, res: pa.load(emb), "already loaded: load and report take the cache path"),
    (lambda emb, text, res: pa.plots.projection(emb, text), r"not the text side"),
])
def test_passing_one_kind_of_thing_for_another_says_what_to_pass(world, evaluated, call, says):
    emb, text = world
    with pytest.raises(TypeError, match=says):
        call(emb, text, evaluated)


def test_a_grid_of_a_method_or_description_that_did_not_run_is_named_not_empty(world):
    emb, text = world
    v = text.vectors("paper")
    two = pa.TextSide.from_vectors({"paper": v, "other": v[::-1]}, text.class_vectors, domains=emb.domains)
    table = pa.evaluate(emb, ["none", "translate"], seeds=[0, 1], text=two, progress=False).table
    assert pa.grid(table, "none").shape == (len(emb.domains),) * 2
    with pytest.raises(ValueError, match=r"'translate' ran under descriptions \['paper', 'other'\]; name one"):
        pa.grid(table, "translate")
    assert pa.grid(table, "translate", "other").shape == (len(emb.domains),) * 2
    with pytest.raises(ValueError, match="'translate' did not run under description 'nouns'"):
        pa.grid(table, "translate", "nouns")
    with pytest.raises(ValueError, match="method 'augment' is not in the table"):
        pa.grid(table, "augment")
    with pytest.raises(ValueError, match="accuracy_grid: no results under description 'nouns'"):
        pa.plots.accuracy_grid(table, "nouns")
    with pytest.raises(ValueError, match=r"accuracy_grid: method\(s\) \['augment'\] are not in the table"):
        pa.plots.accuracy_grid(table, "paper", methods=["augment"])
    with pytest.raises(ValueError, match="gains_plot: no gains under description 'nouns'"):
        pa.plots.gains_plot(pa.gains(pa.evaluate(emb, ["none", "translate"], seeds=[0, 1], text=two, progress=False),
                                     n_boot=10), "nouns")


@pytest.mark.parametrize("args, says", [
    (lambda text: dict(domain_text=text.vectors("paper")[:1]), r"one 64-dimensional vector per domain \(4, .*\(1, 64\)"),
    (lambda text: dict(domain_text=text.vectors("paper")[:, :5]), r"got shape \(4, 5\)"),
    (lambda text: dict(domain_text=text.vectors("paper"), source="d9"), "source 'd9' is not a domain"),
])
def test_a_projection_of_vectors_that_do_not_fit_the_cache_is_named(world, args, says):
    emb, text = world
    with pytest.raises(ValueError, match=says):
        pa.plots.projection(emb, **args(text))


@pytest.mark.parametrize("change, says", [
    (lambda e: dict(label=e.label[:-1]), "one label, domain and path per row"),
    (lambda e: dict(domain=e.domain + 1), r"domain indices must lie in \[0, 4\)"),
    (lambda e: dict(label=-e.label - 1), "label indices must lie in"),
    (lambda e: dict(paths=["a.jpg"]), "path per row"),
])
def test_embeddings_built_in_memory_must_agree_with_themselves(world, change, says):
    emb, _ = world
    fields = dict(x=emb.x, label=emb.label, domain=emb.domain, domains=emb.domains, classes=emb.classes,
                  paths=emb.paths, cache=None)
    with pytest.raises(ValueError, match=says):
        pa.Embeddings(**{**fields, **change(emb)})
    assert pa.Embeddings(**{**fields, "paths": []}).x is emb.x   # paths are optional


@pytest.mark.parametrize("text_for, says", [
    (lambda v, cv, emb: pa.TextSide.from_vectors({"paper": v[:-1]}, cv), r"describes domains \['domain 0', .*the cache's are"),
    (lambda v, cv, emb: pa.TextSide.from_vectors({"paper": v}, cv, domains=emb.domains[::-1]), "in that order"),
    (lambda v, cv, emb: pa.TextSide.from_vectors({"paper": v}, cv[:-1]), "class vectors have shape"),
    (lambda v, cv, emb: pa.TextSide.from_vectors({"paper": v[:, :5]}, cv), r"vectors of \['domain 0', .* not 64-dimensional"),
])
def test_a_text_side_that_does_not_describe_the_cache_is_named(world, text_for, says):
    emb, text = world
    with pytest.raises(ValueError, match=f"evaluate: the text side's .*{says}"):
        pa.evaluate(emb, ["none"], seeds=[0], text=text_for(text.vectors("paper"), text.class_vectors, emb),
                    progress=False)


def test_a_text_side_with_unnamed_domains_takes_the_caches_names(world):
    emb, text = world   # augment leaves the source's own description out by name: unnamed, it would not
    unnamed = pa.TextSide.from_vectors({"paper": text.vectors("paper")}, text.class_vectors)
    kw = dict(seeds=[0], head_cache=False, progress=False)
    a, b = (pa.evaluate(emb, ["augment"], text=t, **kw).table for t in (unnamed, text))
    assert a.equals(b)


def test_embeddings_built_in_memory_need_their_text_side_given_as_vectors(world):
    emb, text = world   # synthetic: no cache behind them
    assert emb.cache is None
    for call in (lambda: pa.evaluate(emb, ["none"], seeds=[0], progress=False), lambda: pa.text_side(emb),
                 lambda: pa.prompt_similarity(emb, ["a photo"]), lambda: pa.table1(emb)):
        with pytest.raises(ValueError, match=r"built in memory, with no cache .* pa.TextSide.from_vectors"):
            call()
    assert len(pa.evaluate(emb, ["none"], seeds=[0], text=text, progress=False).table)


def test_a_results_table_read_back_from_csv_is_a_results_table(evaluated, tmp_path):
    import pandas as pd
    evaluated.table.to_csv(tmp_path / "results.csv", index=False)
    back = pd.read_csv(tmp_path / "results.csv")
    assert pa.method_means(back)["mean"].tolist() == pytest.approx(pa.method_means(evaluated.table)["mean"].tolist())
