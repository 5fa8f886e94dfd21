"""The maths, on synthetic embeddings whose answer is known."""

import numpy as np
import pytest

from conftest import resign
from pacs_embed.analysis import TextSide, evaluate, fit_head, split
from pacs_embed.analysis.embeddings import Embeddings, l2_normalize
from pacs_embed.analysis.methods import default_methods
from pacs_embed.analysis.similarity import description_similarity, similarity_matrix
from pacs_embed.analysis.stats import gains, method_means, paired_bootstrap, summary

N_CLASSES, N_DOMAINS, DIM = 7, 4, 64


def synthetic(n_per=30, noise=0.03, seed=0):
    """Images = 0.6 class direction + 0.8 domain direction (+ noise); each domain direction leans on one
    class direction, so an untranslated head is fooled. Domain texts = 0.8 domain direction + 0.6 a
    shared text direction (a modality gap): unit vectors whose differences are exactly the image offsets."""
    rng = np.random.default_rng(seed)
    e = np.eye(DIM)
    f = l2_normalize(np.stack([1.2 * e[d] + e[20 + d] for d in range(N_DOMAINS)]))
    t = 0.8 * f + 0.6 * e[DIM - 1]
    x, y, dom = [], [], []
    for d in range(N_DOMAINS):
        for k in range(N_CLASSES):
            x.append(0.6 * e[k] + 0.8 * f[d] + noise * rng.standard_normal((n_per, DIM)))
            y += [k] * n_per
            dom += [d] * n_per
    x = l2_normalize(np.concatenate(x))
    emb = Embeddings(x, np.array(y), np.array(dom), [f"d{i}" for i in range(N_DOMAINS)],
                     [f"c{k}" for k in range(N_CLASSES)], [f"{i}.png" for i in range(len(y))], None)
    text = TextSide.from_vectors({"paper": t}, e[:N_CLASSES], domains=emb.domains)
    return emb, text


@pytest.fixture(scope="module")
def results():
    emb, text = synthetic()
    return evaluate(emb=emb, text=text, seeds=range(3), progress=False)


def test_translation_recovers_in_domain_accuracy_and_no_translation_does_not(results):
    t = results.table
    cross = t[t.source != t.target].groupby("method").accuracy.mean()
    in_domain = t[t.method == "in_domain"].accuracy.mean()
    assert in_domain > 0.98
    assert cross["translate"] > 0.95 and cross["translate_renorm"] > 0.95
    assert cross["none"] < 0.75


def test_every_pair_method_and_seed_is_one_row(results):
    t = results.table
    pairs = N_DOMAINS * (N_DOMAINS - 1)
    assert len(t[t.source != t.target]) == pairs * len(default_methods()) * 3
    assert len(t[t.method == "in_domain"]) == N_DOMAINS * 3
    assert set(t.columns) == {"source", "target", "method", "description", "seed", "accuracy", "n"}
    assert (t[t.source != t.target].n == 7 * 30).all()  # every method on all the target images


def test_similarity_matrix_by_hand():
    text = np.array([[1.0, 0.0], [0.0, 2.0]])            # normalised inside
    images = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 3.0]])
    sim = similarity_matrix(text, images, np.array([0, 0, 1]), 2)
    assert np.allclose(sim, [[0.8, 0.0], [0.4, 1.0]])


def test_table1_is_set_beside_the_papers_only_for_a_cache_of_pacs(cache_copy):
    """pacs-mini has PACS's domains and classes (fewer images: said); a dataset with a domain of the same
    name (DomainNet's sketch) or other classes is not compared with the paper's numbers."""
    import dataclasses
    from pacs_embed import analysis as pa
    emb = pa.load(cache_copy)
    comparable, why = pa.paper_comparison(emb)
    assert comparable and "photo 56 of 1670" in why and "sampling" in why
    assert not pa.table1(emb)["difference"].empty
    other = dataclasses.replace(emb, domains=["clipart", "infograph", "real", "sketch"])
    comparable, why = pa.paper_comparison(other)
    assert not comparable and "'clipart'" in why and "not compared" in why
    tables = pa.table1(other)
    assert tables["paper"].empty and tables["difference"].empty and list(tables["reproduced"].columns) == other.domains
    renamed = dataclasses.replace(emb, classes=[c.upper() for c in emb.classes])
    assert not pa.paper_comparison(renamed)[0]


