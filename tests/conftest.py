import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

# A runner that starts the tests in the background (`cmd &` without job control) has SIGINT ignored, which every
# child inherits through exec: the Ctrl-C tests' processes would never see a KeyboardInterrupt. Give it back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
PACS_MINI = Path(os.environ.get("PACS_MINI", TESTS / "data" / "pacs-mini")).resolve()   # shipped with the tests

from tiny_clip import make_clip  # noqa: E402


@pytest.fixture(scope="session")
def pacs_mini() -> Path:
    if not (PACS_MINI / "MANIFEST.tsv").is_file():
        pytest.fail(f"the real-image sample is missing: expected {PACS_MINI} (tests/data/pacs-mini, part of the repository)")
    return PACS_MINI


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory) -> Path:
    """Same architecture, other weights: a different model revision."""
    return make_clip(tmp_path_factory.mktemp("other-clip"), seed=1)


@pytest.fixture(scope="session")
def mini_cache(tmp_path_factory, pacs_mini, tiny_clip) -> Path:
    """pacs-mini extracted once with the tiny CLIP (float32, batches of 8) — read-only for tests."""
    from pacs_embed import extract
    out = tmp_path_factory.mktemp("cache") / "mini.h5"
    extract(pacs_mini, str(tiny_clip), out, dtype="float32", batch_size=8, workers=0, progress=False)
    return out


@pytest.fixture
def cache_copy(mini_cache, tmp_path) -> Path:
    """A private, writable copy of the pacs-mini cache."""
    return Path(shutil.copy(mini_cache, tmp_path / "mini.h5"))


def copy_sample(pacs_mini: Path, root: Path, per_class: int = 2) -> Path:
    """The first ``per_class`` images of each domain x class of pacs-mini, copied into ``root``."""
    for cls_dir in sorted(pacs_mini.glob("*/*")):
        for f in sorted(cls_dir.iterdir())[:per_class]:
            dest = root / cls_dir.parent.name / cls_dir.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
            dest.chmod(dest.stat().st_mode | 0o200)   # the sample may be read-only; tests change their copies
    return root


@pytest.fixture
def small_dataset(pacs_mini, tmp_path) -> Path:
    """Two images per domain x class of pacs-mini, copied so a test may change them."""
    return copy_sample(pacs_mini, tmp_path / "data")


@pytest.fixture
def spy(monkeypatch):
    """spy("pacs_embed.models", "encode_text") -> list that receives the 2nd argument of every call."""
    import importlib

    def install(module_name, attr):
        module = importlib.import_module(module_name)
        real, calls = getattr(module, attr), []

        def wrapper(first, second, *args, **kwargs):
            calls.append(second)
            return real(first, second, *args, **kwargs)
        monkeypatch.setattr(module, attr, wrapper)
        return calls
    return install


def resign(f) -> None:
    """Recompute the checksum beside every table of an open cache, as pacs_embed's writer would have: for tests that
    edit a cache in place to make a *valid* cache of another content (an edit that keeps the old checksum is damage,
    and is refused: tests/test_damage.py)."""
    import h5py
    from pacs_embed.hdf5 import DIGEST, _content_digest

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and DIGEST in obj.attrs:
            values = obj.asstr()[:].tolist() if h5py.check_string_dtype(obj.dtype) else obj[:]
            obj.attrs[DIGEST] = _content_digest(values)
    f.visititems(visit)
