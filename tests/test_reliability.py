"""Bad inputs and hostile files: a clear error naming the file or argument, nothing written outside the
folders named, nothing clobbered, no silent wrong embedding. Numbers refer to the reliability table
in the README."""
import io
import json
import shutil
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pacs_embed import extract, prompt_embeddings
from pacs_embed.cache import CacheError, read_attrs, read_images, read_prompts
from pacs_embed.cli import main
from pacs_embed.download import DownloadError, convert_parquet
from pacs_embed.extraction.images import read_rgb


def run(*args):
    return subprocess.run([sys.executable, "-m", "pacs_embed", *map(str, args)], capture_output=True, text=True)


def parquet_with_domain(tmp_path, domain):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    table = pa.table({"image": pa.array([{"bytes": buf.getvalue(), "path": "a.png"}] * 2,
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "domain": ["photo", domain], "label": pa.array([0, 0], pa.int64())})
    path = tmp_path / "x.parquet"
    pq.write_table(table, path)
    return path


# 1
@pytest.mark.parametrize("domain", ["../../escaped", "/tmp/absolute", "", "..", "a/b"])
def test_1_a_parquet_domain_never_writes_outside_dest(tmp_path, domain):
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(DownloadError, match="row 1: domain"):
        convert_parquet([parquet_with_domain(tmp_path, domain)], dest, expected=None)
    assert not any(p.is_file() for p in tmp_path.rglob("*") if p.suffix == ".png")   # nothing written at all


# 2
@pytest.mark.parametrize("content", [b"my thesis, do not delete", "foreign-hdf5", "old-format"])
def test_2_extract_refuses_to_overwrite_what_is_not_its_cache(small_dataset, tiny_clip, tmp_path, content, mini_cache):
    out = tmp_path / "out.h5"
    if content == "foreign-hdf5":
        with h5py.File(out, "w") as f:
            f["data"] = np.arange(3)
    elif content == "old-format":
        shutil.copy(mini_cache, out)
        with h5py.File(out, "a") as f:
            f.attrs["format_version"] = 0
    else:
        out.write_bytes(content)
    before = out.read_bytes()
    r = run("extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--dtype", "float32", "--no-progress")
    assert r.returncode == 2 and str(out) in r.stderr and "--force" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == before
    r = run("extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--dtype", "float32",
            "--no-progress", "--force")
    assert r.returncode == 0 and read_attrs(out)["n_images"] == 56


# 3
def test_3_sixteen_bit_images_are_scaled_to_eight_bits_not_clipped_to_white(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)        # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(read_rgb(tmp_path / "deep.png"))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert np.array_equal(rgb[..., 0], (ramp >> 8).astype(np.uint8))


# 4
def test_4_links_to_folders_and_outside_files_are_listed_not_followed(small_dataset, tiny_clip, tmp_path, capsys):
    outside = tmp_path / "outside.jpg"
    shutil.copy(next((small_dataset / "photo" / "dog").iterdir()), outside)
    (small_dataset / "zloop").symlink_to(small_dataset)                       # a phantom domain
    (small_dataset / "photo" / "zz").symlink_to(small_dataset)                # a phantom class
    (small_dataset / "photo" / "dog" / "outside.jpg").symlink_to(outside)
    inside = next((small_dataset / "sketch" / "dog").iterdir())
    (small_dataset / "photo" / "dog" / "inside.png").symlink_to(inside)
    s = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", workers=0, progress=False)
    out = capsys.readouterr().out
    a = read_images(s.out)
    assert a["domains"] == ["art_painting", "cartoon", "photo", "sketch"] and "zz" not in a["classes"]
    assert "photo/dog/inside.png" in a["path"] and "photo/dog/outside.jpg" not in a["path"]
    assert "zloop (link to a folder, not followed)" in out and "photo/zz (link to a folder" in out
    assert "photo/dog/outside.jpg (link to a file outside the data folder" in out
    assert not any("zloop" in p for p in read_prompts(s.out))


# 5
def test_5_a_bare_string_prompt_is_refused_not_split(cache_copy):
    with pytest.raises(TypeError, match="list of strings"):
        prompt_embeddings(cache_copy, "watercolor")
    assert "w" not in read_prompts(cache_copy)
    assert main(["prompts", str(cache_copy), "a watercolor"]) == 0 and "a watercolor" in read_prompts(cache_copy)


# 6
def test_6_a_prompt_longer_than_the_context_is_named_in_a_warning(cache_copy):
    long_prompt = "a painting of " + "very " * 40 + "many things"
    with pytest.warns(UserWarning, match="first 77"):
        prompt_embeddings(cache_copy, [long_prompt])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompt_embeddings(cache_copy, ["a short prompt"])


# 8
@pytest.mark.parametrize("args, named", [(["--batch-size", "0"], "--batch-size"), (["--batch-size", "-5"], "--batch-size"),
                                         (["--workers", "-1"], "--workers"), (["--device", "bogus"], "--device"),
                                         (["--device", "cuda"], "--device"), (["--dtype", "float8"], "--dtype"),
                                         (["--device", "meta"], "--device"),   # shapes without data
                                         pytest.param(["--device", "mps"], "--device", marks=pytest.mark.skipif(
                                             sys.platform == "darwin", reason="a Mac may have MPS"))])
def test_8_bad_arguments_fail_before_any_work_and_leave_no_journal(small_dataset, tiny_clip, tmp_path, args, named):
    out = tmp_path / "c.h5"
    r = run("extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--no-progress", *args)
    assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c.h5.journal").exists() and not out.exists()
    ok = run("extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--dtype", "float32", "--no-progress")
    assert ok.returncode == 0, ok.stderr   # nothing left behind blocks the next run


@pytest.mark.parametrize("content", ['["a list"]', '{"nouns": "goose"}', '{"domain_class_template": "{class}"}', "{oops"])
def test_8_a_prompt_file_of_the_wrong_shape_fails_before_any_image_is_embedded(small_dataset, tiny_clip, tmp_path, content):
    bad = tmp_path / "prompts.json"
    bad.write_text(content)
    r = run("extract", "--data", small_dataset, "--model", tiny_clip, "--out", tmp_path / "c.h5", "--prompts", bad)
    assert r.returncode == 2 and str(bad) in r.stderr and not (tmp_path / "c.h5.journal").exists()


# 9
def test_9_a_checkpoint_that_is_not_clip_is_named_before_anything_loads(small_dataset, tmp_path):
    from transformers import BertConfig, BertModel
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                         vocab_size=50)).save_pretrained(tmp_path / "bert")
    r = run("extract", "--data", small_dataset, "--model", tmp_path / "bert", "--out", tmp_path / "c.h5")
    assert r.returncode == 2 and "'bert' checkpoint" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "config-only").mkdir()
    shutil.copy(tmp_path / "bert" / "config.json", tmp_path / "config-only" / "config.json")
    r = run("extract", "--data", small_dataset, "--model", tmp_path / "config-only", "--out", tmp_path / "c.h5")
    assert r.returncode == 2 and "no weights" in r.stderr


