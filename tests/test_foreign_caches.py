"""Caches written by other tools are read by what each array must be: a malformed one is a one-line error naming the
file and the array; one whose data is fine, however it is typed, gives the same results as a clean cache."""
import h5py
import numpy as np
import pytest

from pacs_embed import analysis as pa
from pacs_embed.cache import Cache, CacheError


def _replace(f, name, data, **kw):
    """The array as another tool would write it: no pacs_embed checksum beside it (a changed array that kept its
    checksum is damage: tests/test_damage.py)."""
    attrs = {k: v for k, v in f[name].attrs.items() if k != "sha256"}
    del f[name]
    f.create_dataset(name, data=data, **kw).attrs.update(attrs)


def _as(dtype):
    return lambda f, name: _replace(f, name, f[name][:].astype(dtype))


def _strings_as_ints(f, name):
    _replace(f, name, np.arange(f[name].shape[0]))


def _first_twice(f, name):
    v = f[name].asstr()[:] if h5py.check_string_dtype(f[name].dtype) else f[name][:]
    v[1] = v[0]
    _replace(f, name, v.astype(object) if v.dtype == object else v, **({"dtype": h5py.string_dtype()} if v.dtype == object else {}))


def _fraction(f, name):
    _replace(f, name, f[name][:].astype(np.float64) + 0.7)


def _bad_value(value):
    def damage(f, name):
        v = f[name][:].astype(np.int64)
        v[5] = value
        _replace(f, name, v)
    return damage


def _nonfinite(value):
    def damage(f, name):
        v = f[name][:]
        v[3, 2] = value
        _replace(f, name, v)
    return damage


def _drop_attr(f, name):
    del f.attrs[name]


def _drop(f, name):
    del f[name]


MALFORMED = [   # (array or attribute, damage, words the error must hold)
    ("images/ok", _bad_value(2), "/images/ok must hold booleans"),
    ("images/ok", _as(np.float32), "/images/ok must hold booleans"),
    ("images/domain", _fraction, "/images/domain must hold integers"),
    ("images/label", _fraction, "/images/label must hold integers"),
    ("images/domain", _bad_value(9), "/images/domain holds index 9 at row 5"),
    ("images/label", _bad_value(-1), "/images/label holds index -1 at row 5"),
    ("images/size", _as(np.float64), "/images/size must hold integers"),
    ("images/mtime_ns", _as(np.float64), "/images/mtime_ns must hold integers"),
    ("images/path", _strings_as_ints, "/images/path must hold strings"),
    ("images/sha256", _strings_as_ints, "/images/sha256 must hold strings"),
    ("domains", _strings_as_ints, "/domains must hold strings"),
    ("classes", _strings_as_ints, "/classes must hold strings"),
    ("prompts/text", _strings_as_ints, "/prompts/text must hold strings"),
    ("images/path", _first_twice, "/images/path holds .* twice"),
    ("classes", _first_twice, "/classes names .* twice"),
    ("prompts/text", _first_twice, "/prompts holds the prompt .* twice, with two different vectors"),
    ("images/embedding", _as(np.int32), "/images/embedding must hold floating-point vectors"),
    ("prompts/embedding", _as(np.int32), "/prompts/embedding must hold floating-point vectors"),
    ("images/embedding", _nonfinite(np.nan), "not finite"),
    ("images/embedding", _nonfinite(np.inf), "not finite"),
    ("model_id", _drop_attr, "no attribute model_id"),
    ("revision", _drop_attr, "no attribute revision"),
    ("images/label", _drop, "lacks /images/label"),
    ("failures/reason", _drop, "lacks /failures/reason"),
]


@pytest.mark.parametrize("name, damage, words", MALFORMED, ids=[f"{n}-{d.__name__}" for n, d, _ in MALFORMED])
def test_a_malformed_cache_is_a_one_line_error_naming_the_file_and_the_array(cache_copy, name, damage, words):
    with h5py.File(cache_copy, "a") as f:
        damage(f, name)
    with pytest.raises(CacheError, match=words) as e:
        pa.load(cache_copy)
    assert str(cache_copy) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_ok_flags_stored_as_integers_are_flags_not_row_indices(cache_copy, mini_cache, dtype):
    with h5py.File(cache_copy, "a") as f:
        _as(dtype)(f, "images/ok")
    a, b = pa.load(cache_copy, check=False), pa.load(mini_cache, check=False)
    np.testing.assert_array_equal(a.x, b.x)
    assert len(np.unique(a.x, axis=0)) == len(a.x)          # not 224 copies of one image


