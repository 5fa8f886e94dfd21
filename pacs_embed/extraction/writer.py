"""Writers: each finished batch -> one atomic journal shard (on a thread, so the device is not idle while it is
written); at the end the journal + the kept vectors + the prompt vectors -> the HDF5 cache, and the journal goes.

Usage::

    with ShardWriter(Journal(plan.out), dim, plan.dtype) as writer:
        for batch in reader:
            done = writer.submit(batch, mapper(batch))     # images whose shards are written by now
    summary = assemble(plan, lead, dev, strict=False, ranks=ranks, embed_seconds=s)
"""
from __future__ import annotations

import collections
import datetime as _dt
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .. import cache as _cache
from ..errors import ExtractionError
from ..models import backbone_name, encode_text, load_text_tower, processor_settings
from ..templates import default_prompts
from .summary import Summary


class ShardWriter:
    """Waits for a batch's vectors and writes its shard on one thread; at most two batches in flight. An image whose
    vector is not finite (e.g. a float16 overflow) is a failure with its reason, never a NaN row marked readable."""

    def __init__(self, journal, dim: int, dtype: str, profile=None):
        self.journal, self.dim, self.dtype, self.profile = journal, dim, dtype, profile
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pacs-embed-journal")
        self.inflight = collections.deque()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True)

    def submit(self, batch, vectors) -> int:
        """Queue ``batch``'s shard; the number of images whose shards finished meanwhile (a failed write raises)."""
        self.inflight.append(self.pool.submit(self._save, batch.indices, vectors, batch.errors))
        done = 0
        while len(self.inflight) > 2 or (self.inflight and self.inflight[0].done()):
            done += self.inflight.popleft().result()
        return done

    def drain(self):
        """Each remaining shard's image count, as it is written."""
        while self.inflight:
            yield self.inflight.popleft().result()

    def _save(self, indices, vectors, errors) -> int:
        t = time.perf_counter()
        emb = np.full((len(indices), self.dim), np.nan, np.float32)
        if vectors is not None:
            ok = [row for row, i in enumerate(indices) if i not in errors]   # the readable images, in order
            emb[ok] = vectors.float().cpu().numpy()  # waits for the device
            for row in np.flatnonzero(~np.isfinite(emb[ok]).all(1)):
                errors[indices[ok[row]]] = (f"the image tower's output is not finite (NaN or inf) in {self.dtype}; "
                                            f"re-extract with --dtype float32")
        self.journal.save(indices[0], emb, np.array([i not in errors for i in indices]),
                          [errors.get(i, "") for i in indices])
        if self.profile is not None:
            self.profile["writer: wait for vectors + write shard"] += time.perf_counter() - t
        return len(indices)


def encode_new_prompts(plan, lead, dev) -> Summary:
    """An up-to-date cache: only prompts of a new prompt file are encoded and appended; images stay."""
    ds, old = lead.ds, lead.old
    new = [p for p in default_prompts(ds.domains, ds.classes, lead.templates) if p not in old.carried_prompts]
    chosen = lead.templates if lead.from_file else None   # a --prompts file: the cache's prompt set from now on
    if new or (chosen is not None and chosen != old.cache.templates()):
        vectors = encode_text(load_text_tower(plan.spec, dev), new) if new else np.zeros((0, old.cache.dim))
        old.cache.append_prompts(new, vectors, {"model_id": plan.spec.model_id, "revision": plan.spec.revision,
                                                "tokenizer_sha256": plan.spec.tokenizer}, templates=chosen)
        print(f"{plan.out}: encoded {len(new)} new prompts" + ("; the prompt file is the cache's prompt set from now "
                                                               "on" if chosen is not None else ""))
    return Summary(plan.out, len(ds.records), int(len(ds.records) - old.attrs.get("n_failed", 0)),
                   device=old.attrs["device"], dtype=old.attrs["dtype"], up_to_date=True,
                   processor=old.attrs.get("processor", ""))