def test_9_truncated_weights_are_a_clear_error_and_the_fixed_model_then_runs(small_dataset, tiny_clip, tmp_path):
    model = shutil.copytree(tiny_clip, tmp_path / "model")
    weights = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    out = tmp_path / "c.h5"
    r = run("extract", "--data", small_dataset, "--model", model, "--out", out, "--dtype", "float32", "--no-progress")
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c.h5.journal").exists()
    (model / "model.safetensors").write_bytes(weights)
    assert run("extract", "--data", small_dataset, "--model", model, "--out", out, "--dtype", "float32",
               "--no-progress").returncode == 0


# 10
def test_10_damaged_caches_are_clear_errors(tmp_path, mini_cache):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.attrs.update(read_attrs(mini_cache))
    for path, words in [(garbage, "cannot open cache"), (empty, "lacks /domains")]:
        with pytest.raises(CacheError, match=words):
            read_images(path)
        for command in (["info", str(path)], ["report", str(path), "--out", str(tmp_path / "r")]):
            r = run(*command)
            assert r.returncode == 2 and str(path) in r.stderr and "Traceback" not in r.stderr


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


@pytest.mark.parametrize("damage, words", [
    (lambda f: _replace(f, "prompts/embedding", f["prompts/embedding"][:, :8]), "/prompts/embedding has shape"),
    (lambda f: _replace(f, "images/embedding", f["images/embedding"][:-1]), "/images/embedding has shape"),
    (lambda f: _replace(f, "images/label", f["images/label"][:-3]), "/images/label has shape"),
    (lambda f: _replace(f, "images/label", np.full(f["images/label"].shape, 7, np.int16)), "/images/label holds index 7"),
    (lambda f: _replace(f, "images/domain", -np.ones(f["images/domain"].shape, np.int16)), "/images/domain holds index -1"),
])
def test_10_a_cache_whose_arrays_disagree_is_named_not_analysed(cache_copy, damage, words):
    """Caches written by other tools (or edited by hand) are checked where the analysis reads them."""
    with h5py.File(cache_copy, "a") as f:
        damage(f)
    with pytest.raises(CacheError, match=f"damaged or inconsistent: {words}"):
        from pacs_embed.analysis import load, table1
        table1(load(cache_copy))
    r = run("report", str(cache_copy), "--out", str(cache_copy.parent / "r"), "--seeds", "1")
    assert r.returncode == 2 and str(cache_copy) in r.stderr and "Traceback" not in r.stderr


