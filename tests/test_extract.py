"""Extraction: one pass over real images into a self-describing, crash-safe HDF5 cache."""
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, CLIPModel

from conftest import resign
from pacs_embed import extract
from pacs_embed.cache import Cache, CacheError, read_attrs, read_images, read_prompts
from pacs_embed.cli import main
from pacs_embed.extraction import ExtractionError
from pacs_embed.templates import default_prompts

TESTS = Path(__file__).parent


def direct_embeddings(model_dir, root, paths):
    """What a user would compute by hand: processor + CLIPModel.get_image_features, float32."""
    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    images = [Image.open(root / p).convert("RGB") for p in paths]
    with torch.no_grad():
        out = model.get_image_features(**processor(images=images, return_tensors="pt"))
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()


def test_cache_equals_direct_get_image_features_on_real_images(mini_cache, pacs_mini, tiny_clip):
    arrays = read_images(mini_cache)
    assert np.allclose(arrays["embedding"], direct_embeddings(tiny_clip, pacs_mini, arrays["path"]), atol=1e-5)


def test_paths_domains_and_classes_match_the_folders(mini_cache, pacs_mini):
    arrays = read_images(mini_cache)
    on_disk = sorted(p.relative_to(pacs_mini).as_posix() for p in pacs_mini.glob("*/*/*"))
    assert arrays["path"] == on_disk  # every file, in sorted (domain, class, file) order
    assert arrays["domains"] == ["art_painting", "cartoon", "photo", "sketch"]
    assert arrays["classes"] == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    for path, d, c in zip(arrays["path"], arrays["domain"], arrays["label"]):
        assert path.split("/")[:2] == [arrays["domains"][d], arrays["classes"][c]]
    assert Counter(arrays["domains"][d] for d in arrays["domain"]) == {d: 56 for d in arrays["domains"]}
    assert any(p.endswith(".png") for p in arrays["path"])  # PACS sketches are PNG
    assert arrays["ok"].all()


def test_the_file_says_how_its_vectors_were_made(mini_cache, tiny_clip, pacs_mini):
    a = read_attrs(mini_cache)
    assert a["model_id"] == str(tiny_clip.resolve()) and a["revision"].startswith("sha256:")
    assert a["processor_class"] == "CLIPImageProcessorPil" and '"crop_size"' in a["processor_settings"]
    assert a["dtype"] == "float32" and a["device"] == "cpu" and a["batch_size"] == 8
    assert a["torch_version"] == str(torch.__version__) and a["pacs_embed_version"] == "0.1.0"
    assert a["format_version"] == 1 and "not L2-normalised" in a["embedding"]
    assert a["created"] and a["transformers_version"] and len(a["manifest_sha256"]) == 64
    with h5py.File(mini_cache) as f:
        assert f["images/embedding"].dtype == np.float32 and f["images/embedding"].shape == (224, 16)
        assert len(f["images/sha256"][0]) == 64
    arrays = read_images(mini_cache)
    norms = np.linalg.norm(arrays["embedding"], axis=1)
    assert not np.allclose(norms, 1.0)  # raw, not normalised


def test_default_prompts_are_encoded_at_extraction(mini_cache):
    prompts = read_prompts(mini_cache)
    for p in ["a photo", "an art painting", "a cartoon", "a black and white drawing",
              "a photo of a dog", "a cartoon of a giraffe", "a black and white drawing of a person"]:
        assert p in prompts
    arrays = read_images(mini_cache)
    assert list(prompts) == default_prompts(arrays["domains"], arrays["classes"])


