"""The method registry: one contract for baselines, operators, augmentation and methods users write."""
import contextlib

import numpy as np
import pytest

from pacs_embed import analysis as pa
from pacs_embed.analysis.embeddings import Embeddings
from pacs_embed.analysis.methods import METHODS, Method, make, register
from test_analysis import synthetic


@pytest.fixture
def user_methods():
    """A one-line operator and a learned method, registered as a user would in a notebook cell."""
    @register("half_translate")
    def half_translate(x, t_src, t_tgt):
        return x + 0.5 * (t_src - t_tgt)

    @register("translated_centroids")
    class TranslatedCentroids(Method):
        def fit(self, src):
            tr = src.train
            self.centroids = np.stack([src.x[tr][src.y[tr] == k].mean(0) for k in range(src.n_classes)])
            return self

        def predict(self, x, source, target):
            return ((x + source.vector - target.vector) @ self.centroids.T).argmax(1)
    yield ["half_translate", "translated_centroids"]
    METHODS.pop("half_translate")
    METHODS.pop("translated_centroids")


def test_user_methods_join_the_grid_and_are_scored_like_the_built_in_ones(user_methods):
    emb, text = synthetic(n_per=10)
    res = pa.evaluate(emb, ["none", *user_methods], seeds=[0], text=text, progress=False)
    cross = res.table[res.table.source != res.table.target].groupby("method").accuracy.mean()
    assert set(cross.index) == {"none", *user_methods}
    assert cross["translated_centroids"] > 0.95 and cross["none"] < 0.75   # it learned, and translation works


def test_a_method_may_use_its_head_while_it_fits():
    @register("head_in_fit")
    class HeadInFit(Method):
        """Uses its head inside fit (here: to measure how well it fits the training images)."""
        def fit(self, src):
            first = src.fit_head(src.x)                          # fitted here: it is used at once
            right = first.predict(src.x[src.train]) == src.y[src.train]
            self.head = src.fit_head(src.x)                      # the same head again: not fitted twice
            self.agreement = float(right.mean())
            return self

        def predict(self, x, source, target):
            return self.head.predict(x)
    try:
        emb, text = synthetic(n_per=10)
        res = pa.evaluate(emb, ["none", "head_in_fit"], seeds=range(3), text=text, head_cache=False, progress=False)
        t = res.table[res.table.source != res.table.target]
        mine, none = (t[t.method == m].accuracy.to_numpy() for m in ("head_in_fit", "none"))
        assert np.array_equal(mine, none) and res.head_cache.fits == 4 * 3   # one plain head per source and seed
        assert all(m.agreement > 0.9 for k, m in res.fitted.items() if k[2] == "head_in_fit")
    finally:
        METHODS.pop("head_in_fit")


def test_no_method_ever_sees_target_images_or_labels(user_methods):
    """Every registered method, fitted on clean and on poisoned target domains, fits the same."""
    emb, text = synthetic()
    poisoned = Embeddings(emb.x.copy(), emb.label.copy(), emb.domain, emb.domains, emb.classes, emb.paths, None)
    target = emb.domain != 0
    rng = np.random.default_rng(9)
    poisoned.x[target] = rng.standard_normal(poisoned.x[target].shape)
    poisoned.label[target] = rng.permutation(poisoned.label[target])
    kw = dict(methods=list(METHODS), text=text, seeds=[0, 1], sources=["d0"], progress=False)
    clean, dirty = pa.evaluate(emb, **kw), pa.evaluate(poisoned, **kw)
    assert not clean.table.equals(dirty.table)  # the target data did change what was scored
    assert {k[2] for k in clean.fitted} == set(METHODS)
    probe = emb.x[emb.domain == 0]  # the source's own images, as every fitted method sees them
    for key, a in clean.fitted.items():
        b = dirty.fitted[key]
        descs = text.descriptions["paper"]
        for t in descs[1:]:
            assert np.array_equal(a.predict(probe, descs[0], t), b.predict(probe, descs[0], t)), key
        if hasattr(a, "head"):
            assert a.head.C == b.head.C and np.array_equal(a.head.W, b.head.W), key


@contextlib.contextmanager
def registered(name, method):
    """``method`` in the registry as ``name`` for the duration of a with-block."""
    register(name)(method)
    try:
        yield name
    finally:
        METHODS.pop(name)


