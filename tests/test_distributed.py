"""torchrun: N processes split the batches, rank 0 writes the cache; the result is the single-process one."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pacs_embed.cache import read_attrs, read_images, read_prompts

TESTS = Path(__file__).parent


def run(*args, ranks=1, fault="", script=None):
    """`pacs-embed extract ...` as one process or under `torchrun --nproc_per_node ranks` (gloo, CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}   # each as it would run by default:
    env["PACS_FAULT"] = fault                                  # all cores for one process, one thread per rank
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    target = [str(script)] if script else ["-m", "pacs_embed"]
    return subprocess.run([sys.executable, *launcher, *target, "extract", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def extract_args(data, model, out):
    return ["--data", data, "--model", model, "--out", out, "--dtype", "float32", "--batch-size", "4",
            "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def single(small_dataset_module, tiny_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "c.h5"
    r = run(*extract_args(small_dataset_module, tiny_clip, out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def small_dataset_module(pacs_mini, tmp_path_factory):
    """``small_dataset``, shared by this module's tests (none changes it)."""
    from conftest import copy_sample
    return copy_sample(pacs_mini, tmp_path_factory.mktemp("data") / "data")


def same_cache(a, b):
    x, y = read_images(a), read_images(b)
    assert x["path"] == y["path"] and np.array_equal(x["ok"], y["ok"])
    assert np.array_equal(x["embedding"], y["embedding"])                  # bit for bit
    pa, pb = read_prompts(a), read_prompts(b)
    assert list(pa) == list(pb) and all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_two_ranks_make_the_identical_cache(single, small_dataset_module, tiny_clip, tmp_path):
    out = tmp_path / "c.h5"
    r = run(*extract_args(small_dataset_module, tiny_clip, out), ranks=2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "x 2 ranks" in r.stdout and not Path(str(out) + ".journal").exists()
    same_cache(out, single)
    assert read_attrs(out)["processor"] == "pil"


@pytest.mark.parametrize("resume_ranks", [2, 1])
def test_a_killed_rank_resumes_with_any_world_size(single, small_dataset_module, tiny_clip, tmp_path, resume_ranks):
    out = tmp_path / "c.h5"
    journal = Path(str(out) + ".journal")
    r = run(*extract_args(small_dataset_module, tiny_clip, out), ranks=2, fault="kill-rank-1",
            script=TESTS / "fault_extract.py")
    assert r.returncode != 0 and not out.exists()
    saved = len(list(journal.glob("batch_*.npz")))
    assert 1 <= saved < 14                                                  # 56 images in batches of 4
    r = run(*extract_args(small_dataset_module, tiny_clip, out), ranks=resume_ranks)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming: {saved * 4} of 56" in r.stdout and not journal.exists()
    same_cache(out, single)


def test_an_error_on_rank_0_stops_every_rank_with_its_message(small_dataset_module, tiny_clip, tmp_path):
    bad = tmp_path / "not-a-cache.h5"
    bad.write_text("my notes")
    r = run(*extract_args(small_dataset_module, tiny_clip, bad), ranks=2)
    assert r.returncode != 0 and "is not a pacs_embed cache" in r.stderr
    assert "rank 1: stopped, because rank 0 failed" in r.stderr
    assert bad.read_text() == "my notes"
