"""The (source) jobs of an evaluation go through joblib when the user picks a backend of processes or a cluster
(joblib.parallel_config(backend="loky" | "dask" | "ray")): the same results as the default threads."""
import joblib
import numpy as np

from pacs_embed import analysis as pa


def test_joblib_processes_give_the_results_of_the_default_threads(cache_copy, tmp_path):
    emb = pa.load(cache_copy)

    @pa.register("scaled_translate")            # a method defined here (as in a notebook) travels to the workers
    def scaled_translate(x, t_src, t_tgt):
        return x + 0.7 * (t_src - t_tgt)

    try:
        methods = ["none", "translate", "augment", "zeroshot", "scaled_translate"]
        here = pa.evaluate(emb, methods, seeds=range(2), head_cache=False, progress=False)
        with joblib.parallel_config(backend="loky", n_jobs=2):
            there = pa.evaluate(emb, methods, seeds=range(2), head_cache=tmp_path / "heads", progress=False)
    finally:
        pa.METHODS.pop("scaled_translate", None)
    assert there.table.equals(here.table)
    assert here.correct.keys() == there.correct.keys()
    assert all(np.array_equal(here.correct[k], there.correct[k]) for k in here.correct)
    assert there.head_cache.fits == len(list((tmp_path / "heads").glob("*.npz"))) > 0   # written by the workers
