"""``pacs-embed`` command line: download, extract, info, prompts, report.

Usage::

    pacs-embed download                  # PACS -> data/PACS
    pacs-embed extract                   # data/PACS -> data/embeddings/PACS/<model>.h5
    torchrun --nproc_per_node 4 -m pacs_embed extract    # the same, on 4 GPUs
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import warnings
from pathlib import Path

from . import DEFAULT_MODEL, __version__
from .errors import AlreadySaid, ArgumentError, PacsEmbedError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pacs-embed", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"pacs-embed {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("download", help="fetch PACS from the Hugging Face Hub into data/PACS")
    d.add_argument("--dest", default="data/PACS", help="target folder (default: data/PACS)")
    d.add_argument("--parquet", nargs="+", help="convert these local parquet files instead of downloading")
    d.add_argument("--no-check", action="store_true", help="do not check the per-domain image counts")

    e = sub.add_parser("extract", help="embed every image and the default prompts into an HDF5 cache")
    e.add_argument("--data", default="data/PACS", help="dataset folder <domain>/<class>/<image> (default: data/PACS)")
    e.add_argument("--model", default=DEFAULT_MODEL, help=f"HF CLIP hub id or local folder (default: {DEFAULT_MODEL})")
    e.add_argument("--revision", help="hub revision (branch, tag or commit)")
    e.add_argument("--out", help="cache file (default: data/embeddings/<dataset>/<model>.h5)")
    e.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda if available)")
    e.add_argument("--dtype", help="float32, float16 or bfloat16 (default: bf16 on CUDA and AMX/AVX512-BF16 CPUs)")
    e.add_argument("--batch-size", type=int, help="images per batch (default: 256 on CUDA, 32 on CPU)")
    e.add_argument("--workers", type=int, help="DataLoader worker processes for decoding (per process under torchrun)")
    e.add_argument("--processor", choices=["auto", "fast", "pil", "device"], default="auto",
                   help="image preprocessing: pil (reference; in the workers), fast (torchvision, a batch at a time "
                        "on the device), device (JPEGs decoded on the device, nvJPEG on CUDA, and the pil steps as "
                        "batch tensor ops there), auto (fast on CUDA where torchvision imports, else pil; the default)")
    e.add_argument("--prompts", help="prompt set JSON (default: the packaged PACS prompts)")
    e.add_argument("--strict", action="store_true", help="fail if any image cannot be read")
    e.add_argument("--force", action="store_true",
                   help="re-extract even if the cache is up to date; replace an --out file that is not a cache")
    e.add_argument("--restart", action="store_true", help="discard an unfinished run instead of resuming it")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    i = sub.add_parser("info", help="describe a cache and check its dataset files for changes")
    i.add_argument("cache")
    i.add_argument("--data", help="dataset folder to check against (default: the one recorded in the cache)")

    r = sub.add_parser("report", help="evaluate every method on a cache; write CSV, Markdown and figures")
    r.add_argument("cache", nargs="*", default=[],
                   help="embedding cache(s) (default: $PACS_EMBED_CACHE, else the newest data/embeddings/*/*.h5); "
                        "with several (datasets x models), one report per cache in OUT/<dataset>/<model>/ and "
                        "study.md/.csv/.tex and study.png side by side")
    r.add_argument("--out", help="folder for the tables (default: a new results/<dataset>/<cache name>/<time>/, with "
                                 "results/<dataset>/<cache name>/latest pointing at it)")
    r.add_argument("--figures", help="folder for the figures (default: OUT/figures)")
    r.add_argument("--seeds", type=int, default=5, help="number of seeds of the source split (default: 5)")
    r.add_argument("--descriptions", nargs="+", default=["paper", "ensemble", "nouns"],
                   help="how domains are described: paper, ensemble, nouns, nouns_ensemble (default: paper ensemble nouns)")
    r.add_argument("--domain-prompt", action="append", default=[], metavar='DOMAIN="PROMPT"',
                   help='describe DOMAIN by PROMPT in every experiment, e.g. --domain-prompt cartoon="a comic strip"; '
                        "repeat it (also for one domain: its prompts are averaged)")
    r.add_argument("--methods", nargs="+", metavar="METHOD",
                   help=f"methods to run (default: every default method): {', '.join(_method_names())}; with parameters: "
                        f"interpolate:weight=0.25, translate:step=0.5; your own with --import FILE")
    r.add_argument("--sources", nargs="+", metavar="DOMAIN",
                   help="source domains to train heads on (default: every domain; all are scored as targets)")
    r.add_argument("--n-nouns", type=int, default=None,
                   help="generic nouns for the 'nouns' description (default: every noun the dataset's templates hold)")
    r.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    r.add_argument("--no-head-cache", action="store_true",
                   help="refit every head (default: reuse heads cached in <cache>.heads/ whose training data is unchanged)")
    r.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE",
                   help="a Python file of your own methods (@pa.register(...)), loaded first so that --methods can "
                        "name them; repeatable")
    r.add_argument("--prompts", metavar="FILE",
                   help="a prompt set (JSON, as extract --prompts) for this report instead of the cache's (the one "
                        "chosen at extraction, else the dataset's)")
    r.add_argument("--solver", choices=["auto", "fast", "torch", "sklearn"], default="auto",
                   help="how heads are fitted: numpy (fast), torch on a device (torch), scikit-learn (sklearn); auto: "
                        "torch when a CUDA device is present, else fast")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="run every (cache, source) evaluation as a job on a Dask cluster, e.g. tcp://host:8786 (needs "
                        "the distributed package); the tables are those of one machine")
    r.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("prompts", help="encode prompts into a cache (only the missing ones)")
    t.add_argument("cache")
    t.add_argument("prompt", nargs="*")
    t.add_argument("--list", action="store_true", help="print the prompts the cache holds (and where)")
    t.add_argument("--repair", action="store_true",
                   help="set aside the prompt log's records that contradict the cache (another vector for a prompt it "
                        "holds); every other record is kept, the log's old bytes too (<log>.damaged-<time>)")
    t.add_argument("--model", help="the cache's model from another place: a hub id, or a folder holding the same "
                                   "weights (default: the model the cache records)")
    t.add_argument("--device")
    return p


def _method_names() -> list[str]:
    """The registered methods' names, read from the registry without importing the analysis (no numpy or torch
    for `--help`)."""
    import ast
    names = []
    for module in ("methods.py", "lads.py"):
        source = (Path(__file__).parent / "analysis" / module).read_text()
        names += _registered(ast.parse(source))
    return names


def _registered(tree) -> list[str]:
    import ast
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register" and node.args and \
                isinstance(node.args[0], ast.Constant):
            names.append(node.args[0].value)
    return names


def _closing(paths: dict) -> str:
    """What a report ends with on the console: the answer's paragraph (a study: its table), not only file paths."""
    import re
    if "study_markdown" in paths:
        text = Path(paths["study_markdown"]).read_text()
        return text[text.index("| "):].rstrip() if "| " in text else text
    text = Path(paths["markdown"]).read_text()
    after = text.split("## The answer", 1)[-1].strip().split("\n\n", 1)[0]
    return re.sub(r"\*\*|`", "", after)


