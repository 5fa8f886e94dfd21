"""Every notebook runs top to bottom from a cache alone, and records values we can check."""
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from pacs_embed.cache import read_images, read_prompts

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def run_notebook(name, tmp_path, **parameters):
    """Execute a notebook with a cell of overrides after its 'parameters' cell (as papermill does)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items())))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return json.loads(Path(parameters["record_to"]).read_text())


@pytest.fixture
def params(cache_copy, tmp_path):
    return dict(cache=str(cache_copy), figures=str(tmp_path / "figures"), record_to=str(tmp_path / "rec.json"))


def test_notebooks_are_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name


def test_table1_notebook(params, tmp_path, cache_copy):
    rec = run_notebook("01_table1.ipynb", tmp_path, **params)
    a, prompts = read_images(cache_copy), read_prompts(cache_copy)
    x = a["embedding"] / np.linalg.norm(a["embedding"], axis=1, keepdims=True)
    t = prompts["a cartoon"] / np.linalg.norm(prompts["a cartoon"])
    by_hand = (x[np.array(a["domain"]) == a["domains"].index("sketch")] @ t).mean()
    assert np.isclose(rec["table1"]["sketch"]["a cartoon"], by_hand, atol=1e-6)
    assert np.isclose(rec["table1_difference"]["sketch"]["a cartoon"], by_hand - 0.204, atol=1e-6)
    assert (tmp_path / "figures" / "table1.png").is_file() and (tmp_path / "figures" / "table1.pdf").is_file()


def test_logistic_heads_notebook(params, tmp_path):
    rec = run_notebook("02_logistic_heads.ipynb", tmp_path, **params, seeds=2)["heads"]
    assert len(rec) == 4 * 3 + 4  # every pair, and in-domain per source
    assert all(r["seeds"] == 2 and 0 <= r["mean"] <= 1 for r in rec)
    assert {r["method"] for r in rec} == {"none", "in_domain"}


def test_translated_inference_notebook(params, tmp_path):
    rec = run_notebook("03_translated_inference.ipynb", tmp_path, **params, seeds=2)
    assert {m["method"] for m in rec["methods"]} == {"none", "translate", "translate_renorm", "zeroshot", "zeroshot_domain"}
    assert len(rec["gains"]) == 12 * 4 and all(g["ci_low"] <= g["gain"] <= g["ci_high"] for g in rec["gains"])
    assert len(rec["sweep"]) == 12 and all(r["oracle"] >= r["step1"] for r in rec["sweep"])   # how far to translate
    for fig in ["translated_gains", "translated_accuracy", "projection", "step_sweep"]:
        assert (tmp_path / "figures" / f"{fig}.png").is_file()


def test_prompts_and_operators_notebook_encodes_new_prompts_on_the_fly(params, tmp_path, cache_copy):
    assert "a pixel-art sprite" not in read_prompts(cache_copy)
    rec = run_notebook("04_prompts_and_operators.ipynb", tmp_path, **params, seeds=2,
                       my_prompts=["a photo", "a pixel-art sprite"], n_nouns=5, method_descriptions=["paper", "nouns"],
                       domain_prompts={"cartoon": ["a comic strip", "a comic"]})
    assert set(rec["my_prompts"]["sketch"]) == {"a photo", "a pixel-art sprite"}
    prompts = read_prompts(cache_copy)
    assert "a pixel-art sprite" in prompts and "a comic strip of a goose" in prompts and "a comic of a dog" in prompts
    assert rec["described"]["cartoon"] == ["a comic strip", "a comic"] and rec["described"]["photo"] == ["a photo"]
    described = {(r["description"], r["described"]) for r in rec["descriptions"]}
    assert described == {(how, d) for how in ["paper", "ensemble", "nouns"]
                         for d in ["art_painting", "cartoon", "photo", "sketch"]}
    methods = {(m["method"], m["description"]) for m in rec["methods"]}
    assert {("half_translate", "nouns"), ("translated_centroids", "paper"), ("augment", "nouns"),
            ("gap_shift", "paper"), ("project_out", "nouns"), ("none", "-")} <= methods
    assert not any(how == "ensemble" for _, how in methods)   # compared by similarity only, as asked


def test_study_notebook_over_three_datasets_and_two_models(tmp_path):
    from pacs_embed.synthetic import make_cache
    caches = [str(make_cache(tmp_path / "caches" / f"{d}-{m}" / f"model-{m}.h5", d, scale=0.004, dim=16, seed=m,
                             prompts="report", descriptions=("paper",)))
              for d in ("PACS", "VLCS", "TerraIncognita") for m in (0, 1)]
    rec = run_notebook("05_study.ipynb", tmp_path, caches=caches, out=str(tmp_path / "study"),
                       figures=str(tmp_path / "figures"), record_to=str(tmp_path / "rec.json"), seeds=2,
                       descriptions=["paper"])
    rows = rec["study"]
    model = "synthetic/random@seed-{}"   # models by their identity; subsets say how many images they hold
    assert [(r["dataset"].split(" (")[0], r["model"]) for r in rows] == [
        (d, model.format(m)) for d in ("PACS", "VLCS", "TerraIncognita", "average") for m in (0, 1)]
    assert rows[0]["dataset"].startswith("PACS (") and "of 9,991 images)" in rows[0]["dataset"]
    for r in rows[:6]:
        assert 0 <= r["none"] <= 1 and r["none_ci_low"] <= r["none"] <= r["none_ci_high"] and r["best_method"]
    for m in (0, 1):   # DomainBed's Avg: the plain mean over datasets
        mine = [r["translate"] for r in rows[:6] if r["model"] == model.format(m)]
        assert np.isclose(rows[6 + m]["translate"], np.mean(mine))
    for f in ("study.csv", "study.md", "study.tex", "VLCS/synthetic__random@seed-0/report.md"):
        assert (tmp_path / "study" / f).is_file()
    assert (tmp_path / "figures" / "study.png").is_file()


def test_every_notebook_re_runs_with_changed_parameters_into_a_new_run_folder(cache_copy, tmp_path):
    """As a researcher edits a parameter and runs again: the default folders are new each run, never refused."""
    from pacs_embed.synthetic import make_cache
    work = tmp_path / "notebooks"
    work.mkdir()
    caches = [str(make_cache(tmp_path / "c" / f"m{m}.h5", "PACS", scale=0.004, dim=16, seed=m, prompts="report",
                             descriptions=("paper",))) for m in (0, 1)]
    for seeds in (1, 2):
        rec = tmp_path / f"rec-{seeds}.json"
        run_notebook("05_study.ipynb", work, caches=caches, record_to=str(rec), seeds=seeds, descriptions=["paper"])
        run_notebook("01_table1.ipynb", work, cache=str(cache_copy), record_to=str(rec))
        run_notebook("02_logistic_heads.ipynb", work, cache=str(cache_copy), record_to=str(rec), seeds=seeds)
    studies = [p for p in (tmp_path / "results" / "study").iterdir() if p.name != "latest"]
    assert len(studies) == 2 and all((p / "study.csv").is_file() for p in studies)
    runs = [p for p in (tmp_path / "results" / "02_logistic_heads").iterdir() if p.name != "latest"]
    assert len(runs) == 2
    record = json.loads((runs[0] / "run.json").read_text())
    assert record["parameters"]["seeds"] in (1, 2) and "ipykernel" not in record["command"]