def test_10_a_cache_without_descriptive_attributes_is_analysed_and_says_not_recorded(cache_copy, tmp_path):
    with h5py.File(cache_copy, "a") as f:
        for key in list(f.attrs):
            if key not in ("format_version", "pacs_embed_version", "model_id", "revision"):
                del f.attrs[key]
    info = run("info", str(cache_copy))
    assert info.returncode == 0 and "run        not recorded / not recorded" in info.stdout
    assert "does not record its dataset folder" in info.stdout
    r = run("report", str(cache_copy), "--out", str(tmp_path / "r"), "--figures", str(tmp_path / "f"), "--seeds", "1",
            "--descriptions", "paper", "--methods", "none", "--no-progress")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_10_vectors_stored_in_another_float_type_load_as_float32(cache_copy, dtype):
    from pacs_embed.analysis import load
    want = load(cache_copy).x
    with h5py.File(cache_copy, "a") as f:
        _replace(f, "images/embedding", f["images/embedding"][:].astype(dtype))
    x = load(cache_copy).x
    assert x.dtype == np.float32 and np.allclose(x, want, atol=2e-3)


def test_10_a_cache_that_does_not_say_which_model_made_it_is_refused(cache_copy):
    with h5py.File(cache_copy, "a") as f:
        del f.attrs["revision"]
    r = run("info", str(cache_copy))
    assert r.returncode == 2 and "does not say which model made its vectors (no attribute revision" in r.stderr


def test_10_a_cache_holding_only_its_domain_prompts_gives_table1_and_translation_and_names_what_needs_more(cache_copy):
    """A cache from another tool may hold just the domain prompts, with no model to encode more: what needs only
    those runs; what needs more names the description or method and how to leave it out, before any head is fitted."""
    from pacs_embed import analysis as pa
    from pacs_embed.errors import PacsEmbedError
    from pacs_embed.templates import domain_prompt, load_templates
    keep = [domain_prompt(d, load_templates()) for d in pa.load(cache_copy).domains]
    with h5py.File(cache_copy, "a") as f:
        text, vectors = f["prompts/text"].asstr()[:], f["prompts/embedding"][:]
        rows = [list(text).index(p) for p in keep]
        _replace(f, "prompts/text", np.array(keep, dtype=h5py.string_dtype()))
        _replace(f, "prompts/embedding", vectors[rows])
        f.attrs["model_id"] = str(cache_copy.parent / "deleted-model")
    emb = pa.load(cache_copy)
    assert pa.table1(emb)["reproduced"].shape == (4, 4)
    res = pa.evaluate(emb, ["none", "translate", "project_out", "augment"], seeds=[0], progress=False, head_cache=False)
    assert set(res.table.method) == {"in_domain", "none", "translate", "project_out", "augment"}
    heads = cache_copy.parent / "heads"
    with pytest.raises(PacsEmbedError, match="does not hold 7 prompt") as e:
        pa.evaluate(emb, ["none", "zeroshot"], seeds=[0], progress=False, head_cache=heads)
    assert any("method 'zeroshot' failed" in n and "leave it out with methods=" in n for n in e.value.__notes__)
    assert not heads.exists() or not any(heads.iterdir())   # failed before fitting the head of `none`
    with pytest.raises(PacsEmbedError) as e:
        pa.evaluate(emb, ["zeroshot_domain"], seeds=[0], progress=False, head_cache=False)
    assert any("method 'zeroshot_domain' failed" in n for n in e.value.__notes__)
    r = run("report", str(cache_copy), "--out", str(cache_copy.parent / "r"), "--seeds", "1", "--no-progress")
    assert r.returncode == 2 and "the description(s) ['ensemble', 'nouns'] need them" in r.stderr
    assert "Traceback" not in r.stderr


