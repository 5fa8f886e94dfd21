"""Where a run writes: a folder of its own, with ``run.json`` saying how it was made; nothing else is overwritten.

Left to itself a report writes into ``results/<dataset>/<cache name>/<time>/`` (figures in its ``figures/``) and points
``results/<dataset>/<cache name>/latest`` at it. A folder you name is used as it is, but a run never overwrites a file that
is not its own: a folder holding another run's results (a ``run.json`` of another cache or other parameters; for a
notebook, of another notebook or cache: re-running it after an edit rewrites its figures), or a file of the user's
that a run would write, is refused before any work. ``run.json`` holds the command line or the
parameters, the package version and git commit, the cache's provenance, the seeds and the methods — so a figure in a
paper can be traced back to the command that drew it.

Usage::

    folder = new_folder("results", "PACS", "mini")        # results/PACS/mini/<time>/
    claim(folder, record, ["results.csv", "report.md"])   # refuses another run's folder or a user's file
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from .. import __version__
from ..errors import PacsEmbedError
from ..files import atomic_write, component, locked

RECORD = "run.json"
COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar("command", default=None)   # set by the CLI
IDENTITY = ("kind", "cache", "cache_provenance", "parameters")   # what makes two runs the same run


class OutputError(PacsEmbedError, ValueError):
    """An output folder that cannot be used without overwriting what is not this run's."""


def new_folder(base, *names: str) -> Path:
    """``base/<name>/.../<UTC time>/`` (each name one safe component; a suffix when two runs start in the same
    second); not made yet."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    parent = Path(base).joinpath(*(component(n) for n in names))
    folder = parent / stamp
    k = 1
    while folder.exists():
        k += 1
        folder = parent / f"{stamp}-{k}"
    return folder


def point_latest(folder: Path) -> None:
    """``<folder's parent>/latest``: a link to the newest run (a text file naming it where links are not allowed)."""
    latest = folder.parent / "latest"
    if latest.is_dir() and not latest.is_symlink():   # a folder of the user's: never replaced
        warnings.warn(f"{latest} is a folder, not the link pacs_embed keeps there: left as it is; the newest run is "
                      f"{folder}", stacklevel=2)
        return
    try:
        if latest.is_symlink() or latest.is_file():
            latest.unlink()
        latest.symlink_to(folder.name, target_is_directory=True)
    except OSError:
        try:
            atomic_write(latest, f"{folder.name}\n".encode())
        except OSError as e:
            warnings.warn(f"cannot point {latest} at the newest run ({e.strerror or e}); it is {folder}", stacklevel=2)


def git_commit() -> str:
    """The commit of the package's checkout (with '+changes' when it has uncommitted changes), or why not known."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode:
            return "not a git checkout (installed package)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return commit.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not found)"


PACKAGES = ("numpy", "scipy", "scikit-learn", "h5py", "pandas", "torch", "transformers")


def environment() -> dict:
    """What a run's numbers depend on beyond its inputs: Python and the numerical packages' versions (from their
    installed metadata: torch is not imported for it) and the BLAS and thread pools numpy and scipy use (threadpoolctl:
    library, version, CPU kernels, threads). Heads are bit-identical on one machine; another CPU's kernels may change
    the last bits."""
    import platform
    from importlib import metadata
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        from threadpoolctl import threadpool_info
        blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "threading_layer", "num_threads",
                                       "filepath")} for i in threadpool_info()]
    except Exception as e:  # noqa: BLE001 - a record, never a reason to fail a run
        blas = [f"unknown ({type(e).__name__})"]
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": _cpu_name(), "packages": versions, "thread_pools": blas,
            "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "ATEN_"))}}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def record(kind: str, cache, attrs: dict, parameters: dict) -> dict:
    """What ``run.json`` holds for a run of ``kind`` ("report", "study") on ``cache`` with ``parameters``."""
    return {"kind": kind, "cache": str(Path(cache).resolve()) if cache is not None else None,
            "cache_provenance": {k: str(attrs.get(k)) for k in ("model_id", "revision", "created", "manifest_sha256",
                                                                "dataset_name", "processor", "dtype")
                                 if k in attrs} if cache is not None else None,   # a study: each report has its own
            "parameters": json.loads(json.dumps(parameters, default=str)),
            "command": COMMAND.get() or (" ".join(sys.argv) if sys.argv and sys.argv[0] else "python"),
            "pacs_embed_version": __version__, "git_commit": git_commit(), "environment": environment(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "cwd": os.getcwd()}


def claim(folder: Path, this: dict, files) -> None:
    """Make ``folder`` this run's, before any work: refused (OutputError naming it) when it is a file, cannot be
    written, holds another run's results, or holds a file of the user's that this run would write."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{str(folder)!r} is a file, not a folder; name a folder (it is made if missing)")
    existing = folder   # made only when the run writes (``write``): a refused run leaves no folder behind
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot make the output folder {str(folder)!r}: {str(existing)!r} is a file; name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write into the output folder" if existing == folder else f"make the output folder {str(folder)!r} in"
        raise OutputError(f"cannot {what} {str(existing)!r}; name one you can write to")
    mine = folder / RECORD
    if mine.is_file():
        try:
            other = json.loads(mine.read_text())
        except (OSError, ValueError):
            other = {}
        # a notebook re-run after an edit (same notebook, same cache) rewrites every figure of its folder: allowed
        same = ("kind", "cache") if str(this.get("kind", "")).startswith("notebook") else IDENTITY
        if any(other.get(k) != this.get(k) for k in same):
            raise OutputError(f"{str(folder)!r} holds the results of another run ({RECORD}: {other.get('kind')} of "
                              f"{other.get('cache')}, {other.get('created')}); writing there would mix or replace them. "
                              f"Leave out the folder (each run gets its own under results/), or name another.")
        return   # the same run again (same cache and parameters): its files are replaced
    theirs = [f for f in files if (folder / f).exists()]
    if theirs:
        raise OutputError(f"{str(folder)!r} holds {', '.join(theirs[:3])}{' ...' if len(theirs) > 3 else ''}, not "
                          f"written by a pacs_embed run ({RECORD} is missing); refusing to overwrite them. Name an "
                          f"empty or new folder, or leave it out.")