def test_the_holdout_is_seeded_per_source_and_disjoint():
    a_train, a_out = split(100, seed=0, name="photo")
    assert len(a_out) == 20 and not set(a_train) & set(a_out) and len(a_train) + len(a_out) == 100
    assert np.array_equal(split(100, 0, "photo")[1], a_out)
    assert not np.array_equal(split(100, 1, "photo")[1], a_out)
    assert not np.array_equal(split(100, 0, "sketch")[1], a_out)


def test_regularisation_is_chosen_on_the_holdout():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 10))
    y = (x[:, 0] > 0).astype(int)
    head = fit_head(x, y, *split(200, 0, "s"), Cs=(1e-4, 1.0))
    assert head.C == 1.0 and head.validation[1.0] > head.validation[1e-4]
    assert head.holdout_accuracy == max(head.validation.values())


def test_statistics(results):
    s = summary(results.table)
    spread = ~s.method.isin(["zeroshot", "zeroshot_domain"])      # the others depend on the split
    assert (s.seeds == 3).all() and (s.accuracy.str.contains("±") == spread).all()
    g = gains(results)
    row = g[(g.method == "translate")].iloc[0]
    assert row.ci_low <= row.gain <= row.ci_high and row.gain > 0.2
    assert method_means(results.table).iloc[0]["method"] != "none"


def test_a_gain_interval_never_leaves_the_possible_range():
    from types import SimpleNamespace
    ones, zeros = np.ones(20, bool), np.zeros(20, bool)
    correct = {("a", "b", "none", "-"): np.stack([zeros, ones]),          # two seeds that disagree completely:
               ("a", "b", "translate", "paper"): np.stack([ones, zeros])}   # gains +1 and -1, t with 1 df
    row = gains(SimpleNamespace(correct=correct), n_boot=50).iloc[0]
    assert row.gain == 0 and (row.ci_low, row.ci_high) == (-1.0, 1.0)


def test_gains_over_a_baseline_that_uses_descriptions_pair_them_and_an_absent_baseline_is_named():
    from types import SimpleNamespace
    rng = np.random.default_rng(1)
    hit = lambda: rng.random((2, 30)) > 0.5   # noqa: E731
    correct = {("a", "b", "none", "-"): hit(), ("a", "b", "translate", "paper"): hit(),
               ("a", "b", "translate", "nouns"): hit(), ("a", "b", "augment", "paper"): hit(),
               ("a", "b", "augment", "nouns"): hit()}
    res = SimpleNamespace(correct=correct)
    g = gains(res, baseline="translate", n_boot=20).set_index("description")
    for how in ("paper", "nouns"):   # augment / paper against translate / paper, not against nothing
        want = (correct[("a", "b", "augment", how)].mean(1) - correct[("a", "b", "translate", how)].mean(1)).mean()
        assert g.loc[how, "gain"] == pytest.approx(want)
    with pytest.raises(ValueError, match=r"baseline 'nonee' is not in these results; they hold \['augment', 'none'"):
        gains(res, baseline="nonee")


def test_paired_bootstrap_of_identical_methods_is_zero():
    hits = np.random.default_rng(0).random((5, 50)) > 0.5
    assert paired_bootstrap(hits, hits) == (0.0, 0.0, 0.0)
    better = hits | True
    gain, lo, hi = paired_bootstrap(better, hits)
    assert lo > 0 and np.isclose(gain, 1 - hits.mean())


def test_each_domain_description_matches_its_own_images_best_on_synthetic_data():
    emb, text = synthetic()
    sims = description_similarity(emb, text).loc["paper"]
    assert list(sims.index) == emb.domains and list(sims.columns) == emb.domains
    assert (sims.values.argmax(axis=1) == np.arange(N_DOMAINS)).all()