def test_10_prompt_arrays_written_at_a_fixed_size_take_new_prompts(cache_copy):
    """Another tool (or h5py's default) writes contiguous arrays, which cannot grow, and may store text as
    fixed-length bytes and vectors as float64: a new prompt is still added, every old one kept."""
    from pacs_embed import prompt_embeddings
    before = read_prompts(cache_copy)
    with h5py.File(cache_copy, "a") as f:
        _replace(f, "prompts/text", np.array([p.encode() for p in before], dtype="S"))
        _replace(f, "prompts/embedding", np.stack(list(before.values())).astype(np.float64))
    assert prompt_embeddings(cache_copy, ["a brand new prompt"]).shape == (1, 16)
    after = read_prompts(cache_copy)
    assert list(after) == list(before) + ["a brand new prompt"]
    assert all(np.array_equal(after[p], v) for p, v in before.items())
    assert prompt_embeddings(cache_copy, ["another new prompt"]).shape == (1, 16)   # now appendable


def test_10_a_cache_is_not_written_from_arrays_that_disagree(tmp_path, mini_cache):
    from pacs_embed.cache import write
    from pacs_embed.datasets import Record
    records = [Record(f"d/c/{i}.jpg", 0, 0, 0, 0) for i in range(3)]
    x, ok = np.zeros((3, 4), np.float32), np.ones(3, bool)
    for args, words in [((x, ok, [], ["a"], np.zeros((1, 5))), r"1 prompts need a \(1, 4\) matrix"),
                        ((x[:2], ok, [], [], np.zeros((0, 4))), "3 records need"),
                        ((x, ok, [], [], np.zeros((0, 4))), None)]:
        attrs = read_attrs(mini_cache)
        if words is None:   # the same, consistent: written
            write(tmp_path / "ok.h5", attrs, ["d"], ["c"], records, *args)
            assert read_images(tmp_path / "ok.h5")["embedding"].shape == (3, 4)
            continue
        with pytest.raises(ValueError, match=words):
            write(tmp_path / "bad.h5", attrs, ["d"], ["c"], records, *args)
        assert not (tmp_path / "bad.h5").exists()


def test_10_a_damaged_journal_shard_is_named_and_its_batch_redone(pacs_mini, tiny_clip, tmp_path, mini_cache, capsys):
    out = tmp_path / "c.h5"
    journal = tmp_path / "c.h5.journal"
    extract(pacs_mini, str(tiny_clip), tmp_path / "first.h5", dtype="float32", batch_size=8, workers=0, progress=False)
    journal.mkdir()
    meta = {k: read_attrs(tmp_path / "first.h5")[k] for k in ("model_id", "revision", "dtype", "processor_class",
                                                            "manifest_sha256", "n_images")}
    from pacs_embed.extraction.plan import paths_sha256 as _paths_sha256
    todo = _paths_sha256(read_images(tmp_path / "first.h5")["path"])        # every image: there is no old cache
    (journal / "meta.json").write_text(json.dumps({**meta, "batch_size": 8, "todo_sha256": todo}))
    (journal / "batch_000000008.npz").write_bytes(b"PK\x03\x04 truncated")
    s = extract(pacs_mini, str(tiny_clip), out, dtype="float32", batch_size=8, workers=0, progress=False)
    assert "batch_000000008.npz is damaged" in capsys.readouterr().out
    assert np.array_equal(read_images(out)["embedding"], read_images(mini_cache)["embedding"]) and s.n_embedded == 224