def test_other_typings_of_good_data_give_the_same_results(cache_copy, mini_cache):
    """int64 indices, float64 vectors, fixed-size arrays, a repeated prompt with the same vector: all fine."""
    with h5py.File(cache_copy, "a") as f:
        _as(np.int64)(f, "images/domain")
        _as(np.int32)(f, "images/label")
        _as(np.float64)(f, "images/embedding")
        _as(np.float64)(f, "prompts/embedding")
        text, vec = f["prompts/text"].asstr()[:].astype(object), f["prompts/embedding"][:]
        _replace(f, "prompts/text", np.concatenate([text, text[:1]]), dtype=h5py.string_dtype())
        _replace(f, "prompts/embedding", np.concatenate([vec, vec[:1]]))
    a, b = pa.load(cache_copy, check=False), pa.load(mini_cache, check=False)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-6)
    assert (a.label == b.label).all() and (a.domain == b.domain).all()
    pd_a, pd_b = pa.table1(a)["reproduced"], pa.table1(b)["reproduced"]
    np.testing.assert_allclose(pd_a.values, pd_b.values, rtol=1e-5)


def test_a_cache_is_opened_once_per_report(mini_cache, tmp_path, monkeypatch):
    opened = []
    real = h5py.File

    def counting(name, *args, **kwargs):
        opened.append(str(name))
        return real(name, *args, **kwargs)
    monkeypatch.setattr(h5py, "File", counting)
    pa.report(mini_cache, tmp_path / "r", tmp_path / "f", seeds=range(2), descriptions=["paper"], n_boot=10,
              head_cache=False, progress=False)
    assert opened.count(str(mini_cache)) == 1, opened


def test_the_cache_object_validates_once_and_stands_for_its_path(mini_cache):
    from pathlib import Path
    cache = Cache.open(mini_cache)
    assert Cache.open(cache) is cache and Path(cache) == mini_cache and str(cache) == str(mini_cache)
    assert cache.domains == ["art_painting", "cartoon", "photo", "sketch"] and len(cache.classes) == 7
    assert "PACS: 224 of 9,991 images" in cache.dataset()
    import pickle
    assert pickle.loads(pickle.dumps(cache)).path == cache.path
    cache.close()


def _external_link(f, other):
    data = f["images/embedding"][:]
    with h5py.File(other, "w") as o:
        o.create_dataset("e", data=data[::-1])
    del f["images/embedding"]
    f["images/embedding"] = h5py.ExternalLink(str(other), "e")


def _soft_link(f, other):
    del f["images/label"]
    f["images/label"] = h5py.SoftLink("/images/domain")           # labels read from another array


def _virtual(f, other):
    data = f["images/embedding"][:]
    with h5py.File(other, "w") as o:
        o.create_dataset("e", data=data)
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    source = h5py.VirtualSource(str(other), "e", shape=data.shape)
    for i in range(len(data)):                                   # the rows reversed
        layout[i] = source[len(data) - 1 - i]
    del f["images/embedding"]
    f["images"].create_virtual_dataset("embedding", layout)


def _external_storage(f, other):
    n = f["failures/path"].shape[0]
    other.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 8)
    del f["failures/path"]
    f["failures"].create_dataset("path", shape=(max(n, 1),), dtype="S8", external=[(str(other), 0, 8 * max(n, 1))])


def _extra_object(f, other):
    f.create_group("mine").create_dataset("notes", data=np.arange(3))


POINTING = {"an external link": (_external_link, "external link"), "a soft link": (_soft_link, "soft link"),
            "a virtual dataset": (_virtual, "virtual dataset"), "external storage": (_external_storage, "external file"),
            "an object the layout does not name": (_extra_object, "/mine")}


@pytest.mark.parametrize("case", list(POINTING))
def test_a_cache_that_points_at_other_files_or_holds_other_objects_is_refused(cache_copy, tmp_path, case, capsys):
    from pacs_embed.cli import main
    damage, words = POINTING[case]
    with h5py.File(cache_copy, "a") as f:
        damage(f, tmp_path / "other.h5")
    with pytest.raises(CacheError, match=words) as e:
        Cache.open(cache_copy)
    assert str(cache_copy) in str(e.value) and "\n" not in str(e.value)
    assert main(["info", str(cache_copy)]) == 2
    assert "root:x" not in capsys.readouterr().out
