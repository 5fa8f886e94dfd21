"""Random damage to a cache is found, never read as data: every damaged copy gives either one line naming the file
(a CacheError) or exactly the clean numbers — no traceback, no silently different vector, name or prompt."""
import hashlib
import warnings

import numpy as np
import pytest

from pacs_embed import analysis as pa
from pacs_embed.cache import Cache, CacheError
from pacs_embed.cli import main
from pacs_embed.synthetic import make_cache


def numbers(path) -> str:
    """A digest of everything an analysis reads from the cache: names, index, vectors, prompts, failures, attributes."""
    h = hashlib.sha256()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Cache.open(path) as c:
            h.update(repr((sorted((k, str(v)) for k, v in c.attrs.items()), c.domains, c.classes, c.failures())).encode())
            for key, value in c.index.items():
                h.update(key.encode() + np.asarray(value).astype(str if key in ("path", "sha256") else np.int64).tobytes())
            for text, vector in sorted(c.prompts.items()):
                h.update(text.encode() + np.asarray(vector, np.float32).tobytes())
        emb = pa.load(path, check=False)
    h.update(emb.x.tobytes() + emb.label.tobytes())
    return h.hexdigest()


def damaged_copies(clean: bytes, seeds, folder):
    """(seed, path) of copies with 8-512 random bytes written at a random offset."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n = int(rng.integers(8, 513))
        at = int(rng.integers(0, len(clean) - n))
        data = bytearray(clean)
        data[at:at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        path = folder / f"damaged-{seed}.h5"
        path.write_bytes(bytes(data))
        yield seed, path


@pytest.fixture(scope="module")
def larger_cache(tmp_path_factory):
    """A second size: ~1,000 PACS-shaped images x 512 (every default prompt), several vector chunks."""
    return make_cache(tmp_path_factory.mktemp("larger") / "pacs-10pct.h5", "PACS", scale=0.1, prompts="default")


@pytest.mark.parametrize("which", ["mini", "larger"])
def test_random_damage_is_one_line_naming_the_file_or_exactly_the_clean_numbers(which, mini_cache, larger_cache,
                                                                                tmp_path):
    source = mini_cache if which == "mini" else larger_cache
    clean_bytes, clean = source.read_bytes(), numbers(source)
    outcomes = {"error": 0, "same": 0}
    for seed, path in damaged_copies(clean_bytes, range(120), tmp_path):
        try:
            got = numbers(path)
        except CacheError as e:
            assert str(path) in str(e) and "\n" not in str(e), (seed, str(e))
            outcomes["error"] += 1
        else:
            assert got == clean, f"seed {seed}: damage read as data without a word"
            outcomes["same"] += 1
        path.unlink()
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 120


def test_info_never_prints_a_traceback_for_a_damaged_cache(mini_cache, tmp_path, capsys):
    for seed, path in damaged_copies(mini_cache.read_bytes(), range(200, 240), tmp_path):
        rc = main(["info", str(path)])
        err = capsys.readouterr().err
        assert rc in (0, 2) and "Traceback" not in err, (seed, err[-500:])
        assert rc == 0 or str(path) in err
