"""The prompt API: cached prompts are read, missing ones encoded once and appended; models never mix."""
import importlib

import h5py
import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPTokenizer

from pacs_embed import extract, prompt_embeddings
from pacs_embed.cache import CacheError, read_prompts
from pacs_embed.templates import domain_class_prompts, load_templates
from tiny_clip import make_clip

prompts_module = importlib.import_module("pacs_embed.text_encoder")


@pytest.fixture
def encoded(spy):
    """Records every batch of prompts sent to the text tower."""
    return spy("pacs_embed.models", "encode_text")


def test_only_missing_prompts_are_encoded_and_appended(cache_copy, encoded):
    before = read_prompts(cache_copy)
    wanted = ["a watercolor", "a photo", "a pixel art image", "a watercolor"]
    vectors = prompt_embeddings(cache_copy, wanted)
    assert encoded == [["a watercolor", "a pixel art image"]]
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    assert np.array_equal(vectors[0], vectors[3]) and np.array_equal(vectors[1], before["a photo"])
    after = read_prompts(cache_copy)
    assert list(after)[: len(before)] == list(before) and list(after)[len(before):] == ["a watercolor", "a pixel art image"]


def test_asking_twice_encodes_nothing_the_second_time(cache_copy, encoded):
    first = prompt_embeddings(cache_copy, ["a mosaic", "a tattoo"])
    second = prompt_embeddings(cache_copy, ["a tattoo", "a mosaic"])
    assert len(encoded) == 1
    assert np.array_equal(first[::-1], second)