def test_with_some_sources_every_domain_is_still_a_target_in_the_tables_and_the_grid():
    import re

    import matplotlib
    matplotlib.use("Agg")
    from pacs_embed.analysis import plots
    from pacs_embed.analysis.stats import grid
    emb, text = synthetic(n_per=10)
    res = evaluate(emb, text=text, seeds=range(2), sources=["d1"], methods=["none", "zeroshot"], progress=False)
    assert set(res.table.source) == {"d1"} and set(res.table.target) == set(emb.domains)
    g = grid(res.table, "none")
    assert list(g.index) == ["d1"] and list(g.columns) == emb.domains
    fig = plots.accuracy_grid(res.table)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == emb.domains
    every = plots.accuracy_grid(evaluate(emb, text=text, seeds=range(2), methods=["none", "zeroshot"],
                                         progress=False).table)
    # one source row is drawn as a strip, not in a panel as tall as one with a row per domain
    assert fig.get_figheight() < 0.75 * every.get_figheight()


def test_evaluate_fits_the_seeds_of_a_source_together_and_each_head_once(monkeypatch):
    from pacs_embed.analysis import heads
    emb, text = synthetic(n_per=10)
    runs = []
    monkeypatch.setattr(heads.solvers, "lbfgs_paths", lambda *a, real=heads.solvers.lbfgs_paths: runs.append(len(a[2])) or real(*a))
    res = evaluate(emb, ["none", "translate", "augment"], seeds=range(3), text=text, head_cache=False, progress=False)
    assert sorted(runs) == [3] * (2 * N_DOMAINS)        # per source: the plain heads (shared by none and
    assert res.head_cache.fits == 2 * N_DOMAINS * 3     # translate) and augment's, three seeds in one run each
    for (source, seed), head in res.heads.items():      # the same heads as fitted one by one
        i = emb.in_domain(source)
        alone = fit_head(emb.x[i], emb.label[i], *split(len(i), seed, source))
        assert head.C == alone.C and np.mean(head.predict(emb.x) == alone.predict(emb.x)) >= 0.995


def test_heads_are_fitted_source_by_source_so_only_one_source_s_copies_wait_at_a_time(monkeypatch):
    """Each flush holds the heads of one source (its seeds and methods); the transformed copies of the other sources'
    rows are not made yet or already dropped (at DomainNet size every source at once took 19 GB)."""
    from pacs_embed.analysis import heads
    full, text = synthetic(n_per=10)
    keep = np.arange(len(full.x)) % 10 < 10 - full.domain      # domain d keeps 10 - d images per class
    emb = Embeddings(full.x[keep], full.label[keep], full.domain[keep], full.domains, full.classes,
                     [p for p, k in zip(full.paths, keep) if k], None)
    flushed, real = [], heads.HeadBatch._take

    def take(self):
        groups = real(self)
        flushed.append({len(x) for x, *_ in groups})   # the row counts of what waits (each source's differ)
        return groups
    monkeypatch.setattr(heads.HeadBatch, "_take", take)
    sizes = {d: int((emb.domain == i).sum()) for i, d in enumerate(emb.domains)}
    assert len(set(sizes.values())) == len(sizes)                  # sources tell apart by their row counts
    evaluate(emb, ["none", "project_out", "augment"], seeds=range(2), text=text, head_cache=False, progress=False)
    waiting = [f for f in flushed if f]
    assert len(waiting) == len(emb.domains) and all(len(f) == 1 for f in waiting)
    assert [f.pop() for f in waiting] == sorted(sizes.values(), reverse=True)   # the largest source first


def test_a_domain_whose_every_image_failed_is_left_out_with_a_warning(cache_copy):
    import h5py
    from pacs_embed import analysis as pa
    with h5py.File(cache_copy, "r+") as f:
        sketch = list(f["domains"].asstr()[:]).index("sketch")
        f["images/ok"][...] = f["images/ok"][...] & (f["images/domain"][...] != sketch)
        resign(f)                                                 # as extraction would have written it
    with pytest.warns(UserWarning, match=r"\['sketch'\] have no readable images"):
        emb = pa.load(cache_copy)
    assert emb.domains == ["art_painting", "cartoon", "photo"] and sorted(set(emb.domain)) == [0, 1, 2]
    assert emb.n_failed == 56 and all(emb.paths[i].startswith(emb.domains[d]) for i, d in enumerate(emb.domain))
    res = pa.evaluate(emb, ["none"], seeds=[0], progress=False)
    assert set(res.table.target) == {"art_painting", "cartoon", "photo"}