def parse_domain_prompts(items: list[str]) -> dict[str, list[str]]:
    """['cartoon=a comic strip', 'cartoon=a comic'] -> {'cartoon': ['a comic strip', 'a comic']}."""
    out: dict[str, list[str]] = {}
    for item in items:
        domain, sep, prompt = item.partition("=")
        if not sep or not domain.strip() or not prompt.strip():
            raise ArgumentError(f'--domain-prompt {item!r}: write DOMAIN="PROMPT", e.g. --domain-prompt cartoon="a comic strip"')
        out.setdefault(domain.strip(), []).append(prompt.strip())
    return out


def _download(args) -> int:
    from .download import PACS_COUNTS, convert_parquet, download_pacs
    if args.parquet:
        dest = convert_parquet(args.parquet, args.dest, expected=None if args.no_check else PACS_COUNTS)
    else:
        dest = download_pacs(args.dest, check_counts=not args.no_check)
    print(f"PACS is in {dest}")
    return 0


def _extract(args) -> int:
    from .datasets import check_layout
    check_layout(args.data)   # a wrong --data fails in a second, before torch is imported
    from .extraction import extract
    try:
        summary = extract(args.data, args.model, args.out, revision=args.revision, device=args.device,
                          dtype=args.dtype, batch_size=args.batch_size, workers=args.workers, processor=args.processor,
                          strict=args.strict, force=args.force, restart=args.restart, prompts_file=args.prompts,
                          progress=not args.no_progress)
    finally:   # the decoding workers are gone: torch's SIGCHLD handler would otherwise report a killed one again
        import signal   # while the interpreter shuts down, as a traceback after our one-line error
        if hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    print(summary)
    return 0


