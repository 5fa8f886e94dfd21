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