@pytest.mark.parametrize("name", ["tab20", "tab10", "colorblind"])
def test_figure_colours_are_seaborns_palettes_without_importing_seaborn(name):
    import seaborn as sns
    from pacs_embed.analysis.plots import palette
    for n in (1, 3, 10, 25):   # more colours than the palette holds: repeated, as seaborn does
        assert palette(name, n) == [tuple(c) for c in sns.color_palette(name, n)]


def test_only_descriptions_made_of_the_same_prompts_are_called_repeats():
    from pacs_embed.analysis.text import Description, repeated
    def described(*prompts):
        return [Description(f"d{i}", [p], [p]) for i, p in enumerate(prompts)]
    assert repeated({"paper": described("a", "b"), "ensemble": described("a", "b"), "nouns": described("a", "c")}) == {
        "ensemble": "paper"}
    given = TextSide.from_vectors({"paper": np.eye(3)[:2], "other": np.eye(3)[1:]}, np.eye(3))   # no prompts: vectors
    assert repeated(given.descriptions) == {}


def test_figures_say_what_their_colours_mean_and_colour_method_families_alike():
    """The accuracy grid: one colour scale set by the data with a colour bar; a head's own source (its diagonal)
    is blank, with the in-domain accuracy beside the source's name; zero-shot keeps its source accuracy there.
    Gains: members of a family share its colour map; the summary is one column wide."""
    import re

    import matplotlib
    from pacs_embed import analysis as pa
    from pacs_embed.analysis import plots
    emb, text = synthetic(n_per=10)
    res = evaluate(emb, ["none", "zeroshot", "translate", "interpolate", "augment"], text=text, seeds=range(2),
                   progress=False)
    fig = plots.accuracy_grid(res.table)
    bar = [ax for ax in fig.axes if "accuracy (mean over seeds" in ax.get_ylabel()]
    assert len(bar) == 1
    table = res.table[(res.table.source != res.table.target) & res.table.description.isin(["paper", "-"])]
    cross = table.groupby(["source", "target", "method"]).accuracy.mean()
    lo, hi = bar[0].get_ylim()
    assert lo <= cross.min() and hi >= cross.max() and (lo > 0 or hi < 1)       # the data's range, not 0-1
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.images}
    assert np.ma.getmaskarray(panels["none"].images[0].get_array()).diagonal().all()         # blank diagonal
    zeroshot = np.ma.getmaskarray(panels["zeroshot"].images[0].get_array())
    assert not zeroshot[0].any() and zeroshot[1:].all()       # no source: every target once, in one row
    assert re.fullmatch(r"d0 \([01]\.\d\d\)", panels["none"].get_yticklabels()[0].get_text())   # in-domain beside it
    colours = plots.method_colours(["translate", "interpolate", "augment", "zeroshot"])
    rgb = {m: matplotlib.colors.to_rgb(c) for m, c in colours.items()}
    assert all(rgb[m][2] > rgb[m][0] for m in ("translate", "interpolate"))                # both blues
    assert rgb["augment"][1] > rgb["augment"][0] and rgb["translate"] != rgb["interpolate"]
    summary = plots.gains_summary(pa.method_means(res.table), "paper")
    assert summary.get_figwidth() <= 5


def test_a_method_has_one_colour_in_every_figure_whatever_is_drawn_beside_it():
    from pacs_embed.analysis.plots import method_colours
    alone = method_colours(["gap_shift"])["gap_shift"]
    beside = method_colours(["translate", "gap_shift", "project_out", "augment"])["gap_shift"]
    reordered = method_colours(["project_pair", "project_out", "gap_shift"])["gap_shift"]
    assert alone == beside == reordered
    colours = method_colours(["translate", "translate_renorm", "interpolate"])
    assert len(set(colours.values())) == 3
