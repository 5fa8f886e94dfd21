"""The HDF5 cache is the seam: the analysis side runs on a complete cache without torch or transformers."""
import subprocess
import sys

HEAVY = ("torch", "transformers", "PIL")


def loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; which of the heavy modules it imported."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in (out.splitlines() or [""])[-1].split(",") if m]


def test_importing_the_package_and_its_analysis_side_loads_no_torch_transformers_or_pil():
    assert loaded_after("import pacs_embed\nfrom pacs_embed import analysis as pa\nimport pacs_embed.cli") == []


def test_an_analysis_on_a_complete_cache_loads_no_torch_transformers_or_pil(cache_copy):
    code = (f"from pacs_embed import analysis as pa\nemb = pa.load({str(cache_copy)!r})\n"
            "pa.table1(emb)\nres = pa.evaluate(emb, seeds=[0], progress=False)\npa.gains(res)\npa.method_means(res.table)")
    assert loaded_after(code) == []


def test_the_report_command_loads_no_torch_or_transformers(cache_copy, tmp_path):
    code = (f"from pacs_embed.cli import main\nassert main(['report', {str(cache_copy)!r}, '--out', {str(tmp_path)!r}, "
            f"'--figures', {str(tmp_path)!r}, '--seeds', '1', '--descriptions', 'paper', '--no-progress']) == 0")
    assert set(loaded_after(code)) <= {"PIL"}   # matplotlib writes PNGs with Pillow; no model code


def test_a_missing_prompt_loads_the_text_tower_and_only_then(cache_copy):
    code = (f"from pacs_embed import analysis as pa\nemb = pa.load({str(cache_copy)!r})\n"
            "pa.prompt_similarity(emb, ['a prompt the cache lacks'])")
    assert "torch" in loaded_after(code)


def test_the_analysis_and_a_report_run_where_fcntl_does_not_exist(cache_copy, tmp_path):
    """Windows has no fcntl: a cache copied to a laptop must still open in the notebooks (locks are taken only to
    write, with a portable lock)."""
    code = ("import sys\nsys.modules['fcntl'] = None   # import fcntl now fails, as on Windows\n"
            f"from pacs_embed import analysis as pa\nemb = pa.load({str(cache_copy)!r})\npa.table1(emb)\n"
            f"pa.report({str(cache_copy)!r}, {str(tmp_path / 'r')!r}, seeds=[0], descriptions=['paper'], n_boot=10, "
            "progress=False)")
    loaded_after(code)   # check=True: it ran to the end
    assert (tmp_path / "r" / "report.md").is_file()


def test_a_cache_talks_to_its_store_only_so_a_second_format_is_one_module():
    """``Cache`` imports no format: it holds a ``storage.Store``; only ``hdf5.py`` imports h5py, and every cache is
    written through ``storage.write``."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "pacs_embed"
    imports = {}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "") + ":" + a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        imports[path.relative_to(root).as_posix()] = names
    assert [p for p, names in imports.items() if any(n.split(":")[0].startswith("h5py") for n in names)] == ["hdf5.py"]
    assert [p for p, names in imports.items() if any(n.endswith(":hdf5") or n.startswith("hdf5:") for n in names)] == [
        "storage.py"]


def test_a_cache_in_memory_reads_as_the_file_it_would_write(tmp_path):
    """``MemoryStore`` holds what ``storage.write`` would store: the same Cache answers, the same analysis, bit for
    bit — the in-memory format the tests use where a file would only be written to be read back."""
    import numpy as np
    from pacs_embed import analysis as pa
    from pacs_embed.cache import Cache
    from pacs_embed.synthetic import make_cache, make_store
    store = make_store(tmp_path / "mem.h5", "PACS", scale=0.01, dim=16, prompts="report")
    path = make_cache(tmp_path / "file.h5", "PACS", scale=0.01, dim=16, prompts="report")
    assert not (tmp_path / "mem.h5").exists()
    with Cache.open(store) as mem, Cache.open(path) as file:
        assert mem.attrs == file.attrs and mem.summary().replace("mem.h5", "file.h5").splitlines()[1:] == \
            file.summary().splitlines()[1:]
        assert (mem.domains, mem.classes, mem.n_images, mem.dim) == (file.domains, file.classes, file.n_images, file.dim)
        assert all(np.array_equal(mem.index[k], file.index[k]) for k in file.index)
        assert np.array_equal(mem.image_vectors(), file.image_vectors())
        assert np.array_equal(mem.image_vectors(np.arange(0, 99, 7)), file.image_vectors(np.arange(0, 99, 7)))
        assert mem.prompts.keys() == file.prompts.keys() and mem.vectors_usable() and mem.failures() == []
    here = pa.evaluate(pa.load(store), ["none", "translate"], seeds=[0], head_cache=False, progress=False)
    there = pa.evaluate(pa.load(path), ["none", "translate"], seeds=[0], head_cache=False, progress=False)
    assert here.table.equals(there.table)
