"""A new user's first hour, offline: every message on the way names the next command that works, and following them
reaches a cache of local images made with a local model, a report, and a notebook run."""
import os
import subprocess
import sys

from conftest import copy_sample
from test_notebooks import run_notebook


def pacs_embed(cwd, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PACS_EMBED_CACHE", None)
    return subprocess.run([sys.executable, "-m", "pacs_embed", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)


def test_offline_the_messages_lead_from_nothing_to_a_report_and_a_notebook(tmp_path, pacs_mini, tiny_clip, monkeypatch):
    home = tmp_path / "clone"
    home.mkdir()
    r = pacs_embed(home, "download")                                  # make extract's first step, with no Hub
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "data/PACS/<domain>/<class>/<image>" in r.stderr and "pacs-embed extract --data data/PACS --model" in r.stderr

    copy_sample(pacs_mini, home / "data" / "PACS")                    # placed by hand: part of PACS
    r = pacs_embed(home, "download")
    assert r.returncode == 2 and "holds 56 images now" in r.stderr
    assert "pacs-embed extract --data data/PACS --model" in r.stderr  # the way on: embed what is there

    r = pacs_embed(home, "extract", "--data", "data/PACS")           # the default model is not on this machine
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--model FOLDER" in r.stderr

    r = pacs_embed(home, "extract", "--data", "data/PACS", "--model", tiny_clip, "--no-progress")
    assert r.returncode == 0, r.stderr
    made = list((home / "data" / "embeddings" / "PACS").glob(f"{tiny_clip.name}-*.h5"))   # its name and weights' hash
    assert len(made) == 1
    cache = made[0]
    assert f"next: pacs-embed report {cache.relative_to(home)}" in r.stdout

    r = pacs_embed(home, "report", "--seeds", "2", "--descriptions", "paper", "--bootstrap", "20", "--no-progress")
    assert r.returncode == 0, r.stderr                                # no cache named: the newest one
    report = (home / "results" / "PACS" / cache.stem / "latest" / "report.md").read_text()
    assert report.startswith("# pacs_embed report\n\n## The answer")

    monkeypatch.setenv("PACS_EMBED_CACHE", str(cache))                # the notebooks' one setting
    (home / "notebooks").mkdir()
    rec = run_notebook("01_table1.ipynb", home / "notebooks", record_to=str(tmp_path / "rec.json"))
    assert rec["table1"] and list((home / "results" / "01_table1").glob("*/run.json"))
