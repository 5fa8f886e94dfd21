"""The (source) jobs of an evaluation go through joblib when the user picks a backend of processes or a cluster
(joblib.parallel_config(backend="loky" | "dask" | "ray")): the same results as the default threads."""
import os

import joblib
import pytest
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


def test_a_study_on_a_dask_cluster_of_worker_processes_gives_the_tables_of_the_default_threads(cache_copy, tmp_path):
    """Every (cache, source) evaluation of a study is one job on a real dask.distributed cluster (worker processes),
    handed over at once; the study's and each report's tables are those of the threads."""
    distributed = pytest.importorskip("distributed")
    from pacs_embed.synthetic import make_cache
    second = make_cache(tmp_path / "vlcs.h5", "VLCS", scale=0.02, dim=16, prompts="report")
    caches = [str(cache_copy), str(second)]
    where = {"folder": tmp_path / "pids-threads"}

    @pa.register("where_it_ran")                 # a method of this test's: it notes the process it runs in
    def where_it_ran(x, t_src, t_tgt):
        where["folder"].mkdir(exist_ok=True)
        (where["folder"] / str(os.getpid())).touch()
        return x

    common = dict(seeds=range(2), methods=["none", "translate", "zeroshot", "where_it_ran"], descriptions=["paper"],
                  n_boot=50, progress=False)
    try:
        here = pa.study(caches, out=tmp_path / "threads", head_cache=False, **common)
        where["folder"] = tmp_path / "pids-dask"
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client, joblib.parallel_config(backend="dask"):
            there = pa.study(caches, out=tmp_path / "dask", head_cache=tmp_path / "heads", **common)
            workers = set(client.run(os.getpid).values())
    finally:
        pa.METHODS.pop("where_it_ran", None)
    assert {p.name for p in (tmp_path / "pids-threads").iterdir()} == {str(os.getpid())}
    ran = {int(p.name) for p in (tmp_path / "pids-dask").iterdir()}
    assert ran and ran <= workers and os.getpid() not in workers    # the jobs ran in the cluster's processes
    assert list((tmp_path / "heads").glob("*.npz"))                  # their heads written by the workers
    assert (tmp_path / "dask" / "study.csv").read_bytes() == (tmp_path / "threads" / "study.csv").read_bytes()
    compared = 0
    for name in ("results.csv", "summary.csv", "methods.csv", "gains.csv"):
        for table in (tmp_path / "threads").glob(f"*/*/{name}"):
            twin = tmp_path / "dask" / table.relative_to(tmp_path / "threads")
            assert twin.read_bytes() == table.read_bytes(), table
            compared += 1
    assert compared == 8 and there.keys() == here.keys()


def test_report_scheduler_runs_the_jobs_on_that_cluster_and_an_unreachable_one_is_said_in_one_line(cache_copy, tmp_path):
    distributed = pytest.importorskip("distributed")
    import subprocess
    import sys
    from pacs_embed.cli import main
    args = [str(cache_copy), "--seeds", "2", "--descriptions", "paper", "--methods", "none", "translate",
            "--no-head-cache", "--no-progress"]
    assert main(["report", *args, "--out", str(tmp_path / "here")]) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main(["report", *args, "--out", str(tmp_path / "there"), "--scheduler", cluster.scheduler_address]) == 0
        with distributed.Client(cluster) as client:   # what the cluster's scheduler ran: the report's source jobs
            ran = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert any("_source_job" in name for name in ran), ran
    for name in ("results.csv", "summary.csv", "gains.csv", "methods.csv"):
        assert (tmp_path / "there" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name
    r = subprocess.run([sys.executable, "-m", "pacs_embed", "report", *args, "--out", str(tmp_path / "nowhere"),
                        "--scheduler", "tcp://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no Dask scheduler answered" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "nowhere").exists()
