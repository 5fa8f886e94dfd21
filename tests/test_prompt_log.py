"""Prompts added after extraction go to an append-only log beside the cache (<cache>.prompts): an append writes only
what it adds, the image file is never rewritten, and a writer killed at any byte leaves the old prompts or the new."""
import numpy as np
import pytest

from pacs_embed import prompt_embeddings
from pacs_embed.cache import Cache, CacheError, read_prompts
from pacs_embed.prompt_log import PromptLog, encode, log_path


def vectors(n, dim=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_an_append_writes_only_what_it_adds_and_never_touches_the_image_file(cache_copy):
    before = cache_copy.read_bytes()
    cache = Cache.open(cache_copy)
    assert cache.append_prompts(["a woodcut", "a mosaic"], vectors(2), cache.model) == 2
    assert cache_copy.read_bytes() == before                                  # the HDF5 file is as it was
    size = log_path(cache_copy).stat().st_size
    assert size < 2 * 16 * 4 + 1000                                          # two vectors and a header, no copy
    assert cache.append_prompts(["a woodcut"], vectors(1), cache.model) == 0  # held already: nothing written
    assert log_path(cache_copy).stat().st_size == size
    assert {"a woodcut", "a mosaic"} <= read_prompts(cache_copy).keys()       # another reader sees them


def test_a_torn_record_at_any_byte_reads_as_the_old_prompts_and_the_next_append_cuts_it_off(cache_copy):
    cache = Cache.open(cache_copy)
    cache.append_prompts(["first"], vectors(1), cache.model)
    log = log_path(cache_copy)
    committed = log.read_bytes()
    record = encode(["second"], vectors(1, seed=1), cache.model)
    for cut in range(len(record)):                                            # kill -9 after any byte of the write
        log.write_bytes(committed + record[:cut])
        have = read_prompts(cache_copy)
        assert "first" in have and "second" not in have
    log.write_bytes(committed + record[:len(record) // 2])
    fresh = Cache.open(cache_copy)
    fresh.append_prompts(["third"], vectors(1, seed=2), fresh.model)
    assert {"first", "third"} <= read_prompts(cache_copy).keys() and "second" not in read_prompts(cache_copy)


def test_an_open_cache_sees_prompts_another_process_appends(cache_copy):
    mine, other = Cache.open(cache_copy), Cache.open(cache_copy)
    assert "a linocut" not in mine.prompts
    other.append_prompts(["a linocut"], vectors(1), other.model)
    assert "a linocut" in mine.prompts


def test_prompts_of_another_model_in_the_log_are_never_used(cache_copy):
    log = PromptLog(log_path(cache_copy))
    log.append(["a stale prompt"], vectors(1), {"model_id": "another/model", "revision": "x", "tokenizer_sha256": None})
    assert "a stale prompt" not in read_prompts(cache_copy)
    cache = Cache.open(cache_copy)
    cache.append_prompts(["a fresh prompt"], vectors(1), cache.model)        # the stale record is dropped
    assert [r.texts for r in PromptLog(log_path(cache_copy)).read_new()] == [["a fresh prompt"]]


def test_the_same_prompt_with_two_vectors_is_refused_naming_the_file(cache_copy):
    held = next(iter(read_prompts(cache_copy)))
    cache = Cache.open(cache_copy)
    PromptLog(log_path(cache_copy)).append([held], vectors(1), cache.model)  # a tool that appended blindly
    with pytest.raises(CacheError, match=r"mini\.h5\.prompts.*twice, with two different vectors"):
        read_prompts(cache_copy)


def test_re_extraction_folds_the_log_into_the_new_file(cache_copy, pacs_mini, tiny_clip):
    from pacs_embed import extract
    prompt_embeddings(cache_copy, ["a folded prompt"])
    assert log_path(cache_copy).exists()
    extract(pacs_mini, tiny_clip, cache_copy, dtype="float32", workers=0, progress=False, force=True)
    assert not log_path(cache_copy).exists() and "a folded prompt" in read_prompts(cache_copy)


def test_a_cache_replaced_while_its_embeddings_are_loaded_is_detected(cache_copy, tmp_path):
    from pacs_embed import analysis as pa
    emb = pa.load(cache_copy)
    replacement = tmp_path / "other.h5"
    replacement.write_bytes(cache_copy.read_bytes())
    replacement.replace(cache_copy)                                           # re-extracted meanwhile
    with pytest.raises(CacheError, match="was replaced .* after it was opened"):
        pa.prompt_similarity(emb, ["a prompt asked after the swap"])


def _five_records(cache_copy):
    cache = Cache.open(cache_copy)
    for i in range(5):
        cache.append_prompts([f"p{i}a", f"p{i}b"], vectors(2, seed=i), cache.model)
    return log_path(cache_copy)


@pytest.mark.parametrize("where", ["a vector byte", "the length field", "the magic"])
def test_damage_in_the_middle_hides_no_later_record_and_the_next_append_loses_none(cache_copy, where):
    from pacs_embed.prompt_log import PromptLogWarning
    log = _five_records(cache_copy)
    data = bytearray(log.read_bytes())
    first = len(data) // 5                                   # records are the same size: record 1 of 0-4 starts here
    at = {"a vector byte": first + len(data) // 10, "the length field": first + 12, "the magic": first + 2}[where]
    data[at] ^= 0x10
    log.write_bytes(bytes(data))
    with pytest.warns(PromptLogWarning, match="damaged"):
        have = read_prompts(cache_copy)
    assert {f"p{i}{s}" for i in (0, 2, 3, 4) for s in "ab"} <= have.keys() and "p1a" not in have
    cache = Cache.open(cache_copy)
    with pytest.warns(PromptLogWarning, match="set aside"):
        cache.append_prompts(["p5"], vectors(1, seed=9), cache.model)
    after = read_prompts(cache_copy)
    assert {f"p{i}{s}" for i in (0, 2, 3, 4) for s in "ab"} | {"p5"} <= after.keys()
    kept = list(log.parent.glob(log.name + ".damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(data)       # the damaged bytes themselves, kept


def test_a_users_own_file_at_the_log_s_name_is_set_aside_not_overwritten(cache_copy):
    log = log_path(cache_copy)
    notes = "my notes\n" * 1000
    log.write_text(notes)
    cache = Cache.open(cache_copy)
    with pytest.warns(UserWarning):
        cache.append_prompts(["a woodcut"], vectors(1), cache.model)
    assert [p.read_text() for p in log.parent.glob(log.name + ".damaged-*")] == [notes]
    assert "a woodcut" in read_prompts(cache_copy)


@pytest.mark.parametrize("dangling", [False, True])
def test_the_log_is_never_read_or_written_through_a_link(cache_copy, tmp_path, dangling):
    from pacs_embed.prompt_log import PromptLogError
    target = tmp_path / "elsewhere" / "notes.txt"
    target.parent.mkdir()
    if not dangling:
        target.write_text("my notes\n" * 1000)
    log_path(cache_copy).symlink_to(target)
    cache = Cache.open(cache_copy)
    with pytest.raises(PromptLogError, match="symbolic link"):
        cache.append_prompts(["a woodcut"], vectors(1), cache.model)
    assert target.exists() != dangling and (dangling or target.read_text() == "my notes\n" * 1000)
    assert log_path(cache_copy).is_symlink()
    with pytest.raises(CacheError, match=str(log_path(cache_copy))):
        read_prompts(cache_copy)


def _contradict(cache_path):
    """A log record giving a prompt the file holds another vector (as a log written for another file would)."""
    cache = Cache.open(cache_path)
    held = next(iter(cache.prompts))
    PromptLog(log_path(cache_path)).append([held, "a mosaic"], vectors(2, dim=cache.dim, seed=5), cache.model)
    PromptLog(log_path(cache_path)).append(["a woodcut"], vectors(1, dim=cache.dim, seed=6), cache.model)   # a good one
    return held


def test_a_contradicting_log_is_named_and_the_advised_repair_works(cache_copy, capsys):
    from pacs_embed.cli import main
    held = _contradict(cache_copy)
    assert main(["info", str(cache_copy)]) == 2
    err = capsys.readouterr().err
    assert "twice" in err and f"pacs-embed prompts {cache_copy} --repair" in err
    assert main(["prompts", str(cache_copy), "--repair"]) == 0
    assert "1 contradicting prompt record(s) set aside" in capsys.readouterr().out
    assert main(["info", str(cache_copy)]) == 0
    have = read_prompts(cache_copy)
    assert "a woodcut" in have and "a mosaic" not in have and held in have          # the good record is kept
    assert len(list(cache_copy.parent.glob(cache_copy.name + ".prompts.damaged-*"))) == 1


def test_extract_force_rebuilds_a_cache_whose_log_contradicts_it(cache_copy, pacs_mini, tiny_clip):
    from pacs_embed import extract
    _contradict(cache_copy)
    s = extract(pacs_mini, str(tiny_clip), cache_copy, dtype="float32", batch_size=8, workers=0, force=True,
                progress=False)
    assert s.n_embedded == 224 and Cache.open(cache_copy).prompts                    # usable again
