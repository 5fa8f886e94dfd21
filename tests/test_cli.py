"""The command line: help, and clear errors for bad input."""
import os
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pacs_embed", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("command", [[], ["extract"], ["download"], ["info"], ["prompts"]])
def test_help(command):
    r = run(*command, "--help")
    assert r.returncode == 0 and "usage: pacs-embed" in r.stdout


def test_extract_help_lists_the_overrides():
    out = run("extract", "--help").stdout
    for flag in ["--device", "--dtype", "--batch-size", "--workers", "--strict", "--model", "--data", "--out"]:
        assert flag in out


def test_missing_data_folder_is_a_clear_error(tmp_path):
    r = run("extract", "--data", str(tmp_path / "nope"))
    assert r.returncode == 2 and "nope" in r.stderr and "pacs-embed download" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_model_offline_is_a_clear_error(small_dataset):
    r = run("extract", "--data", str(small_dataset), "--model", "no-such-org/no-such-clip",
            env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no-such-org/no-such-clip" in r.stderr and "HF_HUB_OFFLINE" in r.stderr


def test_info_describes_a_cache(mini_cache):
    r = run("info", str(mini_cache))
    assert r.returncode == 0 and "224 (224 embedded, 0 failed)" in r.stdout and "dataset    unchanged" in r.stdout


def test_info_counts_the_fitted_heads_cached_beside_a_cache(cache_copy):
    from pacs_embed import analysis as pa
    assert "fitted heads" not in run("info", str(cache_copy)).stdout   # none fitted yet
    res = pa.evaluate(pa.load(cache_copy), ["none"], seeds=[0], progress=False)
    assert f"heads      {res.head_cache.fits} fitted heads in {cache_copy}.heads" in run("info", str(cache_copy)).stdout


def test_a_reader_that_goes_away_ends_the_command_quietly(mini_cache):
    read, write = os.pipe()
    os.close(read)   # as `pacs-embed info ... | head -1` once head has exited
    r = subprocess.run([sys.executable, "-m", "pacs_embed", "info", str(mini_cache)], stdout=write,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert r.returncode == 141 and r.stderr == ""


@pytest.mark.parametrize("device", ["bogus", "meta", "cuda:99"])
def test_prompts_on_a_device_that_cannot_be_used_is_a_clear_error_and_adds_nothing(cache_copy, device):
    from pacs_embed.cache import read_prompts
    before = len(read_prompts(cache_copy))
    r = run("prompts", str(cache_copy), "a prompt never encoded", "--device", device)
    assert r.returncode == 2 and f"--device {device!r}" in r.stderr and "Traceback" not in r.stderr
    assert len(read_prompts(cache_copy)) == before


def test_a_file_that_is_not_a_cache_is_a_clear_error(tmp_path):
    bogus = tmp_path / "x.h5"
    bogus.write_text("hello")
    r = run("info", str(bogus))
    assert r.returncode == 2 and "x.h5" in r.stderr and "Traceback" not in r.stderr


def test_a_missing_model_folder_is_a_clear_error(small_dataset, tmp_path):
    r = run("extract", "--data", str(small_dataset), "--model", str(tmp_path / "gone"))
    assert r.returncode == 2 and "gone" in r.stderr and "does not exist" in r.stderr


def test_a_wrong_dtype_is_a_clear_error(small_dataset, tiny_clip):
    r = run("extract", "--data", str(small_dataset), "--model", str(tiny_clip), "--dtype", "float8")
    assert r.returncode == 2 and "--dtype 'float8'" in r.stderr and "Traceback" not in r.stderr


def test_download_converts_local_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    import io
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    pq.write_table(pa.table({"image": [{"bytes": buf.getvalue(), "path": "s.png"}], "domain": ["sketch"],
                             "label": [3]}), tmp_path / "x.parquet")
    r = run("download", "--parquet", str(tmp_path / "x.parquet"), "--dest", str(tmp_path / "P"), "--no-check")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "P" / "sketch" / "guitar" / "s.png").read_bytes() == buf.getvalue()


def test_a_wrong_data_folder_fails_before_torch_is_imported_and_methods_are_listed_in_help(tmp_path):
    import subprocess
    import sys
    from pacs_embed.analysis.methods import METHODS
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"x")
    code = ("import sys; from pacs_embed.cli import main\n"
            "rc = main(['extract', '--data', sys.argv[1], '--model', 'x'])\n"
            "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "flat")], capture_output=True, text=True)
    assert r.stdout.split() == ["2", "False"] and "no domain sub-folders" in r.stderr
    helped = subprocess.run([sys.executable, "-m", "pacs_embed", "report", "--help"], capture_output=True,
                            text=True).stdout
    assert all(name in " ".join(helped.split()) for name in METHODS if not name.startswith("_"))


def test_only_errors_the_package_names_are_one_line_anything_else_is_a_bug_with_its_traceback(monkeypatch, capsys):
    from pacs_embed import cli
    from pacs_embed.errors import ArgumentError
    monkeypatch.setitem(cli.COMMANDS, "info", lambda args: 1 / 0)
    assert cli.main(["info", "x.h5"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "probably a bug" in err
    def refuse(args):
        raise ArgumentError("the cache x.h5 is not one")
    monkeypatch.setitem(cli.COMMANDS, "info", refuse)
    assert cli.main(["info", "x.h5"]) == 2
    err = capsys.readouterr().err
    assert err == "pacs-embed info: error: the cache x.h5 is not one\n"