# 11
def test_11_degenerate_datasets_get_a_message_about_the_dataset(small_dataset, tiny_clip, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(small_dataset / "photo", one / "photo")
    extract(one, str(tiny_clip), tmp_path / "one.h5", dtype="float32", workers=0, progress=False)
    r = run("report", tmp_path / "one.h5", "--out", tmp_path / "r1", "--figures", tmp_path / "f1", "--seeds", "1")
    assert r.returncode == 2 and "at least two domains" in r.stderr and "Traceback" not in r.stderr
    gap = tmp_path / "gap"
    shutil.copytree(small_dataset, gap)
    shutil.rmtree(gap / "cartoon" / "dog")                                   # a class missing from one domain
    extract(gap, str(tiny_clip), tmp_path / "gap.h5", dtype="float32", workers=0, progress=False)
    r = run("report", tmp_path / "gap.h5", "--out", tmp_path / "r2", "--figures", tmp_path / "f2", "--seeds", "1",
            "--descriptions", "paper", "--no-progress")
    assert r.returncode == 0, r.stderr
    lone = tmp_path / "lone"
    shutil.copytree(small_dataset, lone)
    for c in (lone / "sketch").iterdir():
        if c.name != "dog":
            shutil.rmtree(c)                                                   # a domain with one class
    extract(lone, str(tiny_clip), tmp_path / "lone.h5", dtype="float32", workers=0, progress=False)
    r = run("report", tmp_path / "lone.h5", "--out", tmp_path / "r3", "--figures", tmp_path / "f3", "--seeds", "1")
    assert r.returncode == 2 and "source domain 'sketch'" in r.stderr and "only class" in r.stderr and "--sources" in r.stderr
    r = run("report", tmp_path / "lone.h5", "--out", tmp_path / "r4", "--figures", tmp_path / "f4", "--seeds", "1",
            "--descriptions", "paper", "--sources", "photo", "art_painting", "cartoon", "--no-progress")
    assert r.returncode == 0, r.stderr                                         # ... left out as a source, kept as a target
    results = pd.read_csv(tmp_path / "r4" / "results.csv")
    assert "sketch" not in set(results.source[results.method == "none"]) and "sketch" in set(results.target)


# 12
def test_12_a_journal_left_by_a_finished_run_is_cleaned_up(small_dataset, tiny_clip, tmp_path):
    out = tmp_path / "c.h5"
    s = extract(small_dataset, str(tiny_clip), out, dtype="float32", batch_size=8, workers=0, progress=False)
    journal = tmp_path / "c.h5.journal"
    journal.mkdir()    # as if killed between the rename and the journal's removal
    a = read_attrs(out)
    (journal / "meta.json").write_text(json.dumps({**{k: a[k] for k in ("model_id", "revision", "dtype",
                                       "processor_class", "manifest_sha256", "n_images")}, "batch_size": 8}))
    assert extract(small_dataset, str(tiny_clip), out, dtype="float32", batch_size=8, progress=False).up_to_date
    assert not journal.exists()
    victim = sorted((small_dataset / "photo" / "dog").iterdir())[0]
    victim.unlink()                                                          # and a dataset change afterwards
    journal.mkdir()
    (journal / "meta.json").write_text(json.dumps({**{k: a[k] for k in ("model_id", "revision", "dtype",
                                       "processor_class", "manifest_sha256", "n_images")}, "batch_size": 8}))
    s = extract(small_dataset, str(tiny_clip), out, dtype="float32", batch_size=8, workers=0, progress=False)
    assert s.n_images == 55 and not journal.exists()


# 13
def test_13_a_decompression_bomb_is_a_recorded_failure_not_2_gb_of_memory(small_dataset, tiny_clip, tmp_path):
    bomb = small_dataset / "photo" / "dog" / "bomb.png"
    Image.new("1", (11000, 11000)).save(bomb)                                 # a few KB on disk
    assert bomb.stat().st_size < 100_000
    s = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", workers=0, progress=False)
    assert [p for p, _ in s.failures] == ["photo/dog/bomb.png"] and "DecompressionBomb" in s.failures[0][1]


def test_no_lock_file_is_left_after_an_extract_that_worked_failed_or_was_refused(small_dataset, tiny_clip, tmp_path):
    out = tmp_path / "c.h5"
    assert run("extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--workers", "0").returncode == 0
    assert run("extract", "--data", small_dataset, "--model", tmp_path / "no-model", "--out", out).returncode != 0
    (small_dataset / "photo" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert run("extract", "--data", small_dataset, "--model", tiny_clip, "--out", out, "--workers", "0",
               "--strict").returncode != 0                                            # refused: a bad image
    assert not list(tmp_path.rglob("*.lock")) and not list(small_dataset.rglob("*.lock"))


def test_the_writers_lock_is_exclusive_although_each_holder_removes_it(tmp_path):
    """Three processes add one to a counter 30 times each under ``files.locked``: no update is lost, though every
    holder deletes the lock file as it leaves (a waiter that locked the deleted file opens the new one)."""
    counter = tmp_path / "n"
    counter.write_text("0")
    code = ("import sys, time; from pathlib import Path; from pacs_embed.files import locked\n"
            "p = Path(sys.argv[1])\n"
            "for _ in range(30):\n"
            "    with locked(p):\n"
            "        n = int(p.read_text()); time.sleep(0.001); p.write_text(str(n + 1))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(counter)]) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert counter.read_text() == "90" and not (tmp_path / "n.lock").exists()


def test_two_checkpoints_in_folders_of_one_name_get_two_caches_and_neither_replaces_the_other(small_dataset, tiny_clip,
                                                                                          other_clip, tmp_path):
    """`extract --model /ckpt/a/final` then `--model /ckpt/b/final` (other weights): two default caches; named into
    one --out, the second is refused without --force."""
    a, b = tmp_path / "ckpt" / "a" / "final", tmp_path / "ckpt" / "b" / "final"
    for src, dest in ((tiny_clip, a), (other_clip, b)):
        shutil.copytree(src, dest)
    home = tmp_path / "home"
    home.mkdir()
    for model in (a, b):
        r = subprocess.run([sys.executable, "-m", "pacs_embed", "extract", "--data", str(small_dataset), "--model",
                            str(model), "--workers", "0", "--no-progress"], capture_output=True, text=True, cwd=home)
        assert r.returncode == 0, r.stderr
    made = sorted((home / "data" / "embeddings" / small_dataset.name).glob("final-*.h5"))
    assert len(made) == 2 and {read_attrs(m)["model_id"] for m in made} == {str(a), str(b)}
    out = tmp_path / "one.h5"
    assert run("extract", "--data", small_dataset, "--model", a, "--out", out, "--workers", "0").returncode == 0
    before = out.read_bytes()
    r = run("extract", "--data", small_dataset, "--model", b, "--out", out, "--workers", "0")
    assert r.returncode == 2 and "another model" in r.stderr and "--force" in r.stderr
    assert out.read_bytes() == before
    assert run("extract", "--data", small_dataset, "--model", b, "--out", out, "--workers", "0",
               "--force").returncode == 0
    assert read_attrs(out)["model_id"] == str(b)


@pytest.mark.parametrize("name", ["..", "../../x", "/abs", "", "."])
def test_names_read_from_a_cache_never_become_paths_outside_the_named_folders(cache_copy, tmp_path, name, monkeypatch):
    """A recorded dataset name or a file stem is one safe path component: the report and the study write inside
    results/ and inside --out, whatever the cache says."""
    import h5py
    from pacs_embed.analysis import study
    with h5py.File(cache_copy, "a") as f:
        f.attrs["dataset_name"] = name
        for table in ("domains", "classes"):   # not a registered dataset: the recorded name is used
            renamed = [f"x{t}" for t in f[table].asstr()[:]]
            del f[table]
            f.create_dataset(table, data=np.array(renamed, dtype=object), dtype=h5py.string_dtype())
    odd = cache_copy.with_name("...h5")
    cache_copy.rename(odd)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "latest").mkdir()                                   # a user's own folder of that name, kept
    assert main(["report", str(odd), "--seeds", "1", "--descriptions", "paper", "--methods", "none", "translate",
                 "--bootstrap", "20", "--no-progress"]) == 0
    made = [p for p in work.rglob("report.md")]
    assert len(made) == 1 and made[0].resolve().is_relative_to((work / "results").resolve())
    assert sorted(p.name for p in work.iterdir()) == ["latest", "results"] and not list((work / "latest").iterdir())
    out = tmp_path / "study" / "out"
    above = sorted(p.name for p in tmp_path.parent.iterdir())
    study([odd], out=out, seeds=range(1), descriptions=["paper"], methods=["none", "translate"], n_boot=20,
          progress=False)
    inside = [p.resolve() for p in (tmp_path / "study").rglob("*")]
    assert inside and all(p.is_relative_to(out.resolve()) for p in inside)
    assert {p.name for p in tmp_path.iterdir()} <= {"...h5", "...h5.heads", "...h5.prompts", "study", "work"}
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == above


def test_a_prompt_that_is_not_utf8_is_named_and_a_format_version_string_is_said_so(cache_copy):
    r = subprocess.run([sys.executable, "-m", "pacs_embed", "prompts", str(cache_copy).encode(), b"a \xff watercolor"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not valid UTF-8" in r.stderr and str(cache_copy) in r.stderr
    assert "Traceback" not in r.stderr
    import h5py
    with h5py.File(cache_copy, "a") as f:
        f.attrs["format_version"] = "1"
    with pytest.raises(CacheError, match="format_version attribute of str '1'; a pacs_embed cache's is the integer 1"):
        read_attrs(cache_copy)