@pytest.mark.parametrize("returns, says", [
    (lambda x: np.ones((len(x), 7)) / 7, "shape (n, 7)"),            # scores instead of labels
    (lambda x: x[:, 0], "float64 values"),                          # a score per image
    (lambda x: np.array(["c0"] * len(x)), "<U2 values"),             # class names
    (lambda x: None, "returned None"),                              # a forgotten return
    (lambda x: np.zeros(len(x) - 1, int), "shape (n - 1,)"),         # one label short
    (lambda x: np.full(len(x), 7), "class index 7"),                 # beyond the last class
])
def test_a_method_whose_predictions_are_not_class_indices_is_named_not_scored_zero(returns, says):
    emb, text = synthetic(n_per=5)

    class Careless(Method):
        def predict(self, x, source, target):
            return returns(x)
    with registered("careless", Careless), pytest.raises(ValueError, match="method 'careless' on target") as e:
        pa.evaluate(emb, ["careless"], seeds=[0], text=text, progress=False)
    n = 7 * 5
    assert says.replace("(n, 7)", f"({n}, 7)").replace("(n - 1,)", f"({n - 1},)") in str(e.value)
    assert "one class index per image" in str(e.value)


def test_a_method_that_fails_says_which_method_source_and_seed():
    emb, text = synthetic(n_per=5)

    class Broken(Method):
        def fit(self, src):
            raise RuntimeError("my bug")
    with registered("broken", Broken), pytest.raises(RuntimeError, match="my bug") as e:
        pa.evaluate(emb, ["broken"], seeds=[3], text=text, progress=False)
    assert any("method 'broken' failed to fit on source" in n and "seed 3" in n for n in e.value.__notes__)


def test_a_fit_that_forgets_to_return_self_is_named():
    emb, text = synthetic(n_per=5)

    class Forgetful(Method):
        def fit(self, src):
            self.head = src.fit_head(src.x)   # no `return self`
    with registered("forgetful", Forgetful), pytest.raises(TypeError, match="'forgetful'.*return self"):
        pa.evaluate(emb, ["forgetful"], seeds=[0], text=text, progress=False)


@pytest.mark.parametrize("op, when", [
    (lambda x, s, t: x * np.nan, "failed to fit"),                                          # at training
    (lambda x, s, t: x * (1.0 if np.array_equal(s, t) else np.inf), "failed to predict"),   # on targets only
])
def test_an_operator_that_makes_nan_or_inf_is_an_error_not_class_0(op, when):
    emb, text = synthetic(n_per=5)
    with registered("overflowing", op), pytest.raises(ValueError, match="NaN or inf") as e:
        pa.evaluate(emb, ["overflowing"], seeds=[0], text=text, progress=False)
    assert any(f"method 'overflowing' {when}" in n for n in e.value.__notes__)


@pytest.mark.parametrize("asks, says", [
    (lambda src: src.fit_head(src.x, extra=src.x[:5]), "extra rows need extra_from"),
    (lambda src: src.fit_head(src.x, extra=src.x[:5], extra_from=np.arange(3)), "extra must be .* one source row index each"),
    (lambda src: src.fit_head(src.x, extra=src.x[:5], extra_from=np.arange(5) + 10**6),   # were dropped, silently
     "extra_from must index the"),
    (lambda src: src.fit_head(src.x, shifts=np.ones((2, 3))), "shifts must be"),
])
def test_a_head_asked_for_with_extra_rows_or_shifts_that_do_not_fit_is_named(asks, says):
    emb, text = synthetic(n_per=5)

    class Asking(Method):
        def fit(self, src):
            self.head = asks(src)
            return self
    with registered("asking", Asking), pytest.raises(ValueError, match=f"fit_head: {says}") as e:
        pa.evaluate(emb, ["asking"], seeds=[0], text=text, progress=False)
    assert any("method 'asking' failed to fit" in n for n in e.value.__notes__)


def test_operators_are_identity_without_a_domain_shift():
    rng = np.random.default_rng(1)
    x = pa.l2_normalize(rng.standard_normal((5, 8))).astype(np.float32)
    t = pa.l2_normalize(rng.standard_normal(8)).astype(np.float32)
    for name in ["translate", "translate_renorm", "interpolate"]:
        assert np.allclose(METHODS[name]().op(x, t, t), x, atol=1e-6), name


def test_delta_points_from_target_to_source():
    t_src, t_tgt = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.array_equal(pa.delta(t_src, t_tgt), [1.0, -1.0])
    x = pa.l2_normalize(np.array([[0.1, 1.0]]))              # a target-looking image
    moved = pa.l2_normalize(METHODS["translate"]().op(x, t_src, t_tgt))
    assert moved @ t_src > x @ t_src and moved @ t_tgt < x @ t_tgt


def test_registering_something_that_is_not_a_method_is_refused():
    with pytest.raises(TypeError, match=r"\(x, t_src, t_tgt\)"):
        register("two_args")(lambda x, t: x)
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        make("nope")
    emb, text = synthetic(n_per=5)
    with pytest.raises(KeyError, match="unknown method"):
        pa.evaluate(emb, ["none", "nope"], text=text, progress=False)


