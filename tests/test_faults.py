"""Fault injection: kill -9 and Ctrl-C at several phases, a full disk, concurrent writers and readers.
Whatever happens, finished work is kept, the previous cache is untouched and the next run completes."""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pacs_embed import prompt_embeddings
from pacs_embed.cache import locked, read_images, read_prompts

TESTS = Path(__file__).parent


def start(fault, *args, **kw):
    return subprocess.Popen([sys.executable, str(TESTS / "fault_extract.py"), *map(str, args)], text=True,
                            env={**os.environ, "PACS_FAULT": fault}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


def wait_for(condition, proc, seconds=120):
    deadline = time.time() + seconds
    while not condition():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def file_size_limit(nbytes):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def test_kill_9_during_the_final_write_leaves_the_old_cache_and_the_rerun_completes(small_dataset, tiny_clip,
                                                                                   tmp_path, mini_cache):
    out = tmp_path / "c.h5"
    args = ["extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--dtype", "float32",
            "--batch-size", "8", "--workers", "0", "--no-progress"]
    assert subprocess.run([sys.executable, "-m", "pacs_embed", *map(str, args)]).returncode == 0
    before = out.read_bytes()
    (small_dataset / "photo" / "dog" / sorted(os.listdir(small_dataset / "photo" / "dog"))[0]).unlink()
    args.append("--force")                                         # embed every image again: a long run to kill
    proc = start("final-write", *args)
    wait_for(lambda: out.with_name("c.h5.partial").exists(), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert out.read_bytes() == before                              # readers still see the whole old cache
    r = subprocess.run([sys.executable, "-m", "pacs_embed", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming: 55 of 55" in r.stdout                        # the embedded batches were not lost
    assert read_images(out)["embedding"].shape[0] == 55 and not out.with_name("c.h5.partial").exists()


def test_a_full_disk_at_the_final_write_is_a_clear_error_and_loses_nothing(small_dataset, tiny_clip, tmp_path):
    out = tmp_path / "c.h5"
    args = ["-m", "pacs_embed", "extract", "--data", small_dataset, "--model", tiny_clip, "--out", out,
            "--dtype", "float32", "--batch-size", "8", "--workers", "0", "--no-progress"]
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       preexec_fn=file_size_limit(20_000), timeout=300)     # journal shards fit, the cache does not
    assert r.returncode == 2 and "no space" in r.stderr.lower() and "Traceback" not in r.stderr, r.stderr
    assert not out.exists() and not out.with_name("c.h5.partial").exists()
    assert len(list(tmp_path.glob("c.h5.journal/batch_*.npz"))) == 7
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0 and "resuming: 56 of 56" in r.stdout


def test_a_full_disk_during_a_prompt_append_leaves_the_cache_as_it_was(cache_copy):
    before, prompts = cache_copy.read_bytes(), read_prompts(cache_copy).keys()
    r = subprocess.run([sys.executable, "-m", "pacs_embed", "prompts", str(cache_copy), "a brand new prompt"],
                       capture_output=True, text=True, preexec_fn=file_size_limit(100))   # the log's record does not fit
    assert r.returncode == 2 and "no space" in r.stderr.lower() and "Traceback" not in r.stderr, r.stderr
    assert cache_copy.read_bytes() == before and read_prompts(cache_copy).keys() == prompts
    assert prompt_embeddings(cache_copy, ["a brand new prompt"]).shape == (1, 16)   # the next append completes


def test_a_killed_writer_does_not_leave_its_lock_to_its_workers(pacs_mini, tiny_clip, tmp_path):
    """kill -9 of the main process only: its DataLoader workers live on for a moment, holding nothing."""
    out = tmp_path / "c.h5"
    args = ["extract", "--data", pacs_mini, "--model", tiny_clip, "--out", out, "--dtype", "float32",
            "--batch-size", "8", "--workers", "2", "--no-progress"]
    proc = start("slow-batches", *args)
    wait_for(lambda: len(list(tmp_path.glob("c.h5.journal/batch_*.npz"))) >= 2, proc)
    os.kill(proc.pid, signal.SIGKILL)                               # not the group: the workers are orphaned
    proc.wait(timeout=30)
    with locked(out, wait=False):                                   # at once: no "another process is writing"
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_prompt_append_never_damages_the_cache(cache_copy, sig):
    proc = subprocess.Popen([sys.executable, "-c", (
        "import os, time\n"
        "real = os.fsync\n"
        "def slow(fd):\n"
        "    print('WRITING', flush=True); time.sleep(30); real(fd)\n"
        "os.fsync = slow\n"
        f"from pacs_embed import prompt_embeddings\nprompt_embeddings({str(cache_copy)!r}, ['an interrupted prompt'])")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "WRITING"
    before = read_prompts(cache_copy)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)
    after = read_prompts(cache_copy).keys()                          # intact, and still readable: old or new
    assert after in (before.keys(), before.keys() | {"an interrupted prompt"})
    assert prompt_embeddings(cache_copy, ["an interrupted prompt"]).shape == (1, 16)


def test_concurrent_prompt_appends_lose_nothing_and_readers_never_see_half_a_file(cache_copy):
    writers = [subprocess.Popen([sys.executable, "-m", "pacs_embed", "prompts", str(cache_copy),
                                 *[f"prompt {w}-{i}" for i in range(3)]]) for w in range(3)]
    reads = 0
    while any(w.poll() is None for w in writers):
        assert read_images(cache_copy)["embedding"].shape == (224, 16)
        reads += 1
    assert all(w.returncode == 0 for w in writers) and reads > 0
    have = read_prompts(cache_copy)
    assert all(f"prompt {w}-{i}" in have for w in range(3) for i in range(3))


def test_a_full_disk_at_a_journal_write_is_a_clear_error_and_leaves_no_partial_shard(small_dataset, tiny_clip, tmp_path):
    out = tmp_path / "c.h5"
    args = ["-m", "pacs_embed", "extract", "--data", small_dataset, "--model", tiny_clip, "--out", out,
            "--dtype", "float32", "--batch-size", "8", "--workers", "0", "--no-progress"]
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       preexec_fn=file_size_limit(1_000), timeout=300)       # meta.json fits, a batch does not
    assert r.returncode == 2 and "no space" in r.stderr.lower() and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.glob("c.h5.journal/*.partial")) and not out.exists()
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