def assemble(plan, lead, dev, strict: bool, ranks, embed_seconds: float = 0.0) -> Summary:
    """Kept vectors + journal shards + prompt vectors -> the HDF5 file; then the journal goes."""
    embedding, ok, reasons = _gather(plan, lead)
    failures = [(plan.paths[i], str(reasons[i])) for i in np.flatnonzero(~ok)]
    if strict and failures:
        raise ExtractionError("unreadable images (--strict):\n" + "\n".join(f"  {p}: {r}" for p, r in failures)
                              + f"\nThe {int(ok.sum())} readable images are kept in {lead.journal.dir}; fix or remove "
                                f"these files, or re-run without --strict to record them as failures.")
    prompts, prompt_vectors = _prompts(plan, lead, dev)
    if lead.old is not None:
        lead.old.cache.close()   # the file it replaces (on Windows an open file cannot be replaced)
    ds = lead.ds
    _cache.write(plan.out, _attributes(plan, lead, dev, len(failures)), ds.domains, ds.classes, ds.records,
                 embedding, ok, failures, prompts, prompt_vectors)
    lead.journal.remove()
    return Summary(plan.out, len(ds.records), int(ok.sum()), failures, time.perf_counter() - lead.t0, str(dev),
                   plan.dtype, resumed=plan.resumed, kept=len(lead.kept), processor=plan.processor,
                   ranks=ranks.world, embed_seconds=embed_seconds)


def _gather(plan, lead):
    """(embedding, ok, reasons) of every image: the kept ones' stored rows, the others from their journal shards."""
    n = len(plan.paths)
    embedding, ok, reasons = None, np.zeros(n, bool), [""] * n
    index = {p: i for i, p in enumerate(plan.paths)}
    for path, (e, good, why) in lead.kept.items():
        if embedding is None:
            embedding = np.full((n, len(e)), np.nan, np.float32)
        i = index[path]
        embedding[i], ok[i], reasons[i] = e, good, why
    shards = lead.journal.done()
    for start, rows in plan.batches.items():
        with np.load(_shard(shards, start, lead.journal), allow_pickle=False) as part:
            if len(part["ok"]) != len(rows):
                raise ExtractionError(f"journal shard {shards[start]} holds {len(part['ok'])} rows for "
                                      f"{len(rows)} images; re-run with --restart")
            if embedding is None:
                embedding = np.full((n, part["embedding"].shape[1]), np.nan, np.float32)
            embedding[rows], ok[rows] = part["embedding"], part["ok"]
            for i, why in zip(rows, part["reasons"]):
                reasons[i] = str(why)
    return embedding, ok, reasons


def _shard(shards: dict, start: int, journal):
    if start not in shards:
        raise ExtractionError(f"journal {journal.dir} lacks the batch starting at image {start}; re-run "
                              f"the same command (or pass --restart)")
    return shards[start]


def _prompts(plan, lead, dev) -> tuple[list[str], np.ndarray]:
    """The dataset's prompts (then the old cache's others), their vectors: carried over, or encoded now."""
    ds, carried = lead.ds, (lead.old.carried_prompts if lead.old else {})
    prompts = default_prompts(ds.domains, ds.classes, lead.templates)
    prompts += [p for p in carried if p not in prompts]
    missing = [p for p in prompts if p not in carried]
    vectors = dict(carried)
    if missing:
        vectors.update(zip(missing, encode_text(load_text_tower(plan.spec, dev), missing)))
    return prompts, np.stack([vectors[p] for p in prompts])


def _attributes(plan, lead, dev, n_failed: int) -> dict:
    """What the cache records of its making: the run's settings, versions, device, dataset, prompt set."""
    import transformers
    attrs = {**{k: v for k, v in lead.settings.items() if k not in ("n_images", "todo_sha256")},
             "processor_settings": processor_settings(lead.image_processor), "device": str(dev),
             "batch_size": plan.batch_size, "torch_version": torch.__version__,
             "transformers_version": transformers.__version__,
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "dataset_root": str(lead.ds.root.resolve()), "dataset_name": lead.ds.name, "n_failed": n_failed,
             "backbone": backbone_name(plan.spec)}
    if lead.recorded_templates is not None:   # a --prompts file's (or the old cache's): what later reports use
        attrs["prompt_templates"] = json.dumps(lead.recorded_templates, ensure_ascii=False)
    return attrs