def test_bfloat16_run_stays_close_to_float32(mini_cache, pacs_mini, tiny_clip, tmp_path):
    s = extract(pacs_mini, str(tiny_clip), tmp_path / "bf16.h5", dtype="bfloat16", batch_size=32,
                workers=2, progress=False)
    assert s.dtype == "bfloat16" and s.n_embedded == 224
    a, b = read_images(mini_cache)["embedding"], read_images(tmp_path / "bf16.h5")["embedding"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


def test_rerun_with_unchanged_inputs_does_nothing(mini_cache, pacs_mini, tiny_clip, capsys):
    before = mini_cache.stat().st_mtime_ns
    s = extract(pacs_mini, str(tiny_clip), mini_cache, dtype="float32", batch_size=8, progress=False)
    assert s.up_to_date and "up to date" in str(s)
    assert mini_cache.stat().st_mtime_ns == before


def test_changed_dataset_files_are_reported_exactly(small_dataset, tiny_clip, tmp_path, capsys):
    out = tmp_path / "c.h5"
    extract(small_dataset, str(tiny_clip), out, dtype="float32", progress=False)
    photo_dog = sorted((small_dataset / "photo" / "dog").iterdir())
    photo_dog[0].unlink()
    shutil.copy(small_dataset / "cartoon/dog" / sorted(os.listdir(small_dataset / "cartoon/dog"))[0], photo_dog[1])
    shutil.copy(photo_dog[1], small_dataset / "photo" / "dog" / "new.jpg")
    changes = Cache.open(out).changes()
    rel = lambda p: p.relative_to(small_dataset).as_posix()  # noqa: E731
    assert changes.added == ["photo/dog/new.jpg"]
    assert changes.removed == [rel(photo_dog[0])]
    assert changes.modified == [rel(photo_dog[1])]
    s = extract(small_dataset, str(tiny_clip), out, dtype="float32", progress=False)
    printed = capsys.readouterr().out
    assert "1 added" in printed and "photo/dog/new.jpg" in printed and rel(photo_dog[0]) in printed
    assert not s.up_to_date and not Cache.open(out).changes()


@pytest.fixture
def broken_dataset(small_dataset):
    good = sorted((small_dataset / "photo" / "dog").glob("*.jpg"))[0].read_bytes()
    broken = {"photo/dog/truncated.jpg": good[: len(good) // 2], "cartoon/horse/empty.jpg": b"",
              "sketch/house/notes.png": b"this is a text file, not a PNG\n"}
    for rel, data in broken.items():
        (small_dataset / rel).write_bytes(data)
    return small_dataset, sorted(broken)


def test_unreadable_images_are_recorded_not_fatal(broken_dataset, tiny_clip, tmp_path):
    root, bad = broken_dataset
    s = extract(root, str(tiny_clip), tmp_path / "c.h5", dtype="float32", batch_size=4, progress=False)
    assert sorted(p for p, _ in s.failures) == bad
    assert s.n_images == 59 and s.n_embedded == 56
    text = str(s)
    assert all(p in text for p in bad) and "3 failed" in text
    arrays = read_images(tmp_path / "c.h5")
    failed = {p for p, ok in zip(arrays["path"], arrays["ok"]) if not ok}
    assert failed == set(bad)
    assert np.isnan(arrays["embedding"][~arrays["ok"]]).all() and np.isfinite(arrays["embedding"][arrays["ok"]]).all()
    reasons = dict(Cache.open(tmp_path / "c.h5").failures())
    assert sorted(reasons) == bad and all(reasons.values())


def test_a_non_finite_image_vector_is_a_recorded_failure_and_a_cache_holding_one_is_refused(small_dataset, tiny_clip,
                                                                                             tmp_path, monkeypatch):
    """A float16 tower can overflow: such an image is a failure with its reason, never a NaN row marked ok; a
    cache that holds one anyway (older versions, hand-made caches) is refused by the analysis, naming the file."""
    import pacs_embed.models as extraction
    from pacs_embed import analysis as pa
    real = extraction.embed_images

    def overflowing(model, pixels):
        out = real(model, pixels).clone()
        out[0] = float("inf")
        return out
    monkeypatch.setattr(extraction, "embed_images", overflowing)
    s = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", batch_size=4, progress=False)
    batches = -(-s.n_images // 4)
    assert len(s.failures) == batches and all("not finite" in r and "--dtype float32" in r for _, r in s.failures)
    emb = pa.load(tmp_path / "c.h5")
    assert np.isfinite(emb.x).all() and emb.n_failed == batches
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f["images/ok"][...] = True
        resign(f)                                                 # a cache that says so, not a damaged one
    with pytest.raises(CacheError, match="not finite"):
        pa.load(tmp_path / "c.h5")
    monkeypatch.setattr(extraction, "embed_images", real)      # as the error says: run extract again
    again = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", batch_size=4, progress=False)
    assert again.failures == [] and again.kept == s.n_images - batches   # the others were kept, these re-encoded
    assert np.isfinite(pa.load(tmp_path / "c.h5").x).all()


def test_a_zero_image_vector_marked_readable_is_refused_by_the_analysis_and_encoded_again_by_extract(
        small_dataset, tiny_clip, tmp_path):
    """A zero vector has no direction (its cosine with anything is undefined); normalised it stayed zero and was
    scored like an image. Only a hand-made or damaged cache holds one."""
    from pacs_embed import analysis as pa
    s = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", progress=False)
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        zeroed = f["images/path"].asstr()[3]
        f["images/embedding"][3] = 0
    with pytest.raises(CacheError, match=f"1 image embedding.* all zeros, e.g. {zeroed}"):
        pa.load(tmp_path / "c.h5")
    again = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", progress=False)
    assert again.kept == s.n_images - 1                        # the others kept, that one encoded again
    assert pa.load(tmp_path / "c.h5").x[3].any()


def test_strict_fails_naming_every_unreadable_image(broken_dataset, tiny_clip, tmp_path, capsys):
    root, bad = broken_dataset
    rc = main(["extract", "--data", str(root), "--model", str(tiny_clip), "--out", str(tmp_path / "c.h5"),
               "--strict", "--no-progress", "--dtype", "float32"])
    err = capsys.readouterr().err
    assert rc == 2 and all(p in err for p in bad)
    assert not (tmp_path / "c.h5").exists()
    with pytest.raises(ExtractionError, match="truncated.jpg"):
        extract(root, str(tiny_clip), tmp_path / "c.h5", dtype="float32", strict=True, progress=False)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_to_the_identical_file(sig, mini_cache, pacs_mini, tiny_clip, tmp_path):
    out = tmp_path / "resumed.h5"
    journal = tmp_path / "resumed.h5.journal"
    args = ["extract", "--data", str(pacs_mini), "--model", str(tiny_clip), "--out", str(out),
            "--dtype", "float32", "--batch-size", "8", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, str(TESTS / "slow_extract.py"), *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while len(list(journal.glob("batch_*.npz"))) < 5:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "timeout"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0 and not out.exists()
    saved = len(list(journal.glob("batch_*.npz")))
    assert 5 <= saved < 28
    result = subprocess.run([sys.executable, "-m", "pacs_embed", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {saved * 8} of 224" in result.stdout
    assert not journal.exists() and not (tmp_path / "resumed.h5.partial").exists()
    a, b = read_images(out), read_images(mini_cache)
    assert a["path"] == b["path"]
    assert np.array_equal(a["embedding"], b["embedding"])  # bit for bit


def test_unfinished_run_with_other_settings_is_not_mixed_in(pacs_mini, tiny_clip, other_clip, tmp_path):
    out = tmp_path / "c.h5"
    journal = tmp_path / "c.h5.journal"
    journal.mkdir()
    (journal / "meta.json").write_text('{"model_id": "something-else", "batch_size": 8}')
    with pytest.raises(ExtractionError, match="--restart"):
        extract(pacs_mini, str(tiny_clip), out, dtype="float32", progress=False)
    s = extract(pacs_mini, str(tiny_clip), out, dtype="float32", restart=True, workers=0, progress=False)
    assert s.n_embedded == 224 and not journal.exists()


def test_a_new_prompt_file_on_an_up_to_date_cache_encodes_only_its_prompts(cache_copy, pacs_mini, tiny_clip, tmp_path):
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text('{"domains": {"sketch": "a charcoal sketch"}}')
    s = extract(pacs_mini, str(tiny_clip), cache_copy, dtype="float32", batch_size=8, prompts_file=prompt_file,
                progress=False)
    assert s.up_to_date
    assert "a charcoal sketch of a dog" in read_prompts(cache_copy)


def test_each_image_goes_through_the_model_exactly_once(small_dataset, tiny_clip, tmp_path, spy):
    batches = spy("pacs_embed.models", "embed_images")
    s = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", batch_size=5, workers=2,
                progress=False)
    seen = [len(pixels) for pixels in batches]
    assert sum(seen) == s.n_images == 56 and max(seen) == 5


def test_files_that_are_not_images_in_class_folders_are_named_not_dropped_silently(small_dataset, tiny_clip,
                                                                                  tmp_path, capsys):
    (small_dataset / "photo" / "dog" / "notes.txt").write_text("hello")
    (small_dataset / "photo" / "stray.jpg").write_bytes(b"")
    s = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", progress=False)
    out = capsys.readouterr().out
    assert "2 entries skipped" in out and "photo/dog/notes.txt" in out and "photo/stray.jpg" in out
    assert s.n_images == 56


def test_images_in_every_imagefolder_format_are_embedded_alike(small_dataset, tiny_clip, tmp_path):
    """BMP, TIFF, lossless WebP, PPM/PGM (any letter case) are images as ImageFolder reads them: same pixels, same vector."""
    dog = small_dataset / "photo" / "dog"
    rgb = Image.open(next(dog.iterdir())).convert("RGB")
    for name in ["same.png", "same.bmp", "same.TIF", "same.tiff", "same.ppm"]:
        rgb.save(dog / name)
    rgb.save(dog / "same.webp", lossless=True)
    rgb.convert("L").save(dog / "grey.png")
    rgb.convert("L").save(dog / "grey.pgm")
    s = extract(small_dataset, str(tiny_clip), tmp_path / "c.h5", dtype="float32", progress=False)
    assert s.n_images == 56 + 8 and s.failures == []
    a = read_images(tmp_path / "c.h5")
    vec = {p.rsplit("/", 1)[1]: v for p, v in zip(a["path"], a["embedding"]) if "/dog/" in p}
    for name in ["same.bmp", "same.TIF", "same.tiff", "same.ppm", "same.webp"]:
        np.testing.assert_allclose(vec[name], vec["same.png"], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(vec["grey.pgm"], vec["grey.png"], atol=1e-5)


def test_loading_a_stale_cache_warns_with_what_changed(small_dataset, tiny_clip, tmp_path):
    from pacs_embed.analysis.embeddings import StaleCacheWarning, load
    out = tmp_path / "c.h5"
    extract(small_dataset, str(tiny_clip), out, dtype="float32", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleCacheWarning)
        load(out)  # unchanged: no warning
    victim = sorted((small_dataset / "sketch" / "house").iterdir())[0]
    victim.unlink()
    with pytest.warns(StaleCacheWarning, match=victim.name):
        emb = load(out)
    assert len(emb.x) == 56  # still usable


def test_a_second_writer_of_the_same_cache_is_refused(small_dataset, tiny_clip, tmp_path):
    import fcntl
    out = tmp_path / "c.h5"
    with open(str(out) + ".lock", "w") as other:  # as another process's lock would
        fcntl.lockf(other, fcntl.LOCK_EX)
        r = subprocess.run([sys.executable, "-m", "pacs_embed", "extract", "--data", str(small_dataset),
                            "--model", str(tiny_clip), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "another process is writing" in r.stderr


def test_a_few_changed_files_are_embedded_again_and_the_rest_kept(small_dataset, tiny_clip, tmp_path, spy, capsys):
    out = tmp_path / "c.h5"
    extract(small_dataset, str(tiny_clip), out, dtype="float32", batch_size=4, workers=0, progress=False)
    before = read_images(out)
    dog = sorted((small_dataset / "photo" / "dog").iterdir())
    dog[0].unlink()                                                           # removed
    # new bytes (a trailing byte an image decoder ignores): the same bytes as a held image would be kept (moved)
    dog[1].write_bytes(sorted((small_dataset / "sketch" / "horse").iterdir())[0].read_bytes() + b"\0")   # modified
    (small_dataset / "photo" / "dog" / "new.png").write_bytes(
        sorted((small_dataset / "cartoon" / "house").iterdir())[0].read_bytes() + b"\0")              # added
    batches = spy("pacs_embed.models", "embed_images")
    s = extract(small_dataset, str(tiny_clip), out, dtype="float32", batch_size=4, workers=0, progress=False)
    assert sum(len(b) for b in batches) == 2 and s.kept == 54 and "kept 54, embedded 2" in str(s)
    after = read_images(out)
    old = dict(zip(before["path"], before["embedding"]))
    for p, e in zip(after["path"], after["embedding"]):
        if p not in (dog[1].relative_to(small_dataset).as_posix(), "photo/dog/new.png"):
            assert np.array_equal(e, old[p]), p                               # kept bit for bit
    fresh = extract(small_dataset, str(tiny_clip), tmp_path / "fresh.h5", dtype="float32", batch_size=4, workers=0,
                    progress=False)
    assert np.allclose(read_images(fresh.out)["embedding"], after["embedding"], atol=1e-5)
    assert extract(small_dataset, str(tiny_clip), out, dtype="bfloat16", progress=False).kept == 0  # other dtype: all again


needs_torchvision = pytest.mark.skipif(not __import__("pacs_embed.models").models.has_torchvision(),
                                       reason="torchvision does not import beside this torch (CPU wheel)")
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_auto_picks_pil_on_cpu_and_records_it(mini_cache):
    from pacs_embed.models import choose_processor
    assert choose_processor("auto", "cpu") == "pil" and choose_processor("pil", "cuda") == "pil"
    assert read_attrs(mini_cache)["processor"] == "pil"


@pytest.mark.skipif(__import__("pacs_embed.models").models.has_torchvision(), reason="torchvision is importable here")
def test_fast_without_torchvision_is_a_clear_error(small_dataset, tiny_clip, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pacs_embed", "extract", "--data", str(small_dataset), "--model",
                        str(tiny_clip), "--out", str(tmp_path / "c.h5"), "--processor", "fast"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--processor fast needs torchvision" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "c.h5.journal").exists()


@needs_torchvision
@pytest.mark.parametrize("device", devices)
def test_fast_processor_stays_close_to_pil_and_is_never_mixed_with_it(mini_cache, pacs_mini, tiny_clip, tmp_path,
                                                                      device, capsys):
    out = tmp_path / "fast.h5"
    s = extract(pacs_mini, str(tiny_clip), out, dtype="float32", batch_size=8, workers=2, processor="fast",
                device=device, progress=False)
    assert s.processor == "fast" and read_attrs(out)["processor"] == "fast" and s.n_embedded == 224
    a, b = read_images(mini_cache)["embedding"], read_images(out)["embedding"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"cosine(fast on {device}, pil): min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() > 0.95
    again = extract(pacs_mini, str(tiny_clip), out, dtype="float32", batch_size=8, processor="pil", device=device,
                    progress=False)                                        # a switch re-embeds everything
    assert not again.up_to_date and again.kept == 0 and read_attrs(out)["processor"] == "pil"


@needs_torchvision
def test_fast_processor_fails_the_same_files_as_pil(broken_dataset, tiny_clip, tmp_path):
    root, bad = broken_dataset
    s = extract(root, str(tiny_clip), tmp_path / "c.h5", dtype="float32", batch_size=4, processor="fast", progress=False)
    assert sorted(p for p, _ in s.failures) == bad and s.n_embedded == 56


def test_fast_decoding_refuses_a_truncated_jpeg_as_pil_does(broken_dataset):
    """libjpeg would decode the first half with a warning; the fast path sends such a file through PIL."""
    from pacs_embed.extraction.images import read_rgb, read_uint8
    truncated = broken_dataset[0] / "photo/dog/truncated.jpg"
    with pytest.raises(OSError) as pil:
        read_rgb(truncated)
    with pytest.raises(OSError) as fast:
        read_uint8(truncated)
    assert str(fast.value) == str(pil.value)


def test_a_renamed_class_folder_is_said_to_have_moved_and_nothing_is_embedded_again(small_dataset, tiny_clip, tmp_path,
                                                                                     spy, capsys):
    out = tmp_path / "c.h5"
    extract(small_dataset, str(tiny_clip), out, dtype="float32", batch_size=4, workers=0, progress=False)
    before = read_images(out)
    (small_dataset / "photo" / "dog").rename(small_dataset / "photo" / "doggo")    # a class renamed in one domain
    for f in (small_dataset / "sketch" / "horse").iterdir():                        # mtimes touched, bytes the same
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    capsys.readouterr()
    batches = spy("pacs_embed.models", "embed_images")
    s = extract(small_dataset, str(tiny_clip), out, dtype="float32", batch_size=4, workers=0, progress=False)
    said = capsys.readouterr().out
    assert "2 moved (same bytes, another path):" in said and "photo/dog/" in said and "photo/doggo/" in said
    assert "sketch/horse" not in said                                               # touched, not changed
    assert sum(len(b) for b in batches) == 0 and s.kept == s.n_images               # nothing embedded again
    after = read_images(out)
    old = dict(zip([p.replace("photo/dog/", "photo/doggo/") for p in before["path"]], before["embedding"]))
    assert all(np.array_equal(e, old[p]) for p, e in zip(after["path"], after["embedding"]))