def test_prompt_vectors_equal_direct_get_text_features(cache_copy, tiny_clip):
    texts = ["a photo", "a sculpture of a horse"]
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip)
    with torch.no_grad():
        out = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    direct = (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()
    assert np.allclose(prompt_embeddings(cache_copy, texts), direct, atol=1e-5)


def test_a_cache_of_another_model_is_refused(cache_copy, other_clip, tiny_clip):
    with pytest.raises(CacheError, match="do not mix"):
        prompt_embeddings(cache_copy, ["a photo"], model=str(other_clip))
    assert prompt_embeddings(cache_copy, ["a photo"], model=str(tiny_clip)).shape == (1, 16)


def test_weights_changed_in_place_are_refused(small_dataset, tmp_path):
    model_dir = make_clip(tmp_path / "model")
    out = tmp_path / "c.h5"
    extract(small_dataset, str(model_dir), out, dtype="float32", progress=False)
    make_clip(model_dir, seed=1)  # same folder, new weights
    with pytest.raises(CacheError, match="do not mix") as e:
        prompt_embeddings(out, ["a new prompt"])
    assert "--model FOLDER" not in str(e.value)   # the model was found, and is another: no advice for a moved one
    assert prompt_embeddings(out, ["a photo"]).shape == (1, 16)  # cached prompts still read


def test_a_tokenizer_changed_in_place_is_refused_and_extraction_re_encodes_the_prompts_keeping_the_images(
        small_dataset, tmp_path):
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from pacs_embed.cache import read_images
    model_dir = make_clip(tmp_path / "model")
    out = tmp_path / "c.h5"
    extract(small_dataset, str(model_dir), out, dtype="float32", progress=False)
    before, images = read_prompts(out), read_images(out)["embedding"]
    symbols = list(bytes_to_unicode().values())[::-1]        # same size, other token ids: other prompt vectors
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(model_dir)   # the weights (the revision) stay
    with pytest.raises(CacheError, match="tokenizer changed"):
        prompt_embeddings(out, ["a new prompt"])
    assert np.array_equal(prompt_embeddings(out, ["a photo"])[0], before["a photo"])   # cached prompts still read
    again = extract(small_dataset, str(model_dir), out, dtype="float32", progress=False)
    assert again.kept == again.n_images and np.array_equal(read_images(out)["embedding"], images)   # images kept ...
    assert not np.allclose(read_prompts(out)["a photo"], before["a photo"])          # ... prompts encoded again
    assert prompt_embeddings(out, ["a new prompt"]).shape == (1, 16)


def test_a_cache_made_before_tokenizers_were_recorded_still_takes_new_prompts(cache_copy):
    import h5py
    with h5py.File(cache_copy, "a") as f:
        del f.attrs["tokenizer_sha256"]
    assert prompt_embeddings(cache_copy, ["a brand new prompt"]).shape == (1, 16)


def test_generic_nouns_are_not_pacs_classes():
    ps = load_templates()
    assert len(ps["nouns"]) == 100 and len(set(ps["nouns"])) == 100
    assert not set(ps["nouns"]) & {"dog", "elephant", "giraffe", "guitar", "horse", "house", "person"}
    assert domain_class_prompts("a cartoon", ps["nouns"][:2], ps) == ["a cartoon of a goose", "a cartoon of a goldfish"]


def test_empty_prompt_is_a_clear_error(cache_copy):
    with pytest.raises(ValueError, match="non-empty"):
        prompt_embeddings(cache_copy, ["a photo", " "])


def test_encoding_prompts_never_loads_the_vision_model(cache_copy, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the vision tower was loaded to encode text")
    monkeypatch.setattr(transformers.CLIPVisionModelWithProjection, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", refuse)
    prompts_module._load_text_tower.cache_clear()
    assert prompt_embeddings(cache_copy, ["a never seen prompt"]).shape == (1, 16)


def test_a_local_model_moved_elsewhere_is_still_recognised_by_its_weights(cache_copy, tiny_clip, tmp_path):
    import shutil
    moved = shutil.copytree(tiny_clip, tmp_path / "moved-model")
    assert prompt_embeddings(cache_copy, ["a brand new prompt"], model=str(moved)).shape == (1, 16)


def test_a_cache_whose_model_is_gone_still_serves_its_prompts_and_names_the_ones_it_cannot_encode(cache_copy, tmp_path):
    import h5py
    from pacs_embed.errors import PacsEmbedError
    with h5py.File(cache_copy, "a") as f:
        f.attrs["model_id"] = str(tmp_path / "deleted-model")
    assert prompt_embeddings(cache_copy, ["a photo"]).shape == (1, 16)      # cached: no model needed
    with pytest.raises(PacsEmbedError, match=r"does not hold 1 prompt\(s\) asked for \('a brand new prompt'\).*"
                                             r"deleted-model' does not exist"):
        prompt_embeddings(cache_copy, ["a photo", "a brand new prompt"])


def test_when_the_cache_s_model_folder_moved_the_error_says_how_to_go_on_and_both_ways_work(small_dataset, tiny_clip,
                                                                                            tmp_path, capsys):
    import shutil
    from pacs_embed import extract
    from pacs_embed.cache import read_attrs, read_images
    from pacs_embed.cli import main
    from pacs_embed.errors import PacsEmbedError
    model = shutil.copytree(tiny_clip, tmp_path / "model")
    cache = tmp_path / "c.h5"
    extract(small_dataset, str(model), cache, dtype="float32", workers=0, progress=False)
    images = read_images(cache)["embedding"]
    moved = model.rename(tmp_path / "elsewhere")
    with pytest.raises(PacsEmbedError, match=r"does not exist.*pacs-embed prompts .*--model FOLDER.*"
                                             r"pacs-embed extract --data DATASET --model FOLDER"):
        prompt_embeddings(cache, ["a woodcut"])
    assert main(["prompts", str(cache), "a woodcut", "--model", str(moved)]) == 0     # one way: encode the prompts
    assert prompt_embeddings(cache, ["a woodcut"]).shape == (1, 16)                   # now read, no model needed
    extract(small_dataset, str(moved), cache, dtype="float32", workers=0, progress=False)   # the other: re-point
    assert read_attrs(cache)["model_id"] == str(moved.resolve())
    np.testing.assert_array_equal(read_images(cache)["embedding"], images)            # no image encoded again
    assert prompt_embeddings(cache, ["a linocut"]).shape == (1, 16)


def test_a_cache_of_vectors_no_model_made_says_only_its_prompts_can_be_used(cache_copy):
    import h5py
    from pacs_embed.errors import PacsEmbedError
    with h5py.File(cache_copy, "a") as f:
        f.attrs["model_id"], f.attrs["revision"] = "another-tool/vectors", "none"
    with pytest.raises(PacsEmbedError, match="only the prompts the cache holds can be used"):
        prompt_embeddings(cache_copy, ["a brand new prompt"])


def test_a_failed_append_leaves_the_cache_as_it_was(cache_copy):
    from pacs_embed.cache import Cache
    before = cache_copy.read_bytes()
    cache = Cache.open(cache_copy)
    wrong_width = np.zeros((1, 17), np.float32)
    with pytest.raises((TypeError, ValueError)):
        cache.append_prompts(["a broken prompt"], wrong_width, cache.model)
    assert cache_copy.read_bytes() == before
    assert not cache_copy.with_name(cache_copy.name + ".prompts").exists()
    assert not cache_copy.with_name(cache_copy.name + ".partial").exists()


def test_domain_descriptions_are_built_from_the_data_file():
    from pacs_embed.analysis.text import describe
    ps = load_templates()
    assert describe("cartoon", "paper", ps).prompts == ["a cartoon"]
    assert describe("sketch", "ensemble", ps).prompts[1] == "a sketch"
    both = describe("photo", "nouns_ensemble", ps, n_nouns=2)
    assert both.prompts[:3] == ["a photo of a goose", "a photo of a goldfish", "a photograph of a goose"]
    assert both.phrasings == ps["ensembles"]["photo"]
    assert describe("my_new_domain", "paper", ps).prompts == ["a my new domain"]
    with pytest.raises(KeyError, match="unknown description"):
        describe("photo", "nope", ps)


def test_your_domain_prompts_replace_the_packaged_ones_in_every_description():
    from pacs_embed.analysis.text import describe
    ps, mine = load_templates(), {"cartoon": ["a comic strip"]}
    assert describe("cartoon", "paper", ps, mine).prompts == ["a comic strip"]
    assert describe("cartoon", "ensemble", ps, mine).prompts == ["a comic strip"]
    assert describe("cartoon", "nouns", ps, mine, n_nouns=1).prompts == ["a comic strip of a goose"]
    assert describe("photo", "paper", ps, mine).prompts == ["a photo"]  # domains not named keep theirs


def test_a_bare_string_is_never_split_into_letters(cache_copy):
    from pacs_embed.cache import read_prompts
    with pytest.raises(TypeError, match="list of strings"):
        prompt_embeddings(cache_copy, "watercolor")
    assert "w" not in read_prompts(cache_copy)


def test_a_preloaded_text_tower_is_the_one_that_encodes_the_first_new_prompt(cache_copy, spy):
    prompts_module._load_text_tower.cache_clear()
    loads = spy("pacs_embed.models", "load_text_tower")
    prompts_module.preload_text_tower(cache_copy).join()
    assert len(loads) == 1
    assert prompt_embeddings(cache_copy, ["a prompt after the preload"]).shape == (1, 16)
    assert len(loads) == 1   # not loaded again


def test_in_a_notebook_the_preload_waits_until_no_cell_runs(cache_copy, spy, monkeypatch):
    """A background load slows the cells it runs beside (Python's lock): in a kernel it starts once the run is over."""
    import time

    class Events:   # IPython's shell.events, driven by hand
        def __init__(self):
            self.callbacks = {"pre_run_cell": [], "post_run_cell": []}

        def register(self, event, fn):
            self.callbacks[event].append(fn)

        def unregister(self, event, fn):
            self.callbacks[event].remove(fn)

        def trigger(self, event):
            for fn in list(self.callbacks[event]):
                fn(None)
    events = Events()
    monkeypatch.setattr(prompts_module, "_ipython", lambda: type("Shell", (), {"events": events})())
    monkeypatch.setattr(prompts_module, "IDLE_S", 0.2)
    prompts_module._load_text_tower.cache_clear()
    loads = spy("pacs_embed.models", "load_text_tower")
    thread = prompts_module.preload_text_tower(cache_copy)   # asked for inside a running cell
    time.sleep(0.4)
    assert loads == []                                       # that cell still runs
    events.trigger("post_run_cell")
    events.trigger("pre_run_cell")                           # the next cell of the same run, at once
    time.sleep(0.4)
    assert loads == [] and thread.is_alive()
    events.trigger("post_run_cell")                          # the run is over: the kernel is idle
    thread.join(timeout=60)
    assert len(loads) == 1 and not any(events.callbacks.values())   # loaded once; its hooks removed


def test_a_failed_preload_leaves_the_error_to_the_call_that_needs_the_tower(cache_copy, tmp_path, monkeypatch):
    import threading
    raised = []
    monkeypatch.setattr(threading, "excepthook", raised.append)
    prompts_module._load_text_tower.cache_clear()
    prompts_module.preload_text_tower(cache_copy, model=str(tmp_path / "no-such-model")).join()
    assert raised == []   # nothing printed from the background thread
    with pytest.raises(Exception, match="no-such-model"):
        prompt_embeddings(cache_copy, ["another new prompt"], model=str(tmp_path / "no-such-model"))


def test_a_preload_never_downloads_a_model(cache_copy, monkeypatch):
    import huggingface_hub
    asked = []

    def snapshot_download(model, **kwargs):
        asked.append((model, kwargs.get("local_files_only")))
        raise OSError("not in the local cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with h5py.File(cache_copy, "a") as f:
        f.attrs["model_id"], f.attrs["revision"] = "org/a-hub-model", "abc"
    prompts_module._load_text_tower.cache_clear()
    prompts_module.preload_text_tower(cache_copy).join()
    assert asked == [("org/a-hub-model", True)]


@pytest.mark.parametrize("stored", [np.nan, 0.0])
def test_a_non_finite_or_zero_prompt_vector_is_refused_by_name_and_never_stored(cache_copy, monkeypatch, stored):
    import h5py
    with h5py.File(cache_copy, "r+") as f:
        first = f["prompts/text"][0].decode()
        f["prompts/embedding"][0] = stored
    with pytest.raises(CacheError, match=f"{first!r} is not finite \\(NaN or inf\\) or all zeros"):
        prompt_embeddings(cache_copy, [first])
    import pacs_embed.models as models
    monkeypatch.setattr(models, "encode_text", lambda tower, ps: np.full((len(ps), 16), np.inf, np.float32))
    with pytest.raises(CacheError, match="'a prompt never seen'; nothing was added"):
        prompt_embeddings(cache_copy, ["a prompt never seen"])
    assert "a prompt never seen" not in read_prompts(cache_copy)


def test_a_text_side_reads_each_kind_of_prompt_only_when_something_uses_it(cache_copy, encoded):
    """A new domain prompt for Table 1 encodes that prompt alone; "{prompt} of a {class}" for every
    class (domain-aware zero-shot) is encoded when a method first reads it, every domain's at once."""
    from pacs_embed import analysis as pa
    emb, ps = pa.load(cache_copy), load_templates()
    pa.table1(emb, {"cartoon": "a comic strip"})
    assert encoded == [["a comic strip"]]
    text = pa.text_side(emb, ("paper",), {"cartoon": ["a comic book", "a comic strip"], "sketch": "a doodle"})
    assert encoded[1:] == [["a comic book", "a doodle"]]
    cartoon = text.descriptions["paper"][emb.domains.index("cartoon")]
    assert cartoon.class_vectors.shape == (len(emb.classes), 16)
    assert encoded[2:] == [[q for p in ("a comic book", "a comic strip", "a doodle")
                            for q in domain_class_prompts(p, emb.classes, ps)]]
    text.descriptions["paper"][emb.domains.index("sketch")].class_vectors
    assert len(encoded) == 3
    unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in
            (prompt_embeddings(cache_copy, domain_class_prompts(p, emb.classes, ps)) for p in ("a comic book", "a comic strip"))]
    mean = (unit[0] + unit[1]) / 2   # the class vectors of a description average its phrasings
    assert np.allclose(cartoon.class_vectors, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)


def test_class_prompts_a_cache_lacks_are_encoded_once_when_methods_on_two_threads_need_them(cache_copy, encoded):
    import h5py
    from pacs_embed import analysis as pa
    from pacs_embed.templates import class_prompts
    wanted = class_prompts(pa.load(cache_copy).classes, load_templates())
    with h5py.File(cache_copy, "a") as f:   # the class prompts taken out of the cache
        text, vectors = list(f["prompts/text"].asstr()[:]), f["prompts/embedding"][:]
        rows = [i for i, p in enumerate(text) if p not in wanted]
        for name, data in (("text", np.array([text[i] for i in rows], dtype=h5py.string_dtype())),
                           ("embedding", vectors[rows])):
            del f[f"prompts/{name}"]
            f.create_dataset(f"prompts/{name}", data=data)
    emb = pa.load(cache_copy)
    res = pa.evaluate(emb, ["gap_shift", "translate_calibrated"], seeds=range(4), workers=2, progress=False,
                      head_cache=False)
    assert encoded == [wanted]
    assert set(res.table.method) == {"in_domain", "gap_shift", "translate_calibrated"}


def test_a_text_side_pickles_with_its_vectors_and_still_encodes_new_prompts(cache_copy):
    import pickle
    from pacs_embed import analysis as pa
    emb = pa.load(cache_copy)
    text = pa.text_side(emb, ("paper", "nouns"), n_nouns=2)      # class vectors not read yet
    back = pickle.loads(pickle.dumps(text))                       # e.g. sent to a joblib worker
    np.testing.assert_array_equal(back.class_vectors, text.class_vectors)
    for how in ("paper", "nouns"):
        np.testing.assert_array_equal(back.vectors(how), text.vectors(how))
        for mine, theirs in zip(back.descriptions[how], text.descriptions[how]):
            np.testing.assert_array_equal(mine.class_vectors, theirs.class_vectors)
    assert back.encode(["a prompt sent along"]).shape == (1, 16)
    assert "a prompt sent along" in read_prompts(cache_copy)


OWN = {"photo": "real_photos", "sketch": "line_drawings", "cartoon": "comics", "art_painting": "paintings"}
OWN_PROMPTS = {"domains": {"real_photos": "a real photo", "line_drawings": "a line drawing", "comics": "a comic strip",
                           "paintings": "an oil painting"}}


def _own_dataset(small_dataset):
    for old, new in OWN.items():
        (small_dataset / old).rename(small_dataset / new)
    return small_dataset


def _paper_prompts(cache) -> list[str]:
    from pacs_embed import analysis as pa
    text = pa.text_side(pa.load(cache, check=False), ("paper",))
    return [d.prompts[0] for d in text.descriptions["paper"]]


def test_the_prompt_set_given_at_extraction_is_what_every_later_report_uses(small_dataset, tiny_clip, tmp_path):
    """A user's own dataset and prompt file: the report describes the domains with the file's prompts, never the
    folder names ("a line drawings"); `report --prompts` overrides it for one report."""
    import json
    from pacs_embed import extract
    from pacs_embed.cli import main
    data, file = _own_dataset(small_dataset), tmp_path / "prompts.json"
    file.write_text(json.dumps(OWN_PROMPTS))
    out = tmp_path / "own.h5"
    extract(data, str(tiny_clip), out, dtype="float32", workers=0, prompts_file=file, progress=False)
    assert sorted(_paper_prompts(out)) == sorted(OWN_PROMPTS["domains"].values())
    assert main(["report", str(out), "--out", str(tmp_path / "r"), "--seeds", "1", "--descriptions", "paper",
                 "--methods", "none", "translate", "--bootstrap", "20", "--no-progress"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "a line drawing" in md and "a line drawings" not in md
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"domains": {"line_drawings": "a pencil sketch"}}))
    assert main(["report", str(out), "--out", str(tmp_path / "r2"), "--seeds", "1", "--descriptions", "paper",
                 "--methods", "none", "translate", "--bootstrap", "20", "--no-progress", "--prompts", str(other)]) == 0
    assert "a pencil sketch" in (tmp_path / "r2" / "report.md").read_text()


def test_a_prompt_file_given_to_an_up_to_date_cache_becomes_its_prompt_set(small_dataset, tiny_clip, tmp_path):
    import json
    from pacs_embed import extract
    data, file = _own_dataset(small_dataset), tmp_path / "prompts.json"
    out = tmp_path / "own.h5"
    extract(data, str(tiny_clip), out, dtype="float32", workers=0, progress=False)
    assert "a line drawings" in _paper_prompts(out)                    # the folder names' generic prompts
    file.write_text(json.dumps(OWN_PROMPTS))
    s = extract(data, str(tiny_clip), out, dtype="float32", workers=0, prompts_file=file, progress=False)
    assert s.up_to_date and sorted(_paper_prompts(out)) == sorted(OWN_PROMPTS["domains"].values())
    s = extract(data, str(tiny_clip), out, dtype="float32", workers=0, progress=False)   # no file: kept
    assert s.up_to_date and "a line drawing" in _paper_prompts(out)
    extract(data, str(tiny_clip), out, dtype="float32", workers=0, force=True, progress=False)   # rebuilt: kept
    assert "a line drawing" in _paper_prompts(out)
