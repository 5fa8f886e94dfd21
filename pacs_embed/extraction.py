"""The one pass: every image through the image tower once, batched, resumable, into the HDF5 cache.

Usage::

    summary = extract("data/PACS", model="openai/clip-vit-base-patch32")
    print(summary)

One pass reads top to bottom: ``_plan`` (resolve the model, device and processor, scan the dataset, compare
with the cache already there, open the journal) -> ``_embed`` (this rank's share of the batches) ->
``_assemble`` (journal + kept vectors + prompts -> the HDF5 file).

Crash safety: each finished batch is written atomically to ``<out>.journal/``, named by its first image;
an interrupted run (Ctrl-C, kill -9) resumes from there with the same batches, so the result is identical
to an uninterrupted run. The HDF5 file is written as ``<out>.partial`` and renamed when complete.

Many GPUs / machines: under ``torchrun`` (``torch.distributed``: NCCL on CUDA, gloo on CPU) rank 0 plans,
every rank embeds every ``world_size``-th pending batch into the shared journal, and rank 0 assembles the
file after a barrier. The journal does not depend on the world size, so any run resumes any other.
"""
from __future__ import annotations

import collections
import contextlib
import json
import datetime as _dt
import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import cache as _cache
from .datasets import compare, scan
from .distributed import Ranks
from .images import ImageFiles, collate, worker_init
from .preprocess import BatchTransform, decode
from .journal import Journal
from .models import (DEFAULT_MODEL, PROCESSORS, ModelSpec, check_clip, check_device, choose_dtype,
                     choose_processor, dtype_name, embed_images, encode_text, load_image_tower, load_processor,
                     load_text_tower, processor_settings, resolve)
from .templates import default_prompts, load_templates, templates_for
from .errors import AlreadySaid, PacsEmbedError


class ExtractionError(PacsEmbedError, RuntimeError):
    pass


@dataclass
class Summary:
    out: Path
    n_images: int
    n_embedded: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = ""
    dtype: str = ""
    up_to_date: bool = False
    resumed: int = 0           # images found already done in the journal
    kept: int = 0              # unchanged images whose stored embeddings were kept (not embedded again)
    processor: str = ""        # "pil", "fast" or "device"
    ranks: int = 1             # torchrun processes that embedded
    rank: int = 0              # this process's rank (> 0: it embedded its share; rank 0 wrote the file)
    embed_seconds: float = 0.0  # decoding + preprocessing + the image tower, after the model was loaded

    def __str__(self) -> str:
        if self.rank:
            return (f"rank {self.rank} of {self.ranks}: " + (f"{self.out} is up to date" if self.up_to_date else
                    f"embedded {self.n_embedded} images in {self.seconds:.1f} s; rank 0 writes {self.out}"))
        if self.up_to_date:
            return (f"{self.out} is up to date ({self.n_images} images, made on {self.device}/{self.dtype}); nothing to "
                    f"do.\nnext: pacs-embed report {self.out}")
        rate = (self.n_images - self.resumed - self.kept) / self.seconds if self.seconds else float("nan")
        lines = ["", "pacs-embed extract: done",
                 f"  images     {self.n_images} ({self.n_embedded} embedded, {len(self.failures)} failed"
                 + (f", {self.resumed} resumed from an earlier run" if self.resumed else "")
                 + (f"; kept {self.kept:,}, embedded {self.n_images - self.kept:,}" if self.kept else "") + ")",
                 f"  time       {self.seconds:.1f} s ({rate:.1f} images/s) on {self.device} / {self.dtype}"
                 + (f" x {self.ranks} ranks" if self.ranks > 1 else "") + f", {self.processor} preprocessing"
                 + (f"; embedding {self.embed_seconds:.1f} s of it" if self.embed_seconds else ""),
                 f"  output     {self.out}"]
        for p, r in self.failures[:20]:
            lines.append(f"  FAILED     {p}: {r}")
        if len(self.failures) > 20:
            lines.append(f"  ... {len(self.failures) - 20} more failures, listed in the file's /failures group")
        lines += ["", f"next: pacs-embed report {self.out}        (or open the notebooks: make notebooks; they read "
                      f"the newest cache, or PACS_EMBED_CACHE={self.out})"]
        return "\n".join(lines)


