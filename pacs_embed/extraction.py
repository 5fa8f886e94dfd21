"""The one pass: every image through the image tower once, batched, resumable, into the HDF5 cache.

Usage::

    summary = extract("data/PACS", model="openai/clip-vit-base-patch32")
    print(summary)

Crash safety: each finished batch is written atomically to ``<out>.journal/``; an interrupted
run (Ctrl-C, kill -9) resumes from there with the same batches, so the result is identical to
an uninterrupted run. The HDF5 file is written as ``<out>.partial`` and renamed when complete.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import cache as _cache
from .datasets import compare, scan
from .files import atomic_write
from .models import (DEFAULT_MODEL, check_clip, check_device, choose_device, choose_dtype, dtype_name, encode_images,
                     encode_text, load_image_tower, load_processor, load_text_tower, processor_settings, resolve)
from .prompts import default_prompts, load_templates
from .errors import PacsEmbedError


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

    def __str__(self) -> str:
        if self.up_to_date:
            return f"{self.out} is up to date ({self.n_images} images, made on {self.device}/{self.dtype}); nothing to do."
        rate = (self.n_images - self.resumed - self.kept) / self.seconds if self.seconds else float("nan")
        lines = ["", "pacs-embed extract: done",
                 f"  images     {self.n_images} ({self.n_embedded} embedded, {len(self.failures)} failed"
                 + (f", {self.resumed} resumed from an earlier run" if self.resumed else "")
                 + (f"; kept {self.kept:,}, embedded {self.n_images - self.kept:,}" if self.kept else "") + ")",
                 f"  time       {self.seconds:.1f} s ({rate:.1f} images/s) on {self.device} / {self.dtype}",
                 f"  output     {self.out}"]
        for p, r in self.failures[:20]:
            lines.append(f"  FAILED     {p}: {r}")
        if len(self.failures) > 20:
            lines.append(f"  ... {len(self.failures) - 20} more failures, listed in the file's /failures group")
        return "\n".join(lines)


class _Images(torch.utils.data.Dataset):
    """Decodes and preprocesses one image file (in a DataLoader worker); failures are returned, not raised."""

    def __init__(self, root: Path, paths: list[str], processor):
        self.root, self.paths, self.processor = root, paths, processor

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            rgb = read_rgb(self.root / self.paths[i])
            return i, self.processor(images=rgb, return_tensors="pt")["pixel_values"][0], None
        except Exception as e:  # noqa: BLE001 - any unreadable file is recorded, not fatal
            return i, None, f"{type(e).__name__}: {e}"


def read_rgb(path) -> Image.Image:
    """Decode an image to 8-bit RGB. High-bit-depth images are scaled to 8 bits (Pillow's convert("RGB")
    would clip 16-bit values to white); images over Pillow's pixel limit (a decompression bomb, e.g. a
    15 KB PNG of 11,000 x 11,000) are refused before they are decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                a = np.asarray(im).astype(np.int64)
                bits = 16 if im.mode.startswith("I;16") or a.max() > 255 else 8
                a = np.clip(a >> (bits - 8), 0, 255).astype(np.uint8)
                return Image.fromarray(a, "L").convert("RGB")
            if im.mode == "F":
                raise ValueError("floating-point images are not supported")
            im.load()
            return im.convert("RGB")


def _collate(items):
    ok = [(i, px) for i, px, err in items if err is None]
    return ([i for i, _, _ in items], [i for i, _ in ok],
            torch.stack([px for _, px in ok]) if ok else None,
            {i: err for i, _, err in items if err is not None})


def _worker_init(_):
    torch.set_num_threads(1)