def _info(args) -> int:
    from .cache import Cache
    cache = Cache.open(args.cache)
    print(cache.summary())
    try:
        changes = cache.changes(args.data)
    except Exception as e:  # noqa: BLE001 - the images need not be on this machine
        print(f"dataset    not checked: {e}")
    else:
        print("dataset    unchanged" if not changes else f"dataset    CHANGED since extraction:\n{changes.summary()}")
    return 0


def _report(args) -> int:
    from .analysis import report, study
    for file in args.imports:   # the user's registered methods
        _load_methods(file)
    for flag, n in [("--seeds", args.seeds), ("--n-nouns", args.n_nouns), ("--bootstrap", args.bootstrap)]:
        if n is not None and n < 1:
            raise ArgumentError(f"{flag} {n}: give a whole number, 1 or more")
    options = dict(seeds=range(args.seeds), descriptions=args.descriptions,
                   domain_prompts=parse_domain_prompts(args.domain_prompt), methods=args.methods, sources=args.sources,
                   n_nouns=args.n_nouns, n_boot=args.bootstrap, head_cache=not args.no_head_cache, solver=args.solver,
                   progress=not args.no_progress, prompts=args.prompts)
    if not args.cache:
        from .cache import default_cache, default_cache_reason
        args.cache = [default_cache()]
        print(f"cache: {args.cache[0]} ({default_cache_reason()})")
    with _on_cluster(args.scheduler):
        if len(args.cache) == 1:
            paths = report(args.cache[0], args.out, args.figures, **options)
        else:
            paths = study(args.cache, args.out, args.figures, **options)
    print("\n".join(f"{name:22s} {path}" for name, path in paths.items()))
    print()
    print(_closing(paths))
    return 0


@contextlib.contextmanager
def _on_cluster(address: str | None):
    """``--scheduler``: joblib's Dask backend on the cluster at ``address`` (``analysis.executor``) while inside."""
    if not address:
        yield
        return
    try:
        import joblib
        from distributed import Client
    except ImportError:
        raise ArgumentError("--scheduler needs the distributed package (pip install distributed)") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise ArgumentError(f"--scheduler {address}: no Dask scheduler answered there ({e}); start one "
                            f"(dask scheduler), or leave --scheduler out to run here") from None
    with client, joblib.parallel_config(backend="dask"):
        print(f"evaluating on the Dask cluster at {address} ({len(client.scheduler_info()['workers'])} workers)")
        yield