def _read_old(out: Path, force: bool) -> "_cache.Cache | None":
    """The cache at ``out``, opened (and checked) once; refuses to replace a file that is not one (unless ``force``)."""
    if not out.exists():
        return None
    if not out.is_file():
        raise ExtractionError(f"--out {str(out)!r} exists and is not a file; choose another --out")
    try:
        return _cache.Cache.open(out)
    except _cache.CacheError as e:
        if not force:
            raise ExtractionError(f"--out {str(out)!r} exists and is not a pacs_embed cache this version can read "
                                  f"({e}). Refusing to overwrite it: choose another --out, or pass --force to "
                                  f"replace it.") from None
        print(f"note: {e}; --force: it will be replaced")
        return None


def check_arguments(batch_size=None, workers=None) -> None:
    """Clear errors for impossible numbers, before any work (and before a journal records them)."""
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ExtractionError(f"--batch-size {batch_size!r}: give a whole number of images, 1 or more")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ExtractionError(f"--workers {workers!r}: give 0 (decode in this process) or more worker processes")


def default_batch_size(device: torch.device) -> int:
    """256 on CUDA; 32 on CPUs, the fastest of 16/32/64/128 in fp32 and bf16 on a 16-core Xeon (AMX) and a
    2-core EPYC (AVX512-BF16) (benchmarks/results/cpu-*.log): larger batches fall out of cache."""
    return 256 if device.type == "cuda" else 32


