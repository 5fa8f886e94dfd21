"""`pacs-embed report` writes the tidy results table (CSV + Markdown) and every figure."""
import pandas as pd

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
    for name in ["table1", "accuracy_grid", "gains", "projection"]:
        assert (figs / f"{name}.png").stat().st_size > 1000 and (figs / f"{name}.pdf").is_file()
    for name in ["summary", "gains", "methods", "table1"]:
        assert (out / f"{name}.csv").is_file()


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


def test_bad_domain_prompts_are_clear_errors(cache_copy, tmp_path, capsys):
    args = ["report", str(cache_copy), "--out", str(tmp_path), "--seeds", "1", "--no-progress"]
    assert main(args + ["--domain-prompt", "a comic strip"]) == 2
    assert 'DOMAIN="PROMPT"' in capsys.readouterr().err
    assert main(args + ["--domain-prompt", "comics=a comic strip"]) == 2
    err = capsys.readouterr().err
    assert "'comics'" in err and "domains are" in err