def _prompts(args) -> int:
    from .cache import Cache, CacheError
    from .text_encoder import TextEncoder
    cache = Cache.open(args.cache)
    if args.repair:
        dropped, kept = cache.repair_prompts()
        print(f"{args.cache}: {dropped} contradicting prompt record(s) set aside"
              + (f" (the log's old bytes: {kept})" if kept else "; the log was consistent"))
        if not args.prompt and not args.list:
            return 0
    if args.list:
        print("\n".join(cache.prompts))
        print(f"{len(cache.prompts)} prompts in {args.cache}", file=sys.stderr)
        if not args.prompt:
            return 0
    if not args.prompt:
        raise ArgumentError("name the prompts to encode (pacs-embed prompts CACHE \"a watercolor\" ...), or --list")
    before = set(cache.prompts)
    vectors = cache.prompt_vectors(args.prompt, TextEncoder(cache, args.model, args.device))
    if unsaved := set(args.prompt) & cache.unsaved:   # what this command is for: prompts kept on disk
        raise CacheError(f"{len(unsaved)} prompt(s) were encoded but could not be saved beside {args.cache} (see the "
                         f"warning above); nothing was added")
    new = len(set(args.prompt) - before)
    print(f"{len(args.prompt)} prompts in {args.cache} (dim {vectors.shape[1]}): {new} new, "
          f"{len(set(args.prompt)) - new} already cached")
    return 0


def _load_methods(file) -> None:
    """Run a Python file of the user's (its ``@pa.register`` calls add methods); a missing file is a one-line error,
    an error inside it its own traceback."""
    import runpy
    path = Path(file)
    if not path.is_file():
        raise ArgumentError(f"--import {file}: no such file; give a Python file that registers methods with "
                            f"@pa.register(\"name\")")
    runpy.run_path(str(path), run_name=f"pacs_embed_user_{path.stem}")


COMMANDS = {"download": _download, "extract": _extract, "info": _info, "report": _report, "prompts": _prompts}


def _run(args) -> int:
    return COMMANDS[args.command](args)


def main(argv=None) -> int:
    rc = _main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun rank: its files are written and closed
        sys.stdout.flush()
        sys.stderr.flush()
        # skip the interpreter's teardown: there gloo's C++ threads aborted the process ("terminate called
        # without an active exception", SIGABRT) in 1-2 of 12-20 runs on CPU, failing a finished run
        os._exit(rc)
    return rc


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    from .analysis.runs import COMMAND   # what run.json records as the command that made a run's files
    COMMAND.set("pacs-embed " + shlex.join(sys.argv[1:] if argv is None else [str(a) for a in argv]))

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if Path(filename).resolve().is_relative_to(Path(__file__).parent):   # ours: a sentence, not a source line
            print(f"pacs-embed {args.command}: warning: {message}", file=file or sys.stderr)
        else:                                                                 # a library's: where it came from
            default(message, category, filename, lineno, file, line)
    with warnings.catch_warnings():
        warnings.showwarning = show
        return _guarded(args)


def _guarded(args) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\ninterrupted. Finished batches are kept; run the same command again to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:   # the reader went away (`pacs-embed info ... | head`): nothing more to say
        with contextlib.suppress(OSError, ValueError):   # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except AlreadySaid:
        return 2
    except PacsEmbedError as e:   # something the user can fix: one line
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        notes = "".join(f" {n}" for n in getattr(e, "__notes__", []))   # e.g. which method was being fitted
        print(f"pacs-embed {args.command}: error: {message}{notes}", file=sys.stderr)
        return 2
    except OSError as e:
        from .files import NO_SPACE
        if isinstance(e, (PermissionError, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            print(f"pacs-embed {args.command}: error: {e.strerror}: {e.filename or ''}", file=sys.stderr)
            return 2
        if e.errno not in NO_SPACE:
            raise
        print(f"pacs-embed {args.command}: error: no space left ({e.strerror}: {e.filename or ''}). Files already "
              f"complete are kept; free some space and run the same command again.", file=sys.stderr)
        return 2
    except Exception:   # not an error this package names: a bug (ours, a library's, or a registered method's)
        import traceback
        traceback.print_exc()
        notes = getattr(sys.exc_info()[1], "__notes__", [])
        print(f"pacs-embed {args.command}: the error above is not one pacs_embed knows how to explain"
              + (f" ({' '.join(notes)})" if notes else "") + ": probably a bug. Please report it with the traceback "
              "and the command (`pacs-embed --version` says which version).", file=sys.stderr)
        return 1
