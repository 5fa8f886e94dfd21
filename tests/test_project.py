"""The project's set-up files agree with each other and with the README."""
import re
try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: pytest's own TOML parser
    import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def conda_pip_requirements():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "- pip:")
    reqs = [l.strip()[2:].strip() for l in lines[start + 1:] if l.strip().startswith("- ")]
    return {r for r in reqs if r != "-e ."}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0]


def test_environment_yml_lists_the_same_dependencies_as_pyproject_and_pins_torch_as_the_makefile():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    conda = conda_pip_requirements()
    assert {_name(r) for r in conda} == {_name(r) for r in wanted}
    assert conda - wanted == {"torch==2.13.0"}                      # the one pin: the Makefile's
    assert re.search(r"^TORCH \?= torch==2\.13\.0$", (ROOT / "Makefile").read_text(), flags=re.M)


def test_ci_runs_the_test_command_written_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make test" in commands and "make extract" in commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def test_top_level_layout():
    for name in ["environment.yml", "notebooks", "pacs_embed", "data", "figures", "tests", "README.md",
                 "pyproject.toml", ".ci/run"]:
        assert (ROOT / name).exists(), name


def test_the_real_image_sample_ships_with_the_tests_and_matches_its_manifest():
    """The tests need nothing outside the clone: the 224 pacs-mini images are in tests/data, byte for byte as listed."""
    import hashlib
    sample = ROOT / "tests" / "data" / "pacs-mini"
    rows = [line.split("\t") for line in (sample / "MANIFEST.tsv").read_text().splitlines()[1:] if line]
    assert len(rows) == 224
    for domain, cls, name, sha, *_ in rows:
        assert hashlib.sha256((sample / domain / cls / name).read_bytes()).hexdigest() == sha, name
    code = [p for p in ROOT.rglob("*") if (p.suffix in {".py", ".sh"} or p.name in {"Makefile", "run"})
            and ".venv" not in p.parts and p != Path(__file__)]
    assert not [p for p in code if "shared/data" in p.read_text(errors="replace")]


def test_setup_installs_from_pinned_constraints_that_cover_every_dependency_but_torch():
    pins = {_name(l).lower().replace("_", "-"): l for l in (ROOT / "constraints.txt").read_text().splitlines()
            if l and not l.startswith("#")}
    assert all("==" in l for l in pins.values())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r).lower().replace("_", "-") for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    assert wanted - {"torch"} <= set(pins) and "torch" not in pins      # torch: per machine (TORCH=, CUDA or CPU)
    make = (ROOT / "Makefile").read_text()
    assert "-c $(LOCK)" in make and re.search(r"^lock:", make, flags=re.M)


def test_the_version_is_one_across_package_pyproject_and_changelog():
    from pacs_embed import __version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_the_readme_is_short_and_every_doc_it_links_exists():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 160
    links = re.findall(r"\]\(([^)#]+\.md)\)", readme)
    assert len(links) >= 9 and all((ROOT / link).is_file() for link in links)