class Journal:
    """Finished batches of an unfinished run, one atomically written .npz per batch."""

    def __init__(self, out: Path):
        self.dir = out.with_name(out.name + ".journal")

    def meta(self) -> dict | None:
        try:
            return json.loads((self.dir / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def start(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "meta.json", json.dumps(meta, indent=1).encode(), durable=True)

    def done(self) -> dict[int, Path]:
        """Finished batches by start index; a damaged shard is named, removed, and its batch redone."""
        out = {}
        for p in sorted(self.dir.glob("batch_*.npz")) if self.dir.is_dir() else []:
            try:
                with np.load(p, allow_pickle=False) as f:
                    if len(f["embedding"]) != len(f["ok"]) or len(f["reasons"]) != len(f["ok"]):
                        raise ValueError("arrays of different lengths")
                out[int(p.stem.split("_")[1])] = p
            except Exception as e:  # noqa: BLE001 - truncated, empty, not a zip, ...
                print(f"note: journal shard {p} is damaged ({type(e).__name__}: {e}); its batch will be embedded again")
                p.unlink(missing_ok=True)
        return out

    def save(self, start: int, embedding: np.ndarray, ok: np.ndarray, reasons: list[str]) -> None:
        buf = io.BytesIO()
        np.savez(buf, embedding=embedding, ok=ok, reasons=np.array(reasons, dtype=str))
        atomic_write(self.dir / f"batch_{start:09d}.npz", buf.getvalue(), durable=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _read_old(out: Path, force: bool) -> dict | None:
    """The attributes of the cache at ``out``; refuses to replace a file that is not one (unless ``force``)."""
    if not out.exists():
        return None
    if not out.is_file():
        raise ExtractionError(f"--out {str(out)!r} exists and is not a file; choose another --out")
    try:
        return _cache.read_attrs(out)
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


def _default_workers(device: torch.device) -> int:
    cores = os.cpu_count() or 1
    return min(8, cores) if device.type == "cuda" else max(1, min(8, cores // 2))


def extract(data="data/PACS", model: str = DEFAULT_MODEL, out=None, *, revision: str | None = None,
            device: str | None = None, dtype: str | None = None, batch_size: int | None = None,
            workers: int | None = None, strict: bool = False, force: bool = False, restart: bool = False,
            prompts_file=None, progress: bool = True) -> Summary:
    """Embed every image of a DomainBed-layout folder and the default prompts into one HDF5 cache.

    Parameters mirror ``pacs-embed extract --help``. Returns a Summary (print it).
    Raises ExtractionError under ``strict`` when any image cannot be read (after saving the others),
    and CacheError if another process is already writing ``out``.
    """
    t0 = time.perf_counter()
    root = Path(data)
    check_arguments(batch_size=batch_size, workers=workers)
    check_device(device)
    if dtype is not None:
        choose_dtype(torch.device("cpu"), dtype)
    templates = load_templates(prompts_file)
    if not root.is_dir():  # fail before touching the model
        scan(root)
    spec = resolve(model, revision)
    check_clip(spec)
    out = Path(out) if out else _cache.default_path(root.resolve().name, spec.model_id)
    with _cache.locked(out, wait=False):
        return _extract(root, spec, out, templates, t0, device=device, dtype=dtype, batch_size=batch_size,
                        workers=workers, strict=strict, force=force, restart=restart, progress=progress)


def _extract(root, spec, out, templates, t0, *, device, dtype, batch_size, workers, strict, force, restart,
             progress) -> Summary:
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    processor = load_processor(spec)
    old = _read_old(out, force)
    known = _cache.stored_records(out) if old else None
    ds = scan(root, known=known, progress=progress)
    if ds.ignored:
        print(f"note: {len(ds.ignored)} files skipped: " + ", ".join(ds.ignored[:10])
              + (f" ... ({len(ds.ignored) - 10} more)" if len(ds.ignored) > 10 else ""))
    manifest = ds.manifest_sha256()
    settings = {"model_id": spec.model_id, "revision": spec.revision, "dtype": dtype_name(dt),
                "processor_class": type(processor).__name__,
                "manifest_sha256": manifest, "n_images": len(ds.records)}
    journal = Journal(out)
    meta = journal.meta()
    if meta and old and all(old.get(k) == meta.get(k) for k in settings) and old.get("batch_size") == meta.get("batch_size"):
        journal.remove()  # left by a run that finished (the cache holds it) but was killed before cleaning up
        meta = None
    carried_prompts = {}
    if old:
        carried_prompts = _cache.read_prompts(out) if _cache.same_model(old, spec.model_id, spec.revision) else {}
        differs = [k for k in settings if old.get(k) != settings[k]]
        if not differs and not force:
            new_prompts = [p for p in default_prompts(ds.domains, ds.classes, templates) if p not in carried_prompts]
            if new_prompts:  # e.g. a new --prompts file: text only, images stay as they are
                _cache.append_prompts(out, new_prompts, encode_text(load_text_tower(spec, dev), new_prompts),
                                      spec.model_id, spec.revision)
                print(f"{out}: encoded {len(new_prompts)} new prompts")
            return Summary(out, len(ds.records), int(len(ds.records) - old.get("n_failed", 0)),
                           device=old["device"], dtype=old["dtype"], up_to_date=True)
        if "manifest_sha256" in differs:
            changes = compare({p: r.sha256 for p, r in known.items()}, {r.path: r.sha256 for r in ds.records})
            print(f"{out}: the dataset changed since this cache was made:\n{changes.describe()}")
    kept = _reusable(out, old, known, ds, spec, dt, processor) if old and not force else {}
    todo = [i for i, r in enumerate(ds.records) if r.path not in kept]
    if old:
        print(f"{out}: re-extracting ({', '.join(differs) or '--force'}): keeping the {len(kept)} unchanged "
              f"images' embeddings, embedding {len(todo)}" if kept else
              f"{out}: re-extracting ({', '.join(differs) or '--force'})")
    settings["todo_sha256"] = _paths_sha256(ds.records[i].path for i in todo)  # which images this run embeds

    batch_size = batch_size or (256 if dev.type == "cuda" else 64)
    image_model = load_image_tower(spec, dev, dt) if todo else None  # a model that cannot load fails before any journal
    if meta and restart:
        journal.remove()
        meta = None
    if meta:
        differs = [k for k in settings if meta.get(k) != settings[k]]
        if differs:
            raise ExtractionError(
                f"an unfinished run in {journal.dir} was made with other settings ({', '.join(differs)} differ: "
                f"{ {k: meta.get(k) for k in differs} }). Re-run with those settings to resume it, or pass "
                f"--restart to discard it.")
        if meta["batch_size"] != batch_size:
            print(f"resuming with the unfinished run's batch size {meta['batch_size']} (not {batch_size}) "
                  f"so that results are identical")
            batch_size = meta["batch_size"]
    else:
        journal.start({**settings, "batch_size": batch_size})

    batches = {b[0]: b for b in (todo[k:k + batch_size] for k in range(0, len(todo), batch_size))}
    done = {s: p for s, p in journal.done().items() if s in batches}
    pending = [s for s in batches if s not in done]
    resumed = sum(len(batches[s]) for s in done)
    if resumed:
        print(f"resuming: {resumed} of {len(todo)} images already embedded in {journal.dir}")

    if pending:
        paths = [r.path for r in ds.records]
        loader = torch.utils.data.DataLoader(
            _Images(ds.root, paths, processor), batch_sampler=[batches[s] for s in pending],
            num_workers=_default_workers(dev) if workers is None else workers, collate_fn=_collate,
            worker_init_fn=_worker_init, pin_memory=dev.type == "cuda")
        dim = image_model.config.projection_dim
        with tqdm(total=len(todo), initial=resumed, desc="embedding images", unit="img",
                  disable=not progress, smoothing=0.1) as bar:
            for indices, ok_indices, pixels, errors in loader:
                emb = np.full((len(indices), dim), np.nan, np.float32)
                if pixels is not None:
                    emb[[indices.index(i) for i in ok_indices]] = encode_images(image_model, pixels)
                journal.save(indices[0], emb, np.array([i not in errors for i in indices]),
                             [errors.get(i, "") for i in indices])
                bar.update(len(indices))
    del image_model
    return _finish(out, journal, ds, spec, processor, dev, dt, batch_size, templates, carried_prompts,
                   strict, t0, resumed, batches, kept)


def _paths_sha256(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p}\n".encode())
    return h.hexdigest()


def _reusable(out, old, known, ds, spec, dt, processor) -> dict:
    """path -> (embedding, ok, reason) of every stored image whose file is unchanged, when the cache was made
    with the same model, revision, dtype and processor (settings included); else nothing is reused."""
    same = (_cache.same_model(old, spec.model_id, spec.revision) and old.get("dtype") == dtype_name(dt)
            and old.get("processor_class") == type(processor).__name__
            and old.get("processor_settings") == processor_settings(processor))
    if not same:
        return {}
    stored = _cache.read_images(out)
    reasons = dict(_cache.read_failures(out))
    now = {r.path: r.sha256 for r in ds.records}
    return {p: (e, bool(ok), reasons.get(p, "")) for p, h, e, ok in zip(stored["path"], stored["sha256"],
                                                                       stored["embedding"], stored["ok"])
            if now.get(p) == h}


def _finish(out, journal, ds, spec, processor, dev, dt, batch_size, templates, carried_prompts, strict, t0,
            resumed, batches, kept) -> Summary:
    shards = journal.done()
    n = len(ds.records)
    embedding, ok, reasons = None, np.zeros(n, bool), [""] * n
    index = {r.path: i for i, r in enumerate(ds.records)}
    for path, (e, good, why) in kept.items():
        if embedding is None:
            embedding = np.full((n, len(e)), np.nan, np.float32)
        i = index[path]
        embedding[i], ok[i], reasons[i] = e, good, why
    for start, rows in batches.items():
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
    failures = [(ds.records[i].path, str(reasons[i])) for i in np.flatnonzero(~ok)]
    if strict and failures:
        raise ExtractionError("unreadable images (--strict):\n" + "\n".join(f"  {p}: {r}" for p, r in failures)
                              + f"\nThe {int(ok.sum())} readable images are kept in {journal.dir}; fix or remove "
                                f"these files, or re-run without --strict to record them as failures.")
    prompts = default_prompts(ds.domains, ds.classes, templates)
    prompts += [p for p in carried_prompts if p not in prompts]
    missing = [p for p in prompts if p not in carried_prompts]
    vectors = dict(carried_prompts)
    if missing:
        vectors.update(zip(missing, encode_text(load_text_tower(spec, dev), missing)))
    import transformers
    attrs = {"model_id": spec.model_id, "revision": spec.revision,
             "processor_class": type(processor).__name__, "processor_settings": processor_settings(processor),
             "dtype": dtype_name(dt), "device": str(dev), "batch_size": batch_size,
             "torch_version": torch.__version__, "transformers_version": transformers.__version__,
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "dataset_root": str(ds.root.resolve()), "dataset_name": ds.name,
             "manifest_sha256": ds.manifest_sha256(), "n_failed": len(failures)}
    _cache.write(out, attrs, ds.domains, ds.classes, ds.records, embedding, ok, failures,
                 prompts, np.stack([vectors[p] for p in prompts]))
    journal.remove()
    return Summary(out, len(ds.records), int(ok.sum()), failures, time.perf_counter() - t0,
                   str(dev), dtype_name(dt), resumed=resumed, kept=len(kept))
