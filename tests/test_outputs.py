"""Each run writes into a folder of its own with run.json; nothing of another run's or of the user's is overwritten."""
import json
import os

import pytest

from pacs_embed.cli import main

FAST = ["--seeds", "1", "--descriptions", "paper", "--methods", "none", "translate", "--bootstrap", "20",
        "--no-progress"]


def test_a_report_left_to_itself_writes_a_new_run_folder_with_its_record(cache_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(cache_copy), *FAST]) == 0
    assert main(["report", str(cache_copy), *FAST]) == 0
    runs = sorted(p for p in (tmp_path / "results" / "PACS" / "mini").iterdir() if p.name != "latest")
    assert len(runs) == 2                                               # the second run did not replace the first
    latest = (tmp_path / "results" / "PACS" / "mini" / "latest").resolve()   # results/<dataset>/<cache>/<time>
    assert latest == runs[-1].resolve() and (latest / "figures" / "gains.png").is_file()
    record = json.loads((latest / "run.json").read_text())
    assert record["kind"] == "report" and record["parameters"]["seeds"] == [0]
    assert record["parameters"]["methods"] == ["none", "translate"] and "report" in record["command"]
    assert record["cache_provenance"]["model_id"] and record["pacs_embed_version"] and record["git_commit"]
    assert not (tmp_path / "figures").exists()                          # nothing outside the run's folder


def test_another_run_into_the_same_folder_is_refused_the_same_run_is_repeated(cache_copy, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(cache_copy), "--out", str(out), *FAST]) == 0
    before = (out / "results.csv").read_bytes()
    assert main(["report", str(cache_copy), "--out", str(out), *FAST, "--domain-prompt", "cartoon=a comic"]) == 2
    err = capsys.readouterr().err
    assert "holds the results of another run" in err and str(out) in err
    assert (out / "results.csv").read_bytes() == before
    assert main(["report", str(cache_copy), "--out", str(out), *FAST]) == 0   # the same command again: fine


def test_files_that_are_not_a_runs_own_are_never_overwritten(cache_copy, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my own numbers\n")
    (mine / "notes.txt").write_text("keep me\n")
    assert main(["report", str(cache_copy), "--out", str(mine), *FAST]) == 2
    assert "results.csv" in capsys.readouterr().err and (mine / "results.csv").read_text() == "my own numbers\n"
    other = tmp_path / "other"                                        # a folder of other files is fine: kept
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    assert main(["report", str(cache_copy), "--out", str(other), *FAST]) == 0
    assert (other / "notes.txt").read_text() == "keep me\n" and (other / "run.json").is_file()


def test_an_output_path_that_cannot_be_a_folder_is_a_clear_error_before_any_work(cache_copy, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub"):
        assert main(["report", str(cache_copy), "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "Traceback" not in err
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_folder_is_a_clear_error(cache_copy, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["report", str(cache_copy), "--out", str(locked), *FAST]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_a_refused_report_makes_no_folder(cache_copy, tmp_path, capsys):
    (tmp_path / "figs").write_text("a file of mine")
    assert main(["report", str(cache_copy), "--out", str(tmp_path / "new" / "r"), "--figures", str(tmp_path / "figs"),
                 *FAST]) == 2
    assert "is a file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()                      # the tables' folder was not made for nothing


def test_run_json_records_the_environment_a_result_can_be_rebuilt_in(cache_copy, tmp_path):
    assert main(["report", str(cache_copy), "--out", str(tmp_path / "r"), *FAST]) == 0
    env = json.loads((tmp_path / "r" / "run.json").read_text())["environment"]
    assert env["python"] and env["processor"]
    assert all(env["packages"][p] for p in ("numpy", "scipy", "scikit-learn", "h5py", "torch", "transformers"))
    assert any(pool.get("internal_api") == "openblas" and pool.get("architecture") for pool in env["thread_pools"])


def test_a_latest_folder_of_the_user_s_is_kept_and_the_run_still_completes(cache_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "results" / "PACS" / "mini" / "latest"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    assert main(["report", str(cache_copy), *FAST]) == 0
    assert "left as it is" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    runs = [p for p in mine.parent.iterdir() if p.name != "latest"]
    assert len(runs) == 1 and (runs[0] / "results.csv").is_file()          # no empty run folder beside it


def test_two_reports_into_one_folder_at_once_leave_one_whole_run(cache_copy, tmp_path):
    """Started together with different seeds: the folder ends with one run's files, its run.json agreeing with its
    results; the other run is refused at the end and its files are kept beside, not mixed in."""
    import subprocess
    import sys
    import pandas as pd
    out = tmp_path / "r"
    procs = [subprocess.Popen([sys.executable, "-m", "pacs_embed", "report", str(cache_copy), "--out", str(out),
                               "--seeds", n, "--descriptions", "paper", "--methods", "none", "translate",
                               "--bootstrap", "20", "--no-progress", "--no-head-cache"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in ("1", "2")]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) in ([0, 0], [0, 2]), results
    record = json.loads((out / "run.json").read_text())
    assert sorted(set(pd.read_csv(out / "results.csv").seed)) == record["parameters"]["seeds"]
    assert json.loads((out / "figures" / "run.json").read_text())["parameters"] == record["parameters"]
    if [rc for rc, _ in results].count(2):
        err = next(e for rc, e in results if rc == 2)
        assert "kept in" in err and list(tmp_path.glob("r-not-published/*/results.csv"))
    assert not list(tmp_path.glob(".r.partial-*")) and not (tmp_path / "r.lock").exists()


def test_the_command_line_runs_methods_with_parameters_and_methods_of_the_user_s_own_file(cache_copy, tmp_path):
    import pandas as pd
    mine = tmp_path / "mymethods.py"
    mine.write_text("from pacs_embed import analysis as pa\n\n"
                    "@pa.register('nudge')\n"
                    "def nudge(x, t_src, t_tgt, *, size=0.1):\n"
                    "    return x + size * (t_src - t_tgt)\n")
    out = tmp_path / "r"
    assert main(["report", str(cache_copy), "--out", str(out), "--seeds", "1", "--descriptions", "paper",
                 "--methods", "none", "interpolate:weight=0.25", "nudge:size=0.3", "--import", str(mine),
                 "--bootstrap", "20", "--no-progress"]) == 0
    ran = set(pd.read_csv(out / "results.csv").method)
    assert {"interpolate:weight=0.25", "nudge:size=0.3"} <= ran
    assert "interpolate:weight=0.25" in (out / "report.md").read_text()      # named with its parameters
