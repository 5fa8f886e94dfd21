"""The maths, on synthetic embeddings whose answer is known."""
from pathlib import Path

import numpy as np
import pytest

from pacs_embed.embeddings import Embeddings, l2_normalize
from pacs_embed.evaluate import TextSide, evaluate
from pacs_embed.heads import fit_head, split
from pacs_embed.operators import OPERATORS, Context, delta, register
from pacs_embed.similarity import description_similarity, similarity_matrix
from pacs_embed.stats import gains, method_means, paired_bootstrap, summary

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
                     [f"c{k}" for k in range(N_CLASSES)], [f"{i}.png" for i in range(len(y))], Path("-"), True)
    classes = e[:N_CLASSES]
    text = TextSide({"paper": t}, classes, np.stack([classes] * N_DOMAINS))
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
    n_methods = 3 + len(OPERATORS) + 1  # baselines, operators, augment
    assert len(t[t.source != t.target]) == pairs * n_methods * 3
    assert len(t[t.method == "in_domain"]) == N_DOMAINS * 3
    assert set(t.columns) == {"source", "target", "method", "prompt_set", "seed", "accuracy", "n"}
    assert (t[t.source != t.target].n == 7 * 30).all()  # every method on all the target images


def test_similarity_matrix_by_hand():
    text = np.array([[1.0, 0.0], [0.0, 2.0]])            # normalised inside
    images = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 3.0]])
    sim = similarity_matrix(text, images, np.array([0, 0, 1]), 2)
    assert np.allclose(sim, [[0.8, 0.0], [0.4, 1.0]])


def test_delta_points_from_target_to_source():
    t_src, t_tgt = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.array_equal(delta(t_src, t_tgt), [1.0, -1.0])
    x = l2_normalize(np.array([[0.1, 1.0]]))              # a target-looking image
    moved = OPERATORS["translate"](x, t_src, t_tgt, None)
    assert (l2_normalize(moved) @ t_src) > (x @ t_src) and (l2_normalize(moved) @ t_tgt) < (x @ t_tgt)


def test_operators_are_identity_without_a_domain_shift():
    rng = np.random.default_rng(1)
    x = l2_normalize(rng.standard_normal((5, 8)))
    t = l2_normalize(rng.standard_normal(8))
    ctx = Context(image_mean=np.zeros(8), text_mean=np.zeros(8))
    for name in ["translate", "translate_renorm", "project_out", "interpolate"]:
        assert np.allclose(OPERATORS[name](x, t, t, ctx), x), name


def test_project_out_sets_the_domain_coordinate_to_the_source_mean():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 5))
    t_src, t_tgt = l2_normalize(rng.standard_normal(5)), l2_normalize(rng.standard_normal(5))
    ctx = Context(image_mean=rng.standard_normal(5), text_mean=np.zeros(5))
    d = l2_normalize(t_tgt - t_src)
    assert np.allclose(OPERATORS["project_out"](x, t_src, t_tgt, ctx) @ d, ctx.image_mean @ d)


def test_a_user_operator_joins_the_grid():
    emb, text = synthetic(n_per=10)

    @register("flip_sign")
    def flip_sign(x, t_src, t_tgt, ctx):
        return -x
    try:
        res = evaluate(emb=emb, text=text, seeds=[0], methods=["none", "flip_sign"], progress=False)
        assert set(res.table.method) == {"none", "flip_sign", "in_domain"}
    finally:
        OPERATORS.pop("flip_sign")


def test_model_selection_never_touches_target_data():
    emb, text = synthetic()
    poisoned = Embeddings(emb.x.copy(), emb.label.copy(), emb.domain, emb.domains, emb.classes, emb.paths,
                          emb.cache, True)
    target = emb.domain != 0
    poisoned.x[target] = np.random.default_rng(9).standard_normal(poisoned.x[target].shape)
    poisoned.label[target] = np.random.default_rng(9).permutation(poisoned.label[target])
    kw = dict(text=text, seeds=[0, 1], methods=["none", "center", "augment"], sources=["d0"], progress=False)
    clean, dirty = evaluate(emb=emb, **kw), evaluate(emb=poisoned, **kw)
    assert not clean.table.equals(dirty.table)  # the target data did change what was scored
    assert len(clean.heads) == 2 * 3  # plain, center and augment heads for two seeds
    for key, a in clean.heads.items():
        b = dirty.heads[key]
        assert a.C == b.C and a.validation == b.validation
        assert np.array_equal(a.model.coef_, b.model.coef_)


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
    head = fit_head(x, y, seed=0, name="s", Cs=(1e-4, 1.0))
    assert head.C == 1.0 and head.validation[1.0] > head.validation[1e-4]
    assert head.holdout_accuracy == max(head.validation.values())


def test_statistics(results):
    s = summary(results.table)
    assert (s.seeds == 3).all() and s["accuracy"].str.contains("±").all()
    g = gains(results)
    row = g[(g.method == "translate")].iloc[0]
    assert row.ci_low <= row.gain <= row.ci_high and row.gain > 0.2
    assert method_means(results.table).iloc[0]["method"] != "none"


def test_paired_bootstrap_of_identical_methods_is_zero():
    hits = np.random.default_rng(0).random((5, 50)) > 0.5
    assert paired_bootstrap(hits, hits) == (0.0, 0.0, 0.0)
    better = hits | True
    gain, lo, hi = paired_bootstrap(better, hits)
    assert lo > 0 and np.isclose(gain, 1 - hits.mean())


def test_each_domain_description_matches_its_own_images_best_on_synthetic_data():
    emb, text = synthetic()
    sims = description_similarity(text, emb).loc["paper"]
    assert list(sims.index) == emb.domains and list(sims.columns) == emb.domains
    assert (sims.values.argmax(axis=1) == np.arange(N_DOMAINS)).all()