def write(folder: Path, this: dict) -> Path:
    """``run.json`` in ``folder``, made if missing (after ``claim``)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the output folder {str(folder)!r} ({e.strerror or e}); name one you can write "
                          f"to") from None
    path = Path(folder) / RECORD
    atomic_write(path, json.dumps(this, indent=1).encode())
    return path


class Staging:
    """A run's folders, written into hidden folders beside them (``.<name>.partial-<pid>``) and moved in together when
    the run ends (``publish``): a reader of a folder sees one whole run's files, never two runs' mixed (two reports
    into one ``--out`` at once), and a run that fails leaves nothing. ``targets``: [(folder, the files it claims)];
    a folder inside another is staged inside the other's.

    Usage::

        with Staging(record, [(out, TABLES), (figures, FIGURES)]) as stage:
            write(stage.path(out) / "results.csv"); ...
            stage.publish()
    """

    def __init__(self, this: dict, targets):
        self.this = this
        self.targets = [(Path(f), tuple(files)) for f, files in targets]
        self.stages: dict[Path, Path] = {}     # outer target -> its hidden folder

    def __enter__(self) -> "Staging":
        for folder, _ in self.targets:
            if self._outer(folder) == folder and folder not in self.stages:
                stage = folder.parent / f".{folder.name}.partial-{os.getpid()}"
                shutil.rmtree(stage, ignore_errors=True)   # left by a killed run of this pid number
                stage.mkdir(parents=True)
                self.stages[folder] = stage
        for folder, _ in self.targets:
            write(self.path(folder), self.this)
        return self

    def __exit__(self, *exc) -> None:
        for stage in self.stages.values():
            shutil.rmtree(stage, ignore_errors=True)

    def _outer(self, folder: Path) -> Path:
        for other, _ in self.targets:
            if other != folder and folder.is_relative_to(other):
                return other
        return folder

    def path(self, folder) -> Path:
        """Where the run writes what belongs in ``folder``."""
        folder = Path(folder)
        outer = self._outer(folder)
        return self.stages[outer] / folder.relative_to(outer)

    def final(self, path) -> Path:
        """The place a staged file will have."""
        path = Path(path)
        for outer, stage in self.stages.items():
            if path.is_relative_to(stage):
                return outer / path.relative_to(stage)
        return path

    def publish(self) -> None:
        """Move every staged folder's files into their targets, each target under its lock and claimed again (a
        run that took the folder meanwhile is not mixed with: this run's files are kept beside it, and said)."""
        for outer, stage in self.stages.items():
            with _publishing(outer):
                try:
                    for folder, files in self.targets:
                        if self._outer(folder) == outer:
                            claim(folder, self.this, files)
                except OutputError as e:
                    kept = new_folder(outer.parent, f"{outer.name}-not-published")
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(stage, kept)
                    raise OutputError(f"{e} This run's files are kept in {kept}.") from None
                if not outer.exists():
                    os.rename(stage, outer)
                    continue
                staged = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: p.name == RECORD)
                for src in staged:   # run.json last: a folder's record is the last thing to change
                    dest = outer / src.relative_to(stage)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dest)


def _publishing(folder: Path):
    """The folder's lock while a run publishes into it; none where the platform has no file locks."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        try:
            import msvcrt  # noqa: F401
        except ImportError:
            return contextlib.nullcontext()
    return locked(folder, what="publishing a run into")


class NotebookRun:
    """A notebook's run: the cache it reads and the folder (with ``run.json``) its figures go to."""

    def __init__(self, cache: Path, figures: Path):
        self.cache, self.figures = cache, figures

    def __repr__(self):
        return f"cache:   {self.cache}\nfigures: {self.figures} (run.json beside them)"


def notebook_run(name: str, cache=None, figures=None, base="../results", embeddings="../data/embeddings",
                 **parameters) -> NotebookRun:
    """Where notebook ``name`` reads and writes, decided in one place: the cache is ``cache``, else
    ``$PACS_EMBED_CACHE``, else the newest ``<embeddings>/*/*.h5``; figures go to ``figures``, else a new
    ``<base>/<name>/<time>/`` (``latest`` points at it), with ``run.json`` (the notebook, its parameters, the
    cache's provenance). Printed, so the notebook says on its face what it read.

    Usage (the first cell after the parameters): ``run = pa.notebook_run("01_table1", cache, figures, seeds=seeds)``
    """
    from ..cache import Cache, default_cache
    cache = Path(cache) if cache else default_cache(embeddings)
    with Cache(cache) as c:   # a missing or damaged cache fails here, naming it
        attrs = c.attrs
    fresh = figures is None
    folder = new_folder(base, name) if fresh else Path(figures)
    this = record(f"notebook {name}", cache, attrs, parameters)
    this["command"] = f"notebooks/{name}.ipynb, parameters as recorded here"   # not the kernel's command line
    claim(folder, this, [])
    write(folder, this)
    if fresh:
        point_latest(folder)
    run = NotebookRun(cache, folder)
    print(run)
    return run
