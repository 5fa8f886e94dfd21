"""Where the analysis's jobs run — one executor for ``evaluate`` and ``study``: here, on threads (the default), or,
under a joblib backend the user chose (processes: ``loky``; a cluster: ``dask``, ``ray``), one joblib job per
(cache, source domain), a study's jobs of every cache handed over at once.

Usage::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")        # your cluster's scheduler (or Client(LocalCluster()))
    with joblib.parallel_config(backend="dask"):
        pa.study(["PACS.h5", "VLCS.h5"])           # every (cache, source) evaluation runs on the cluster

The results are those of the threads, bit for bit (``tests/test_scale_out.py``): a head is a function of its inputs
only (``heads``), and the jobs' results are merged in (cache, source) order whatever order they finish in.
"""
from __future__ import annotations


def distributed() -> bool:
    """Whether the user chose a joblib backend of processes or a cluster (``joblib.parallel_config(backend=...)``);
    no choice, threads or sequential: the work runs here, on this process's threads."""
    try:
        from joblib._parallel_backends import SequentialBackend, ThreadingBackend
        from joblib.parallel import get_active_backend
    except ImportError:
        return False
    backend, _ = get_active_backend(prefer="threads")
    return not isinstance(backend, (ThreadingBackend, SequentialBackend))


def run(function, jobs) -> list:
    """``[function(*job) for job in jobs]``, each call one joblib job on the chosen backend; results in job order."""
    from joblib import Parallel, delayed
    return Parallel()(delayed(function)(*job) for job in jobs)
