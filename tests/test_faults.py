"""Fault injection: kill -9 and Ctrl-C at several phases, a full disk, concurrent writers and readers.
Whatever happens, finished work is kept, the previous cache is untouched and the next run completes."""
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
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


@pytest.mark.parametrize("fault", ["worker-raises", "worker-killed", "file-size-limit"])
def test_a_decoding_worker_that_fails_outside_an_image_stops_the_run_with_a_clear_error(small_dataset, tiny_clip,
                                                                                       tmp_path, fault):
    """A worker that raises, is killed, or cannot hand its batch over (a full /dev/shm or a file-size limit: the
    batch's shared-memory copy fails in the queue's feeder thread) stops the run within seconds — it used to hang."""
    out = tmp_path / "c.h5"
    args = ["extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--dtype", "float32",
            "--batch-size", "8", "--workers", "2", "--no-progress"]
    limit = file_size_limit(20 * 1024) if fault == "file-size-limit" else None
    t0 = time.time()
    r = subprocess.run([sys.executable, str(TESTS / "fault_extract.py"), *map(str, args)], capture_output=True,
                       text=True, env={**os.environ, "PACS_FAULT": fault}, preexec_fn=limit, timeout=120)
    assert r.returncode == 2 and "image decoding stopped" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "run the same command again to resume" in r.stderr and "--workers 0" in r.stderr
    assert time.time() - t0 < 60
    assert not out.exists()
    r = subprocess.run([sys.executable, "-m", "pacs_embed", *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr                             # the next run completes
    assert read_images(out)["embedding"].shape[0] == 56


REPORT = ["--seeds", "2", "--descriptions", "paper", "--methods", "none", "translate", "augment", "--bootstrap", "20",
          "--no-progress"]


def _heads(cache):
    """{entry name: head} of every head-cache entry beside ``cache``, each read back with its own key checked."""
    from pacs_embed.analysis.heads import Head
    from pacs_embed.cache import heads_folder
    out = {}
    for f in sorted(heads_folder(cache).glob("*")):
        assert f.suffix == ".npz", f"{f.name} left in the head cache"            # no .partial, nothing else
        with np.load(f) as z:
            out[f.name] = Head.from_file(f, f.stem, z["W"].shape[0], z["classes"])
    return out


def _results(out):
    return pd.read_csv(out / "results.csv").sort_values(["source", "target", "method", "description", "seed"],
                                                        ignore_index=True)


def test_two_reports_at_once_on_an_empty_head_cache_both_finish_and_leave_whole_entries(cache_copy, tmp_path):
    runs = [subprocess.Popen([sys.executable, "-m", "pacs_embed", "report", str(cache_copy), "--out",
                              str(tmp_path / f"r{i}"), *REPORT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]
    for r in runs:
        _, err = r.communicate(timeout=600)
        assert r.returncode == 0, err
        assert "HeadCacheWarning" not in err and "refitted" not in err   # neither saw the other's half-written entry
    pd.testing.assert_frame_equal(_results(tmp_path / "r0"), _results(tmp_path / "r1"))
    entries = _heads(cache_copy)
    assert len(entries) >= 8                                   # 4 sources x 2 seeds x (plain + augment) heads
    from pacs_embed.analysis import evaluate, load
    res = evaluate(load(cache_copy), ["none", "translate", "augment"], seeds=range(2), progress=False)
    assert res.head_cache.fits == 0                            # a third run finds every head the two wrote


def _chattr(path, flag) -> bool:
    """``chattr flag path``; False where the tool or the file system's support is missing."""
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


def test_a_read_only_head_cache_folder_keeps_heads_in_memory_and_the_report_finishes(cache_copy, tmp_path):
    """``chattr +i`` makes the folder unwritable even for root (chmod does not)."""
    from pacs_embed.cache import heads_folder
    folder = heads_folder(cache_copy)
    folder.mkdir()
    if not _chattr(folder, "+i"):
        pytest.skip("chattr +i is not available on this file system")
    try:
        r = subprocess.run([sys.executable, "-m", "pacs_embed", "report", str(cache_copy), "--out",
                            str(tmp_path / "r"), *REPORT], capture_output=True, text=True, timeout=600)
    finally:
        _chattr(folder, "-i")
    assert r.returncode == 0, r.stderr
    assert f"cannot write the head cache entry {folder}/" in r.stderr and "kept in memory only" in r.stderr
    assert r.stderr.count("cannot write the head cache") == 1          # said once, not once per head
    assert ".partial" not in r.stderr                                  # it names the entry, not a temporary file
    assert not list(folder.iterdir())
    clean = subprocess.run([sys.executable, "-m", "pacs_embed", "report", str(cache_copy), "--out",
                            str(tmp_path / "clean"), *REPORT, "--no-head-cache"], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    pd.testing.assert_frame_equal(_results(tmp_path / "r"), _results(tmp_path / "clean"))


def test_a_full_disk_while_head_entries_are_written_leaves_whole_entries_and_the_same_results(cache_copy, tmp_path):
    """A file-size limit below one entry: every entry write fails ("no space"); evaluate goes on in memory and
    leaves no partial entry; the next run (disk free) fits and writes them."""
    from pacs_embed.cache import heads_folder
    script = ("import sys, warnings; from pacs_embed.analysis import evaluate, load\n"
              "res = evaluate(load(sys.argv[1]), ['none', 'translate', 'augment'], seeds=range(2), progress=False)\n"
              "print(res.head_cache.fits); res.table.to_csv(sys.argv[2], index=False)\n")
    r = subprocess.run([sys.executable, "-c", script, str(cache_copy), str(tmp_path / "a.csv")], capture_output=True,
                       text=True, timeout=600, preexec_fn=file_size_limit(200))
    # the CSV itself is over the limit: evaluate must have finished, with the warning, before writing it
    assert "cannot write the head cache" in r.stderr and "no space" in r.stderr.lower(), r.stderr
    assert r.stdout.strip() == "16", r.stdout + r.stderr                          # every head fitted, in memory
    assert not [f for f in heads_folder(cache_copy).glob("*") if f.suffix != ".npz" or f.stat().st_size <= 200]
    r = subprocess.run([sys.executable, "-c", script, str(cache_copy), str(tmp_path / "b.csv")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "16", r.stderr
    assert len(_heads(cache_copy)) == 16


def test_a_cache_in_a_read_only_folder_is_analysed_and_new_prompts_live_in_memory(cache_copy, tmp_path, tiny_clip):
    """A shared, read-only cache: a report with an edited prompt runs (the prompt is encoded, used and not kept,
    with a warning); `pacs-embed prompts`, whose job is to keep them, is an error."""
    folder = tmp_path / "shared"
    folder.mkdir()
    cache = Path(shutil.move(cache_copy, folder / "mini.h5"))
    if not _chattr(folder, "+i"):
        pytest.skip("chattr +i is not available on this file system")
    try:
        r = subprocess.run([sys.executable, "-m", "pacs_embed", "report", str(cache), "--out", str(tmp_path / "r"),
                            *REPORT, "--domain-prompt", "cartoon=a comic strip"], capture_output=True, text=True,
                           timeout=600)
        p = subprocess.run([sys.executable, "-m", "pacs_embed", "prompts", str(cache), "a comic strip"],
                           capture_output=True, text=True, timeout=300)
        assert sorted(os.listdir(folder)) == ["mini.h5"]
    finally:
        _chattr(folder, "-i")
    assert r.returncode == 0, r.stderr
    assert "cannot save 1 new prompt(s)" in r.stderr and "used in this process only" in r.stderr
    assert "a comic strip" in (tmp_path / "r" / "report.md").read_text()
    assert p.returncode == 2 and "could not be saved" in p.stderr and "Traceback" not in p.stderr, p.stderr
