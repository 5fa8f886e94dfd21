"""The one pass, top to bottom: plan -> read -> map -> write, on every torchrun rank.

Usage::

    summary = extract("data/PACS", model="openai/clip-vit-base-patch32")
    print(summary)
"""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import time

from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import cache as _cache
from ..datasets import scan
from ..errors import AlreadySaid, ExtractionError
from ..models import (DEFAULT_MODEL, PROCESSORS, check_clip, check_device, choose_dtype, embedding_dim,
                      load_image_tower, load_processor, resolve)
from ..templates import load_templates
from .journal import Journal
from .mapper import MAPPERS
from .plan import check_arguments, prepare
from .ranks import Ranks
from .reader import Reader
from .summary import Summary
from .writer import ShardWriter, assemble, encode_new_prompts


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
    templates = _check(root, batch_size, workers, device, processor, dtype, prompts_file)
    ranks = Ranks()
    dev = ranks.device(device)
    ranks.start(dev)
    try:
        if not ranks.lead:
            return _other_rank(ranks, dev, workers, progress, t0)
        with contextlib.ExitStack() as stack:
            with _said_to_ranks(ranks):
                spec = resolve(model, revision)
                check_clip(spec)
                out = Path(out) if out else _cache.default_path(root.resolve().name, spec.model_id,
                                                                revision=spec.revision)
                stack.enter_context(_cache.locked(out, wait=False))
                plan, lead, tower = prepare(root, spec, out, templates, t0, dev, dtype=dtype, batch_size=batch_size,
                                            processor=processor, force=force, restart=restart, progress=progress)
            if lead.old is not None and lead.old.up_to_date:
                ranks.broadcast(("up to date", str(out)))
                return encode_new_prompts(plan, lead, dev)
            ranks.broadcast(("plan", plan))
            seconds = embed(plan, ranks, dev, tower, lead.image_processor, workers, progress)
            del tower
            ranks.barrier()
            with _said_to_ranks(ranks):
                summary = assemble(plan, lead, dev, strict, ranks, embed_seconds=seconds)
            ranks.broadcast(("done", str(summary.out)))
            return summary
    finally:
        ranks.close()


def _check(root: Path, batch_size, workers, device, processor, dtype, prompts_file):
    """Every argument checked before any work (a wrong --data before the model loads); the --prompts file's
    templates, or None."""
    check_arguments(batch_size=batch_size, workers=workers)
    check_device(device)
    if processor not in PROCESSORS:
        raise ExtractionError(f"--processor {processor!r}: choose one of {', '.join(PROCESSORS)}")
    if dtype is not None:
        choose_dtype(torch.device("cpu"), dtype)
    templates = load_templates(prompts_file) if prompts_file else None
    if not root.is_dir():
        scan(root)
    return templates


@contextlib.contextmanager
def _said_to_ranks(ranks: Ranks):
    """Rank 0 failing: the other ranks are told why and say so before torchrun ends them."""
    try:
        yield
    except BaseException as e:
        ranks.broadcast(("error", f"{type(e).__name__}: {e}"))
        ranks.settle()
        raise


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
    tower = image_processor = None
    if share:
        tower = load_image_tower(plan.spec, dev, choose_dtype(dev, plan.dtype))
        image_processor = load_processor(plan.spec, plan.processor)
    seconds = embed(plan, ranks, dev, tower, image_processor, workers, progress)
    ranks.barrier()
    kind, detail = ranks.broadcast(None)
    if kind == "error":
        _stop(ranks, f"rank {ranks.rank}: rank 0 could not write the cache: {detail}")
    n = sum(len(plan.batches[s]) for s in share)
    return Summary(plan.out, len(plan.paths), n, seconds=time.perf_counter() - t0, device=str(dev), dtype=plan.dtype,
                   processor=plan.processor, ranks=ranks.world, rank=ranks.rank, embed_seconds=seconds)


def embed(plan, ranks: Ranks, dev, tower, image_processor, workers, progress) -> float:
    """Embed this rank's share of the pending batches into the journal, one atomic shard per batch; returns
    the seconds it took.

    Pipeline: DataLoader workers decode (``reader``); this thread preprocesses on the device where the processor
    does and launches the tower (``mapper``); a writer thread waits for the vectors and writes the shard
    (``writer``), so the device is not idle while a shard is written.
    ``PACS_EMBED_PROFILE=1`` prints where the time went (it synchronises the device, so it is slower)."""
    share = plan.batches_for(ranks)
    if not share:
        return 0.0
    t0 = time.perf_counter()
    reader = Reader(plan, share, image_processor, dev, workers, ranks.local_world)
    mapper = MAPPERS[plan.processor](tower, image_processor, dev)
    profile = _Profile(dev) if os.environ.get("PACS_EMBED_PROFILE") else None
    total = sum(len(plan.batches[s]) for s in share)
    desc = "embedding images" + (f" (rank {ranks.rank} of {ranks.world})" if ranks.world > 1 else "")
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, smoothing=0.1) as bar, \
            ShardWriter(Journal(plan.out), embedding_dim(tower), plan.dtype, profile) as writer, \
            reader.failures_said():
        for batch in _timed(reader, profile):
            vectors = mapper(batch)
            if profile is not None:
                profile.mapped()
            bar.update(writer.submit(batch, vectors))
        for n in writer.drain():
            bar.update(n)
    seconds = time.perf_counter() - t0
    if profile is not None:
        print(f"profile ({reader.n_workers} workers, {total} images, {seconds:.2f} s): {profile}", file=sys.stderr)
    return seconds


class _Profile(collections.Counter):
    """Where the time of ``embed`` went: waiting for decoded batches, preprocessing + the tower, the writer."""

    def __init__(self, dev):
        super().__init__()
        self.dev, self.t = dev, time.perf_counter()

    def read(self, t_asked: float) -> None:
        self.t = time.perf_counter()
        self["main: wait for decoded batch"] += self.t - t_asked

    def mapped(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        self["main: preprocess + tower"] += time.perf_counter() - self.t

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.2f} s" for k, v in self.items())


def _timed(reader, profile):
    """The reader's batches, each one's wait recorded in ``profile`` (when profiling)."""
    batches = iter(reader)
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return
        if profile is not None:
            profile.read(t)
        yield batch