def test_a_prompt_edit_changes_translation_where_that_domain_takes_part_and_nowhere_else(cache_copy):
    emb = pa.load(cache_copy)
    kw = dict(methods=["none", "translate", "zeroshot_domain"], seeds=[0], progress=False)
    before = pa.evaluate(emb, **kw)
    after = pa.evaluate(emb, domain_prompts={"cartoon": "a comic strip"}, **kw)
    for key, hits in before.correct.items():
        source, target, method, _ = key
        same = np.array_equal(hits, after.correct[key])
        if method == "none" or "cartoon" not in (source, target) or (method == "zeroshot_domain" and target != "cartoon"):
            assert same, key
    changed = [k for k in before.correct if not np.array_equal(before.correct[k], after.correct[k])]
    assert any(k[2] == "translate" for k in changed) and any(k[2] == "zeroshot_domain" for k in changed)


def test_a_rerun_refits_only_the_heads_whose_training_data_changed(cache_copy):
    emb = pa.load(cache_copy)
    kw = dict(methods=["none", "translate", "augment"], seeds=[0, 1], progress=False)
    first = pa.evaluate(emb, **kw)
    assert first.head_cache.fits == 4 * 2 * 2       # plain and augment heads, per source and seed
    assert len(list(cache_copy.parent.glob("mini.h5.heads/*.npz"))) == 16
    again = pa.evaluate(emb, **kw)
    assert again.head_cache.fits == 0 and again.table.equals(first.table)
    edited = pa.evaluate(emb, domain_prompts={"cartoon": "a comic strip"}, **kw)
    assert edited.head_cache.fits == 4 * 2          # augment heads see cartoon's description; plain heads do not
    off = pa.evaluate(emb, head_cache=False, **kw)
    assert off.head_cache.fits == 16 and off.table.equals(first.table)


def test_domain_prompts_are_checked_against_the_cache(cache_copy):
    emb = pa.load(cache_copy)
    with pytest.raises(KeyError, match="does not have"):
        pa.evaluate(emb, ["none"], domain_prompts={"cartoons": "a comic"}, progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        pa.evaluate(emb, ["none"], domain_prompts={"cartoon": []}, progress=False)


def test_lads_loss_gradient_matches_finite_differences_and_the_kept_epoch_has_the_lowest_holdout_loss(monkeypatch):
    """The LADS augmenter's analytic gradient (directional + weighted, unscaled class-consistency loss) against
    central differences; training keeps the epoch whose hold-out loss is lowest, not the last."""
    from pacs_embed.analysis import lads
    rng = np.random.default_rng(0)
    D, K, n, H = 10, 4, 40, 6
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    x, T, C = unit(rng.standard_normal((n, D))), unit(rng.standard_normal((K, D))), unit(rng.standard_normal((K, D)))
    y, w = rng.integers(0, K, n), rng.uniform(0.3, 1.0, K)
    params = [rng.standard_normal((D, H)), rng.standard_normal(H), rng.standard_normal((H, D)), rng.standard_normal(D)]
    _, grads = lads._loss_grad(params, x, y, T, C, w)
    for p, g in zip(params, grads):
        flat, numeric = p.reshape(-1), np.zeros(p.size)
        for i in range(p.size):
            old = flat[i]
            flat[i] = old + 1e-6
            up = lads._loss_grad(params, x, y, T, C, w, grad=False)[0]
            flat[i] = old - 1e-6
            numeric[i] = (up - lads._loss_grad(params, x, y, T, C, w, grad=False)[0]) / 2e-6
            flat[i] = old
        assert np.allclose(numeric, g.reshape(-1), atol=1e-7)
    losses = []
    real = lads._loss_grad
    monkeypatch.setattr(lads, "EPOCHS", 8)
    monkeypatch.setattr(lads, "LR", 0.3)            # a step so large that the hold-out loss does not just fall
    monkeypatch.setattr(lads, "_loss_grad", lambda *a, grad=True: (losses.append(real(*a, grad=False)[0]) if not grad
                                                                   else None) or real(*a, grad=grad))
    kept = lads.train_augmenter(x[:30], y[:30], x[30:], y[30:], T, C, np.random.default_rng(1))
    best = real(kept, x[30:].astype(np.float32), y[30:], T.astype(np.float32), C.astype(np.float32),
                           (1 / np.bincount(y[:30], minlength=K) / (1 / np.bincount(y[:30], minlength=K)).max()
                            ).astype(np.float32), grad=False)[0]
    assert len(losses) == 8 and best == pytest.approx(min(losses), rel=1e-5) and min(losses) < losses[-1]


def test_lads_takes_the_settings_lads_s_own_config_gives_the_dataset():
    """DomainNet and OfficeHome have LADS configs (their own lr and weight decay; their NUM_LAYERS is read only by
    LADS's end-to-end variant, so the augmenter keeps two layers); other datasets take configs/base.yaml's; every
    name is cited at a pinned commit; the linear augmenter (lads:layers=1) is checked against finite differences."""
    import re
    from pacs_embed.analysis import lads
    assert lads.settings("DomainNet")["layers"] == 2 and lads.settings("DomainNet")["lr"] == 1e-4
    assert re.fullmatch(r"[0-9a-f]{40}", lads.CODE_COMMIT) and lads.CODE_COMMIT[:7] in lads.__doc__
    assert lads.settings("OfficeHome")["lr"] == 1e-3 and lads.settings("PACS") == lads.SETTINGS["base"]
    assert all("@" in s["source"] for s in lads.SETTINGS.values())          # each cited at a pinned commit
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 6)).astype(np.float64)
    y = rng.integers(0, 3, 12)
    targets, classes = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    params = [rng.standard_normal((6, 6)) * 0.3, rng.standard_normal(6) * 0.1]
    loss, grads = lads._loss_grad(params, x, y, targets, classes, np.ones(3))
    eps = 1e-6
    for k in range(2):
        i = (1, 2) if k == 0 else (3,)
        bumped = [p.copy() for p in params]
        bumped[k][i] += eps
        up = lads._loss_grad(bumped, x, y, targets, classes, np.ones(3), grad=False)[0]
        bumped[k][i] -= 2 * eps
        down = lads._loss_grad(bumped, x, y, targets, classes, np.ones(3), grad=False)[0]
        assert grads[k][i] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-8)


