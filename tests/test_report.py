"""`pacs-embed report` writes the tidy results table (CSV + Markdown) and every figure."""
import shutil

import pandas as pd
import pytest

from pacs_embed.cache import Cache
from pacs_embed.cli import main


def test_report_writes_the_table_and_every_figure(cache_copy, tmp_path, capsys):
    out, figs = tmp_path / "results", tmp_path / "figures"
    assert main(["report", str(cache_copy), "--out", str(out), "--figures", str(figs), "--seeds", "2",
                 "--n-nouns", "5", "--bootstrap", "200", "--no-progress"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == ["source", "target", "method", "description", "seed", "accuracy", "n"]
    assert set(table.description) == {"-", "paper", "ensemble", "nouns"}
    assert table.accuracy.between(0, 1).all() and set(table.seed) == {0, 1}
    report = (out / "report.md").read_text()
    assert "## Table 1" in report and "±" in report and "| a cartoon |" in report
    assert "Difference (this − paper)" in report and "sampling" in report   # pacs-mini: PACS, fewer images
    assert "Dataset: PACS (224 of 9,991 images)" in report                  # a subset says so wherever it is named
    for name in ["table1", "accuracy_grid", "gains", "gains_pairs", "projection"]:
        assert (figs / f"{name}.png").stat().st_size > 1000 and (figs / f"{name}.pdf").is_file()
    for name in ["summary", "gains", "methods", "table1"]:
        assert (out / f"{name}.csv").is_file()
    tex = (out / "methods.tex").read_text()                       # the headline as a LaTeX table
    assert r"\begin{tabular}" in tex and r"\bottomrule" in tex and "Translate (paper)" in tex and "Project out" in tex
    assert r"\caption{" in tex and r"\label{tab:" in tex and r"\resizebox{\columnwidth}" in tex   # pastes into a paper
    assert "-0.000" not in tex and r"$\pm$" in (out / "methods_pm.tex").read_text()
    methods = pd.read_csv(out / "methods.csv")
    assert {"gain", "gain_ci_low", "gain_ci_high"} <= set(methods.columns) and methods.gain.notna().sum() > 5


def test_a_description_that_repeats_another_is_said_and_left_out_of_the_report(cache_copy, tmp_path):
    """Every domain given one prompt of yours: `ensemble` describes each as `paper` does (on a dataset whose templates
    hold no ensembles, likewise). Reported twice, it would look like a second, agreeing experiment."""
    from pacs_embed import analysis as pa
    mine = {"photo": "a picture", "art_painting": "a painting", "cartoon": "a comic", "sketch": "a drawing"}
    with pytest.warns(UserWarning, match="'ensemble' and 'paper' describe every domain with the same prompts"):
        pa.report(cache_copy, tmp_path / "r", tmp_path / "f", seeds=range(2), domain_prompts=mine, n_nouns=3,
                  n_boot=50, progress=False)
    assert set(pd.read_csv(tmp_path / "r" / "results.csv").description) == {"-", "paper", "nouns"}
    assert "Description `ensemble` is left out: it describes every domain with the same prompts as `paper`" in (
        tmp_path / "r" / "report.md").read_text()


def test_the_command_line_says_a_warning_in_one_sentence(cache_copy, tmp_path, capsys):
    mine = [f"--domain-prompt={d}=a {d} picture" for d in ("photo", "art_painting", "cartoon", "sketch")]
    assert main(["report", str(cache_copy), "--out", str(tmp_path / "r"), "--figures", str(tmp_path / "f"), "--seeds",
                 "1", "--descriptions", "paper", "ensemble", "--methods", "none", "translate", "--no-progress", *mine]) == 0
    err = capsys.readouterr().err
    assert "pacs-embed report: warning: the descriptions 'ensemble' and 'paper' describe every domain" in err
    assert ".py:" not in err and "warnings.warn" not in err   # no source file, line or code


def test_report_on_a_missing_cache_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.h5"), "--out", str(tmp_path)]) == 2
    assert "pacs-embed extract" in capsys.readouterr().err


def test_domain_prompts_from_the_command_line_reach_the_report(cache_copy, tmp_path):
    out = tmp_path / "results"
    assert main(["report", str(cache_copy), "--out", str(out), "--figures", str(tmp_path / "f"), "--seeds", "1",
                 "--descriptions", "paper", "--methods", "none", "translate", "--domain-prompt", "cartoon=a comic strip",
                 "--domain-prompt", "cartoon=a comic", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "cartoon: a comic strip | a comic" in report and "| a comic strip \\| a comic |" not in report
    assert set(pd.read_csv(out / "results.csv").method) == {"none", "translate", "in_domain"}
    assert "ran one seed, so there is no interval over seeds" in report


def test_a_report_over_several_seeds_does_not_warn_of_one(cache_copy, tmp_path):
    out = tmp_path / "results"
    assert main(["report", str(cache_copy), "--out", str(out), "--figures", str(tmp_path / "f"), "--seeds", "2",
                 "--descriptions", "paper", "--methods", "none", "--bootstrap", "10", "--no-progress"]) == 0
    assert "no interval over seeds" not in (out / "report.md").read_text()


def test_bad_domain_prompts_are_clear_errors(cache_copy, tmp_path, capsys):
    args = ["report", str(cache_copy), "--out", str(tmp_path), "--seeds", "1", "--no-progress"]
    assert main(args + ["--domain-prompt", "a comic strip"]) == 2
    assert 'DOMAIN="PROMPT"' in capsys.readouterr().err
    assert main(args + ["--domain-prompt", "comics=a comic strip"]) == 2
    err = capsys.readouterr().err
    assert "'comics'" in err and "domains are" in err


@pytest.mark.parametrize("args, says", [
    (["--seeds", "0"], "--seeds 0: give a whole number, 1 or more"),
    (["--n-nouns", "0"], "--n-nouns 0: give a whole number, 1 or more"),
    (["--bootstrap", "0"], "--bootstrap 0: give a whole number, 1 or more"),
    (["--out", "{file}"], "results folder '{file}' is a file, not a folder"),
    (["--figures", "{file}"], "figures folder '{file}' is a file, not a folder"),
    (["--figures", "{file}/figures"], "cannot make the output folder '{file}/figures'"),   # before the heads
])
def test_bad_report_options_are_clear_errors_before_any_work(cache_copy, tmp_path, capsys, args, says):
    file = tmp_path / "a-file"
    file.write_text("x")
    args = [a.replace("{file}", str(file)) for a in args]
    base = ["report", str(cache_copy), "--out", str(tmp_path / "r"), "--figures", str(tmp_path / "f"), "--no-progress"]
    assert main(base + args) == 2
    assert says.replace("{file}", str(file)) in capsys.readouterr().err
    assert not (tmp_path / "r" / "results.csv").exists()


def test_several_caches_are_reported_side_by_side(small_dataset, tiny_clip, tmp_path):
    """Two random CLIPs of different widths: one report each, and one table + figure with both."""
    from tiny_clip import WIDE, make_clip
    from pacs_embed import extract
    caches = {"narrow": tiny_clip, "wide": make_clip(tmp_path / "wide-clip", WIDE)}
    for name, model in caches.items():
        extract(small_dataset, str(model), tmp_path / f"{name}.h5", dtype="float32", workers=0, progress=False)
    out, figs = tmp_path / "results", tmp_path / "figures"
    assert main(["report", str(tmp_path / "narrow.h5"), str(tmp_path / "wide.h5"), "--out", str(out), "--figures",
                 str(figs), "--seeds", "2", "--descriptions", "paper", "--bootstrap", "50", "--no-progress"]) == 0
    table = pd.read_csv(out / "study.csv")
    assert list(table.dataset) == ["PACS (56 of 9,991 images)"] * 2                 # a subset says so
    labels = {}
    for name in caches:
        with Cache(tmp_path / f"{name}.h5") as c:
            labels[name] = (c.model_label(), c.model_folder())
    assert list(table.model) == [labels["narrow"][0], labels["wide"][0]]             # the models' identities
    assert str(caches["wide"]) in labels["wide"][0] and "@" in labels["wide"][0]
    for name, (_, row) in zip(["narrow", "wide"], table.iterrows()):
        folder = labels[name][1]
        assert (out / "PACS" / folder / "report.md").is_file() and (figs / "PACS" / folder / "gains.png").is_file()
        means = pd.read_csv(out / "PACS" / folder / "methods.csv")        # the model's own report agrees
        none = means[means.method == "none"].iloc[0]
        translate = means[(means.method == "translate") & (means.description == "paper")].iloc[0]
        others = means[~means.method.isin(["none", "zeroshot", "zeroshot_domain", "in_domain"])]
        best = others[~((others.method == "translate") & (others.description == "paper"))].iloc[0]   # never itself
        assert row["none"] == pytest.approx(none["mean"]) and row["none_ci_low"] == pytest.approx(none["ci_low"])
        assert row["translate"] == pytest.approx(translate["mean"])
        assert row["best_method"] == f"{best.method} / {best.description}" and row["best"] == pytest.approx(best["mean"])
    assert (figs / "study.png").stat().st_size > 1000 and f"| {labels['narrow'][0]} |" in (out / "study.md").read_text()
    assert "\\begin{tabular}" in (out / "study.tex").read_text()


def test_a_study_is_refused_before_any_work_when_a_cache_is_missing_or_named_twice(cache_copy, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["report", str(cache_copy), str(tmp_path / "missing.h5"), "--out", str(out), "--seeds", "1"]) == 2
    assert "missing.h5" in capsys.readouterr().err and not out.exists()          # refused before any work
    assert main(["report", str(cache_copy), str(cache_copy.parent / "." / cache_copy.name), "--out", str(out)]) == 2
    assert "twice" in capsys.readouterr().err and not out.exists()                # the same cache, once


def test_a_report_run_twice_gives_byte_identical_tables_whatever_the_blas_threads(cache_copy, tmp_path):
    """Heads are a function of their inputs (tests/test_heads.py): two reports of one cache, one with BLAS on one
    thread and one with four, write the same bytes."""
    import os
    import subprocess
    import sys
    outs = []
    for threads in ("1", "4"):
        out = tmp_path / f"run-{threads}"
        subprocess.run([sys.executable, "-m", "pacs_embed", "report", str(cache_copy), "--out", str(out), "--seeds", "2",
                        "--n-nouns", "5", "--bootstrap", "100", "--no-head-cache", "--no-progress"], check=True,
                       capture_output=True, env={**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
                                                  "MPLBACKEND": "Agg"})
        outs.append(out)
    for name in ("results.csv", "gains.csv", "summary.csv", "methods.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_latex_escapes_every_special_character_and_never_prints_minus_zero():
    from pacs_embed.analysis.reporting import number, tex
    assert tex(r"a_b\c{d}~^&%#$") == (r"a\_b\textbackslash{}c\{d\}\textasciitilde{}\textasciicircum{}\&\%\#\$")
    assert number(-0.0001) == "0.000" and number(-0.0001, sign=True) == "+0.000" and number(-0.0006) == "-0.001"