def _default_workers(device: torch.device, ranks: Ranks) -> int:
    """CUDA: every core of this process's share but one decodes (the GPU outruns them); CPU: half the cores
    decode and the rest run the tower."""
    cores = max(1, (os.cpu_count() or 1) // ranks.local_world)
    return max(1, min(32, cores - 1)) if device.type == "cuda" else max(1, min(8, cores // 2))


@dataclass
class Plan:
    """What a run will do, decided by rank 0 before any image is embedded; every rank gets a copy without
    ``rank0`` (what only rank 0 keeps)."""
    spec: ModelSpec
    out: Path
    root: Path
    paths: list[str]                    # every image of the dataset, in cache order
    dtype: str
    processor: str                      # "pil", "fast" or "device"
    batch_size: int
    batches: dict[int, list[int]]       # first image -> rows, every batch this run needs (resumed ones too)
    pending: list[int]                  # first images of the batches still to embed
    rank0: "Rank0State | None" = None

    def batches_for(self, ranks: Ranks) -> list[int]:
        """This rank's pending batches: every ``world``-th, so shares differ by at most one batch."""
        return self.pending[ranks.rank::ranks.world]


@dataclass
class Rank0State:
    """What only rank 0 keeps through a run: the scanned dataset, the cache being replaced and what is kept of it,
    the journal, the loaded image tower."""
    t0: float
    ds: object
    templates: dict | None             # a --prompts file's, else the dataset's (templates.templates_for)
    image_processor: object
    settings: dict
    journal: Journal
    old: dict | None = None             # the attributes of the cache being replaced
    cache: object = None                # that cache, open
    carried_prompts: dict = field(default_factory=dict)
    differs: list = field(default_factory=list)   # the settings in which the cache being replaced differs
    kept: dict = field(default_factory=dict)
    resumed: int = 0
    up_to_date: bool = False
    model: object = None
    embed_seconds: float = 0.0
    recorded_templates: dict | None = None   # the prompt set the cache records: a --prompts file's, or the old cache's
    from_file: bool = False                  # a --prompts file was given to this run


def extract(data="data/PACS", model: str = DEFAULT_MODEL, out=None, *, revision: str | None = None,
            device: str | None = None, dtype: str | None = None, batch_size: int | None = None,
            workers: int | None = None, processor: str = "auto", strict: bool = False, force: bool = False,
            restart: bool = False, prompts_file=None, progress: bool = True) -> Summary:
    """Embed every image of a DomainBed-layout folder and the default prompts into one HDF5 cache.

    Parameters mirror ``pacs-embed extract --help``. Returns a Summary (print it).
    Raises ExtractionError under ``strict`` when any image cannot be read (after saving the others),
    and CacheError if another process is already writing ``out``. Under torchrun every rank calls it.
    """
    t0 = time.perf_counter()
    root = Path(data)
    check_arguments(batch_size=batch_size, workers=workers)
    check_device(device)
    if processor not in PROCESSORS:
        raise ExtractionError(f"--processor {processor!r}: choose one of {', '.join(PROCESSORS)}")
    if dtype is not None:
        choose_dtype(torch.device("cpu"), dtype)
    templates = load_templates(prompts_file) if prompts_file else None
    if not root.is_dir():  # fail before touching the model
        scan(root)
    ranks = Ranks()
    dev = ranks.device(device)
    ranks.start(dev)
    try:
        if not ranks.lead:
            return _other_rank(ranks, dev, workers, progress, t0)
        with contextlib.ExitStack() as stack:
            try:
                spec = resolve(model, revision)
                check_clip(spec)
                out = Path(out) if out else _cache.default_path(root.resolve().name, spec.model_id,
                                                                revision=spec.revision)
                stack.enter_context(_cache.locked(out, wait=False))
                plan = _plan(root, spec, out, templates, t0, dev, dtype=dtype, batch_size=batch_size,
                             processor=processor, force=force, restart=restart, progress=progress)
            except BaseException as e:
                ranks.broadcast(("error", f"{type(e).__name__}: {e}"))
                ranks.settle()   # the other ranks say why they stop before torchrun ends them
                raise
            if plan.rank0.up_to_date:
                ranks.broadcast(("up to date", str(out)))
                return _encode_new_prompts(plan, dev)
            ranks.broadcast(("plan", replace(plan, rank0=None)))
            plan.rank0.embed_seconds = _embed(plan, ranks, dev, plan.rank0.model, plan.rank0.image_processor, workers,
                                             progress)
            plan.rank0.model = None
            ranks.barrier()
            try:
                summary = _assemble(plan, dev, strict, ranks)
            except BaseException as e:
                ranks.broadcast(("error", f"{type(e).__name__}: {e}"))
                ranks.settle()
                raise
            ranks.broadcast(("done", str(summary.out)))
            return summary
    finally:
        ranks.close()


def _stop(ranks: Ranks, message: str):
    """A rank > 0 stopping because rank 0 failed: says so at once, then lets rank 0 exit (``Ranks.settle``)."""
    print(f"pacs-embed extract: error: {message}", file=sys.stderr, flush=True)
    ranks.settle()
    raise AlreadySaid(message)


def _other_rank(ranks: Ranks, dev: torch.device, workers, progress, t0) -> Summary:
    """Rank > 0: take rank 0's plan, embed this rank's share, wait for rank 0 to write the file."""
    kind, plan = ranks.broadcast(None)
    if kind == "error":
        _stop(ranks, f"rank {ranks.rank}: stopped, because rank 0 failed: {plan}")
    if kind == "up to date":
        return Summary(Path(plan), 0, 0, up_to_date=True, ranks=ranks.world, rank=ranks.rank)
    share = plan.batches_for(ranks)
    model = image_processor = None
    if share:
        model = load_image_tower(plan.spec, dev, choose_dtype(dev, plan.dtype))
        image_processor = load_processor(plan.spec, plan.processor)
    seconds = _embed(plan, ranks, dev, model, image_processor, workers, progress)
    ranks.barrier()
    kind, detail = ranks.broadcast(None)
    if kind == "error":
        _stop(ranks, f"rank {ranks.rank}: rank 0 could not write the cache: {detail}")
    n = sum(len(plan.batches[s]) for s in share)
    return Summary(plan.out, len(plan.paths), n, seconds=time.perf_counter() - t0, device=str(dev), dtype=plan.dtype,
                   processor=plan.processor, ranks=ranks.world, rank=ranks.rank, embed_seconds=seconds)


def _plan(root, spec, out, templates, t0, dev, *, dtype, batch_size, processor, force, restart, progress) -> Plan:
    """Resolve -> up to date? -> which images to embed -> journal (new, or the unfinished run's)."""
    dt = choose_dtype(dev, dtype)
    kind = choose_processor(processor, dev)
    image_processor = load_processor(spec, kind)
    cache = _read_old(out, force)
    known = cache.records() if cache else None
    ds = scan(root, known=known, progress=progress)
    if ds.ignored:
        print(f"note: {len(ds.ignored)} entries skipped: " + ", ".join(ds.ignored[:10])
              + (f" ... ({len(ds.ignored) - 10} more)" if len(ds.ignored) > 10 else ""))
    settings = {"model_id": spec.model_id, "revision": spec.revision, "tokenizer_sha256": spec.tokenizer,
                "dtype": dtype_name(dt), "processor": kind, "processor_class": type(image_processor).__name__,
                "manifest_sha256": ds.manifest_sha256(), "n_images": len(ds.records)}
    recorded = templates
    if recorded is None and cache is not None:   # the prompt set an earlier `extract --prompts FILE` chose stays
        try:
            recorded = cache.templates()
        except _cache.CacheError:
            recorded = None
    state = Rank0State(t0, ds, recorded or templates_for(ds.domains, ds.classes), image_processor, settings,
                       Journal(out), dict(cache.attrs) if cache else None, cache, recorded_templates=recorded,
                       from_file=templates is not None)
    plan = Plan(spec, out, ds.root, [r.path for r in ds.records], dtype_name(dt), kind, 0, {}, [], state)
    meta = _unfinished_run(state, spec)
    if state.old and _compare_with_old(plan, known, force):
        return plan   # up to date
    todo = [i for i, p in enumerate(plan.paths) if p not in state.kept]
    if state.old:
        why = ", ".join(state.differs) or "--force"
        print(f"{out}: re-extracting ({why}): keeping the {len(state.kept)} unchanged images' embeddings, "
              f"embedding {len(todo)}" if state.kept else f"{out}: re-extracting ({why})")
    settings["todo_sha256"] = _paths_sha256(plan.paths[i] for i in todo)  # which images this run embeds
    plan.batch_size = batch_size or default_batch_size(dev)
    if todo:  # a model that cannot load fails before any journal is written
        state.model = load_image_tower(spec, dev, dt)
    _open_journal(plan, None if restart else meta)
    plan.batches = {b[0]: b for b in (todo[k:k + plan.batch_size] for k in range(0, len(todo), plan.batch_size))}
    done = [s for s in state.journal.done() if s in plan.batches]
    plan.pending = [s for s in plan.batches if s not in done]
    state.resumed = sum(len(plan.batches[s]) for s in done)
    if state.resumed:
        print(f"resuming: {state.resumed} of {len(todo)} images already embedded in {state.journal.dir}")
    return plan


def _unfinished_run(state: Rank0State, spec: ModelSpec) -> dict | None:
    """The settings of the run that left the journal (None: no journal). Caches and journals made before a setting
    was recorded get its old meaning; a journal left by a run that finished (the cache holds it, but it was killed
    before cleaning up) is removed."""
    old, meta = state.old, state.journal.meta()
    for earlier in (old, meta):  # caches and journals made before --processor existed ran the PIL path
        if earlier is not None:
            earlier.setdefault("processor", "pil" if "Pil" in str(earlier.get("processor_class", "Pil")) else "fast")
            earlier.setdefault("tokenizer_sha256", spec.tokenizer)   # not recorded before: cannot be checked
    if (meta and old and all(old.get(k) == meta.get(k) for k in state.settings)
            and old.get("batch_size") == meta.get("batch_size")):
        state.journal.remove()
        return None
    return meta


def _compare_with_old(plan: Plan, known: dict, force: bool) -> bool:
    """Against the cache being replaced (``known``: its records): whether it is up to date (nothing to embed); else
    which settings differ (``state.differs``), what changed in the dataset (printed), which stored vectors can be kept
    (``state.kept``) and which prompts carried over (same model and tokenizer)."""
    state, spec = plan.rank0, plan.spec
    old, cache, settings = state.old, state.cache, state.settings
    # the weights' identity: a hub commit, or the hash of a local folder's weights (a moved folder is the same model)
    if not force and (old.get("revision") != spec.revision if old.get("revision") not in (None, "", "not recorded")
                      else old.get("model_id") != spec.model_id):
        raise ExtractionError(f"{plan.out} holds the embeddings of another model ({old.get('model_id')} @ "
                              f"{str(old.get('revision'))[:19]}; this is {spec.model_id} @ {spec.revision[:19]}). "
                              f"Refusing to replace them: choose another --out (or leave it out: each model gets its "
                              f"own cache), or pass --force to replace them.")
    if _cache.same_model(old, spec.model_id, spec.revision, spec.tokenizer):
        try:
            state.carried_prompts = cache.prompts   # else every prompt is encoded again
        except _cache.CacheError as e:
            if not force:
                raise
            print(f"note: {e}; --force: its prompts are encoded again")   # the new file's log starts empty
    state.differs = [k for k in settings if old.get(k) != settings[k]]
    if not state.differs and not force:
        if cache.vectors_usable():
            state.up_to_date = True
            return True
        state.differs = ["some stored vectors are not finite or all zeros"]   # a cache from before that was checked
    if "manifest_sha256" in state.differs:
        changes = compare({p: r.sha256 for p, r in known.items()}, {r.path: r.sha256 for r in state.ds.records})
        print(f"{plan.out}: the dataset changed since this cache was made:\n{changes.summary()}")
    if not force:
        state.kept = _reusable(cache, old, state.ds, settings, state.image_processor)
    return False


def _open_journal(plan: Plan, meta: dict | None) -> None:
    """Resume the unfinished run's journal (``meta``: its settings; they must be this run's, and its batch size is
    kept so that results are identical), or start a new one."""
    journal, settings = plan.rank0.journal, plan.rank0.settings
    if meta is None:
        journal.remove()   # nothing, or a journal --restart discards
        journal.start({**settings, "batch_size": plan.batch_size})
        return
    differs = [k for k in settings if meta.get(k) != settings[k]]
    if differs:
        raise ExtractionError(
            f"an unfinished run in {journal.dir} was made with other settings ({', '.join(differs)} differ: "
            f"{ {k: meta.get(k) for k in differs} }). Re-run with those settings to resume it, or pass "
            f"--restart to discard it.")
    if meta["batch_size"] != plan.batch_size:
        print(f"resuming with the unfinished run's batch size {meta['batch_size']} (not {plan.batch_size}) "
              f"so that results are identical")
        plan.batch_size = meta["batch_size"]


def _encode_new_prompts(plan: Plan, dev) -> Summary:
    """An up-to-date cache: only prompts of a new prompt file are encoded and appended; images stay."""
    state, out = plan.rank0, plan.out
    ds = state.ds
    new = [p for p in default_prompts(ds.domains, ds.classes, state.templates) if p not in state.carried_prompts]
    chosen = state.templates if state.from_file else None   # a --prompts file: the cache's prompt set from now on
    if new or (chosen is not None and chosen != state.cache.templates()):
        # e.g. a new --prompts file: text only, images stay as they are
        vectors = encode_text(load_text_tower(plan.spec, dev), new) if new else np.zeros((0, state.cache.dim))
        state.cache.append_prompts(new, vectors, {"model_id": plan.spec.model_id, "revision": plan.spec.revision,
                                                  "tokenizer_sha256": plan.spec.tokenizer}, templates=chosen)
        print(f"{out}: encoded {len(new)} new prompts" + ("; the prompt file is the cache's prompt set from now on"
                                                          if chosen is not None else ""))
    return Summary(out, len(ds.records), int(len(ds.records) - state.old.get("n_failed", 0)),
                   device=state.old["device"], dtype=state.old["dtype"], up_to_date=True,
                   processor=state.old.get("processor", ""))


def _embed(plan: Plan, ranks: Ranks, dev, model, image_processor, workers, progress) -> float:
    """Embed this rank's share of the pending batches into the journal, one atomic shard per batch; returns
    the seconds it took.

    Pipeline: DataLoader workers decode (and, with the PIL processor, preprocess) upcoming batches; this
    thread preprocesses on the device (fast processor) and launches the tower; a writer thread waits for the
    vectors and writes the shard, so the device is not idle while a shard is written.
    ``PACS_EMBED_PROFILE=1`` prints where the time went (it synchronises the device, so it is slower)."""
    share = plan.batches_for(ranks)
    if not share:
        return 0.0
    t0 = time.perf_counter()
    journal = Journal(plan.out)
    n_workers = _default_workers(dev, ranks) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        ImageFiles(plan.root, plan.paths, image_processor, plan.processor), batch_sampler=[plan.batches[s] for s in share],
        num_workers=n_workers, collate_fn=collate, worker_init_fn=worker_init, pin_memory=dev.type == "cuda")
    dim = model.config.projection_dim
    total = sum(len(plan.batches[s]) for s in share)
    desc = "embedding images" + (f" (rank {ranks.rank} of {ranks.world})" if ranks.world > 1 else "")
    profile = collections.Counter() if os.environ.get("PACS_EMBED_PROFILE") else None
    transform = BatchTransform.from_processor(image_processor) if plan.processor == "device" else None

    def save(indices, vectors, errors):
        t = time.perf_counter()
        emb = np.full((len(indices), dim), np.nan, np.float32)
        if vectors is not None:
            ok = [row for row, i in enumerate(indices) if i not in errors]   # the readable images, in order
            emb[ok] = vectors.float().cpu().numpy()  # waits for the device
            for row in np.flatnonzero(~np.isfinite(emb[ok]).all(1)):   # e.g. a float16 overflow: a failure, said
                errors[indices[ok[row]]] = (f"the image tower's output is not finite (NaN or inf) in {plan.dtype}; "
                                            f"re-extract with --dtype float32")
        journal.save(indices[0], emb, np.array([i not in errors for i in indices]),
                     [errors.get(i, "") for i in indices])
        if profile is not None:
            profile["writer: wait for vectors + write shard"] += time.perf_counter() - t
        return len(indices)

    with tqdm(total=total, desc=desc, unit="img", disable=not progress, smoothing=0.1) as bar, \
            ThreadPoolExecutor(1, thread_name_prefix="pacs-embed-journal") as writer:
        inflight = collections.deque()
        batches = iter(loader)
        try:
            while True:
                t = time.perf_counter()
                try:
                    indices, pixels, errors = next(batches)
                except StopIteration:
                    break
                except Exception as e:   # a worker failed outside an image's own decoding, or died
                    raise _loader_failed(e, n_workers, journal) from e
                t1 = time.perf_counter()
                vectors = None
                if pixels is not None and plan.processor == "device":   # decode JPEGs, then the batch transform
                    pixels = _device_pixels(pixels, indices, errors, transform, dev)
                if pixels is not None:
                    if plan.processor == "fast":  # resize, crop, normalise the whole batch on the device
                        if isinstance(pixels, torch.Tensor):
                            pixels = pixels.to(dev, non_blocking=True)
                        pixels = image_processor(images=pixels, return_tensors="pt", device=dev)["pixel_values"]
                    vectors = embed_images(model, pixels)
                if profile is not None:
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    profile["main: wait for decoded batch"] += t1 - t
                    profile["main: preprocess + tower"] += time.perf_counter() - t1
                inflight.append(writer.submit(save, indices, vectors, errors))
                while len(inflight) > 2 or (inflight and inflight[0].done()):
                    bar.update(inflight.popleft().result())  # re-raises a failed write (e.g. a full disk)
        except RuntimeError as e:   # a worker died: PyTorch raises this wherever the main thread is
            if isinstance(e, ExtractionError) or "DataLoader worker" not in str(e):
                raise
            raise _loader_failed(e, n_workers, journal) from e
        while inflight:
            bar.update(inflight.popleft().result())
    seconds = time.perf_counter() - t0
    if profile is not None:
        print(f"profile ({n_workers} workers, {total} images, {seconds:.2f} s): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in profile.items()), file=sys.stderr)
    return seconds


def _device_pixels(items, indices, errors, transform, dev):
    """``--processor device``: the batch's pixel values made on ``dev`` (JPEGs decoded there); a JPEG nothing can
    decode joins ``errors`` (as an unreadable image does in a worker). None when no image of the batch is left."""
    readable = [i for i in indices if i not in errors]   # the order of ``items``
    images, failed = decode(items, dev)
    for position, reason in failed.items():
        errors[readable[position]] = reason
    images = [im for im in images if im is not None]
    return transform(images) if images else None


def _loader_failed(e: Exception, n_workers: int, journal: Journal) -> ExtractionError:
    """The error for a DataLoader that failed outside any one image (an unreadable image is recorded, not raised):
    what happened, that the finished batches are kept, and how to go on."""
    return ExtractionError(
        f"image decoding stopped: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}. "
        f"The batches embedded so far are kept in {journal.dir}; run the same command again to resume"
        + (f" (with --workers 0 if the {n_workers} decoding worker processes keep failing: e.g. a full /dev/shm, a "
           f"file-size limit, too little memory)" if n_workers else ""))


def _paths_sha256(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p}\n".encode())
    return h.hexdigest()


def _reusable(cache, old, ds, settings, image_processor) -> dict:
    """path -> (embedding, ok, reason) of every image whose bytes the cache holds (unchanged, or moved to another
    path: a renamed class or domain folder keeps its vectors), when the cache was made
    with the same model, revision, dtype and processor (settings included); else nothing is reused. A vector
    stored as readable but not finite (a cache from before that was checked) or all zeros (no CLIP embedding is;
    a hand-made cache) is not reused: it is encoded again."""
    same = (_cache.same_model(old, settings["model_id"], settings["revision"])
            and all(old.get(k) == settings[k] for k in ("dtype", "processor", "processor_class"))
            and old.get("processor_settings") == processor_settings(image_processor))
    if not same:
        return {}
    stored, vectors = cache.index, cache.image_vectors()
    reasons = dict(cache.failures())
    good = _cache.usable(vectors)
    by_content = {}   # sha256 -> a stored row with those bytes: a file moved to another path keeps its vector
    for i, (p, h, ok, g) in enumerate(zip(stored["path"], stored["sha256"], stored["ok"], good)):
        if h and (not ok or g):
            by_content.setdefault(h, (i, p))
    kept = {}
    for r in ds.records:
        i, p = by_content.get(r.sha256, (None, None))
        if i is not None:
            kept[r.path] = (vectors[i], bool(stored["ok"][i]), reasons.get(p, ""))
    return kept


def _assemble(plan: Plan, dev, strict: bool, ranks: Ranks) -> Summary:
    """Kept vectors + journal shards + prompt vectors -> the HDF5 file; then the journal goes."""
    state = plan.rank0
    ds, journal = state.ds, state.journal
    shards = journal.done()
    n = len(ds.records)
    embedding, ok, reasons = None, np.zeros(n, bool), [""] * n
    index = {p: i for i, p in enumerate(plan.paths)}
    for path, (e, good, why) in state.kept.items():
        if embedding is None:
            embedding = np.full((n, len(e)), np.nan, np.float32)
        i = index[path]
        embedding[i], ok[i], reasons[i] = e, good, why
    for start, rows in plan.batches.items():
        if start not in shards:
            raise ExtractionError(f"journal {journal.dir} lacks the batch starting at image {start}; re-run "
                                  f"the same command (or pass --restart)")
        with np.load(shards[start], allow_pickle=False) as part:
            if len(part["ok"]) != len(rows):
                raise ExtractionError(f"journal shard {shards[start]} holds {len(part['ok'])} rows for "
                                      f"{len(rows)} images; re-run with --restart")
            if embedding is None:
                embedding = np.full((n, part["embedding"].shape[1]), np.nan, np.float32)
            embedding[rows], ok[rows] = part["embedding"], part["ok"]
            for i, why in zip(rows, part["reasons"]):
                reasons[i] = str(why)
    failures = [(plan.paths[i], str(reasons[i])) for i in np.flatnonzero(~ok)]
    if strict and failures:
        raise ExtractionError("unreadable images (--strict):\n" + "\n".join(f"  {p}: {r}" for p, r in failures)
                              + f"\nThe {int(ok.sum())} readable images are kept in {journal.dir}; fix or remove "
                                f"these files, or re-run without --strict to record them as failures.")
    prompts = default_prompts(ds.domains, ds.classes, state.templates)
    prompts += [p for p in state.carried_prompts if p not in prompts]
    missing = [p for p in prompts if p not in state.carried_prompts]
    vectors = dict(state.carried_prompts)
    if missing:
        vectors.update(zip(missing, encode_text(load_text_tower(plan.spec, dev), missing)))
    import transformers
    attrs = {**{k: v for k, v in state.settings.items() if k not in ("n_images", "todo_sha256")},
             "processor_settings": processor_settings(state.image_processor), "device": str(dev),
             "batch_size": plan.batch_size, "torch_version": torch.__version__,
             "transformers_version": transformers.__version__,
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "dataset_root": str(ds.root.resolve()), "dataset_name": ds.name, "n_failed": len(failures)}
    if state.recorded_templates is not None:   # a --prompts file's (or the old cache's): what later reports use
        attrs["prompt_templates"] = json.dumps(state.recorded_templates, ensure_ascii=False)
    if state.cache is not None:
        state.cache.close()   # the file it replaces (on Windows an open file cannot be replaced)
    _cache.write(plan.out, attrs, ds.domains, ds.classes, ds.records, embedding, ok, failures,
                 prompts, np.stack([vectors[p] for p in prompts]))
    journal.remove()
    return Summary(plan.out, n, int(ok.sum()), failures, time.perf_counter() - state.t0, str(dev), plan.dtype,
                   resumed=state.resumed, kept=len(state.kept), processor=plan.processor, ranks=ranks.world,
                   embed_seconds=state.embed_seconds)