def test_methods_hold_their_parameters_as_scikit_learn_estimators_do():
    from pacs_embed.analysis.methods import PARAMETERS, make
    m = make("interpolate:weight=0.25")
    assert m.get_params() == {"weight": 0.25} and m.clone().get_params() == {"weight": 0.25}
    assert make("interpolate").get_params() == {"weight": PARAMETERS["interpolate"]["weight"][0]}
    assert make("translate").set_params(step=2.0).get_params() == {"step": 2.0}
    with pytest.raises(KeyError, match="has no parameter 'wieght' \\(did you mean 'weight'\\?\\)"):
        make("interpolate:wieght=0.3")


def test_lads_settings_are_parameters_that_override_the_dataset_s_config_one_by_one(monkeypatch):
    from pacs_embed.analysis import lads
    from pacs_embed.analysis.methods import PARAMETERS, make
    assert make("lads").get_params() == {"lr": None, "weight_decay": None, "layers": None}   # None: LADS's config
    assert set(PARAMETERS["lads"]) == set(make("lads").get_params())
    used = []
    monkeypatch.setattr(lads, "train_augmenter", lambda x, *a, **knobs: used.append(knobs) or [np.eye(x.shape[1]), np.zeros(x.shape[1])])
    emb, text = synthetic(n_per=6)
    res = pa.evaluate(emb, ["lads", "lads:layers=1,lr=0.01"], seeds=[0], text=text, sources=["d0"], progress=False)
    base = {k: lads.SETTINGS["base"][k] for k in ("lr", "weight_decay", "layers")}
    assert used[0] == base and used[-1] == {**base, "layers": 1, "lr": 0.01}
    assert res.fitted[("d0", 0, "lads:layers=1,lr=0.01", "paper")].settings["layers"] == 1


def test_a_method_with_parameters_runs_under_its_own_name_and_its_defaults_change_nothing():
    emb, text = synthetic()
    methods = ["none", "interpolate", "interpolate:weight=0.5", "interpolate:weight=0.0", "translate:step=0.0"]
    res = pa.evaluate(emb, methods, text=text, seeds=[0, 1], sources=["d0"], progress=False)
    acc = res.table[res.table.source != res.table.target].groupby("method").accuracy.mean()
    assert acc["interpolate:weight=0.5"] == acc["interpolate"]               # the default, written out
    assert acc["interpolate:weight=0.0"] == acc["none"] == acc["translate:step=0.0"]   # no step: the plain head


def test_the_step_sweep_agrees_with_translate_at_each_step_and_marks_the_oracle_as_such():
    emb, text = synthetic()
    sw = pa.sweep(emb, "translate", step=[0.0, 0.5, 1.0], seeds=[0, 1], text=text)
    res = pa.evaluate(emb, ["none", "translate", "translate:step=0.5"], text=text, seeds=[0, 1], progress=False)
    t = res.table[(res.table.source != res.table.target)]
    for step, name in ((0.0, "none"), (0.5, "translate:step=0.5"), (1.0, "translate")):
        mine = sw.table[sw.table.step == step].set_index(["source", "target", "seed"]).accuracy.sort_index()
        theirs = t[t.method == name].set_index(["source", "target", "seed"]).accuracy.sort_index()
        assert np.allclose(mine.values, theirs.values)
    s = sw.summary()
    assert (s.oracle >= s.step1).all() and set(sw.alpha) == set(emb.domains)
    assert "oracle" in sw.sentence() and "not a method" in sw.sentence()
