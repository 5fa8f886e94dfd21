"""What one extraction run will do, decided by rank 0 before any image is embedded: small functions from the dataset
scan, the cache being replaced and the journal of an unfinished run, to a frozen ``Plan`` (which every rank gets)
and rank 0's ``Lead`` (what only rank 0 holds).

Usage::

    plan, lead, model = prepare(root, spec, out, None, t0, dev, dtype=None, batch_size=None, processor="auto",
                                force=False, restart=False, progress=True)
    plan.batches_for(ranks)      # this rank's pending batches
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import cache as _cache
from ..datasets import compare, scan
from ..errors import ExtractionError
from ..models import (ModelSpec, backbone_name, choose_dtype, choose_processor, dtype_name, load_image_tower,
                      load_processor, processor_settings)
from ..templates import templates_for
from .journal import Journal

DEVICE_BACKBONES = ("clip",)   # whose image processors --processor device reproduces (tests/test_preprocess.py)


@dataclass(frozen=True)
class Plan:
    """What a run will do, the same on every rank: the images, the batches and which of them are still to embed."""
    spec: ModelSpec
    out: Path
    root: Path
    paths: tuple[str, ...]              # every image of the dataset, in cache order
    dtype: str
    processor: str                      # a key of mapper.MAPPERS: "pil", "fast" or "device"
    batch_size: int = 0
    batches: dict = field(default_factory=dict)   # first image -> rows, every batch this run needs (resumed too)
    pending: tuple[int, ...] = ()       # first images of the batches still to embed

    def batches_for(self, ranks) -> list[int]:
        """This rank's pending batches: every ``world``-th, so shares differ by at most one batch."""
        return list(self.pending[ranks.rank::ranks.world])

    @property
    def resumed(self) -> int:
        """Images that an unfinished run already embedded into the journal."""
        pending = set(self.pending)
        return sum(len(rows) for start, rows in self.batches.items() if start not in pending)


@dataclass(frozen=True)
class OldCache:
    """The cache being replaced, as this run sees it: its attributes (with the meaning older versions gave missing
    ones), whether it is up to date, the settings that differ, the vectors and prompts that carry over."""
    attrs: dict
    cache: object
    up_to_date: bool = False
    differs: tuple[str, ...] = ()
    kept: dict = field(default_factory=dict)            # path -> (embedding, ok, reason)
    carried_prompts: dict = field(default_factory=dict)  # prompt -> vector (same model and tokenizer)


@dataclass(frozen=True)
class Lead:
    """What only rank 0 holds through a run: the scanned dataset, the settings the cache will record, the prompt
    set, the image processor, the journal and the cache being replaced."""
    t0: float
    ds: object
    settings: dict
    templates: dict                     # a --prompts file's, the old cache's, else the dataset's
    recorded_templates: dict | None     # the prompt set the cache records: a --prompts file's, or the old cache's
    from_file: bool                     # a --prompts file was given to this run
    image_processor: object
    journal: Journal
    old: OldCache | None = None

    @property
    def kept(self) -> dict:
        return self.old.kept if self.old else {}


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


def prepare(root, spec, out, templates, t0, dev, *, dtype, batch_size, processor, force, restart,
            progress) -> tuple[Plan, Lead, object]:
    """Resolve -> up to date? -> which images to embed -> journal (new, or the unfinished run's). Returns the plan,
    rank 0's lead and the loaded image tower (None when nothing is to be embedded)."""
    dt = choose_dtype(dev, dtype)
    kind, image_processor = image_processing(spec, processor, dev)
    cache = read_old(out, force)
    known = cache.records() if cache else None
    ds = scan(root, known=known, progress=progress)
    _note_ignored(ds.ignored)
    settings = run_settings(spec, dt, kind, image_processor, ds)
    recorded = templates if templates is not None else _recorded_templates(cache)
    journal = Journal(out)
    old_attrs = with_old_meanings(dict(cache.attrs), spec) if cache else None
    meta = unfinished_run(old_attrs, with_old_meanings(journal.meta(), spec), settings)
    if meta == "finished":   # a journal left by a run that finished but was killed before cleaning up
        journal.remove()
        meta = None
    old = compare_with_old(cache, old_attrs, known, ds, settings, spec, image_processor, out, force) if cache else None
    lead = Lead(t0, ds, settings, recorded or templates_for(ds.domains, ds.classes), recorded, templates is not None,
                image_processor, journal, old)
    plan = Plan(spec, out, ds.root, tuple(r.path for r in ds.records), dtype_name(dt), kind)
    if old is not None and old.up_to_date:
        return plan, lead, None
    todo = [i for i, p in enumerate(plan.paths) if p not in lead.kept]
    _say_reextracting(out, old, len(todo))
    settings["todo_sha256"] = paths_sha256(plan.paths[i] for i in todo)  # which images this run embeds
    model = load_image_tower(spec, dev, dt) if todo else None   # a model that cannot load fails before the journal
    size = open_journal(journal, settings, batch_size or default_batch_size(dev), None if restart else meta)
    batches = batches_of(todo, size)
    done = set(journal.done())
    plan = Plan(plan.spec, out, plan.root, plan.paths, plan.dtype, kind, size, batches,
                tuple(s for s in batches if s not in done))
    if plan.resumed:
        print(f"resuming: {plan.resumed} of {len(todo)} images already embedded in {journal.dir}")
    return plan, lead, model


def image_processing(spec: ModelSpec, processor: str, dev) -> tuple[str, object]:
    """(the processor kind this run uses, the checkpoint's image processor); ``device`` only for the backbones whose
    processor it reproduces."""
    kind = choose_processor(processor, dev)
    if kind == "device" and backbone_name(spec) not in DEVICE_BACKBONES:
        raise ExtractionError(f"--processor device reproduces the image processor of {', '.join(DEVICE_BACKBONES)} "
                              f"checkpoints; {spec.model_id!r} is a {backbone_name(spec)} one: use --processor pil "
                              f"(or fast)")
    return kind, load_processor(spec, kind)


def read_old(out: Path, force: bool) -> "_cache.Cache | None":
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


def _note_ignored(ignored) -> None:
    if ignored:
        print(f"note: {len(ignored)} entries skipped: " + ", ".join(ignored[:10])
              + (f" ... ({len(ignored) - 10} more)" if len(ignored) > 10 else ""))


def run_settings(spec: ModelSpec, dt, kind: str, image_processor, ds) -> dict:
    """The settings a cache or journal must share with this run to be reused or resumed."""
    return {"model_id": spec.model_id, "revision": spec.revision, "tokenizer_sha256": spec.tokenizer,
            "dtype": dtype_name(dt), "processor": kind, "processor_class": type(image_processor).__name__,
            "manifest_sha256": ds.manifest_sha256(), "n_images": len(ds.records)}


def _recorded_templates(cache) -> dict | None:
    """The prompt set an earlier ``extract --prompts FILE`` chose for this cache (it stays), if any."""
    if cache is None:
        return None
    try:
        return cache.templates()
    except _cache.CacheError:
        return None


def with_old_meanings(attrs: dict | None, spec: ModelSpec) -> dict | None:
    """A cache's or journal's settings with the meaning older versions gave the ones they did not record: the PIL
    path before --processor existed; the tokenizer, which cannot be checked then."""
    if attrs is None:
        return None
    attrs = dict(attrs)
    attrs.setdefault("processor", "pil" if "Pil" in str(attrs.get("processor_class", "Pil")) else "fast")
    attrs.setdefault("tokenizer_sha256", spec.tokenizer)
    return attrs


def unfinished_run(old: dict | None, meta: dict | None, settings: dict):
    """The settings of the run that left the journal: None (no journal), "finished" (the cache holds that run: the
    journal is left over), else the journal's settings."""
    if (meta and old and all(old.get(k) == meta.get(k) for k in settings)
            and old.get("batch_size") == meta.get("batch_size")):
        return "finished"
    return meta


def check_same_model(old: dict, spec: ModelSpec, out: Path, force: bool) -> None:
    """Refuse to replace another model's embeddings (the weights' identity: a hub commit, or the hash of a local
    folder's weights, so that a moved folder is the same model) unless ``force``."""
    recorded = old.get("revision") not in (None, "", "not recorded")
    other = old.get("revision") != spec.revision if recorded else old.get("model_id") != spec.model_id
    if other and not force:
        raise ExtractionError(f"{out} holds the embeddings of another model ({old.get('model_id')} @ "
                              f"{str(old.get('revision'))[:19]}; this is {spec.model_id} @ {spec.revision[:19]}). "
                              f"Refusing to replace them: choose another --out (or leave it out: each model gets its "
                              f"own cache), or pass --force to replace them.")


def compare_with_old(cache, old: dict, known: dict, ds, settings: dict, spec: ModelSpec, image_processor, out: Path,
                     force: bool) -> OldCache:
    """The cache being replaced against this run: up to date (nothing to embed)? else which settings differ, what
    changed in the dataset (printed), which stored vectors can be kept and which prompts carry over."""
    check_same_model(old, spec, out, force)
    carried = _carried_prompts(cache, old, spec, force)
    differs = [k for k in settings if old.get(k) != settings[k]]
    if not differs and not force:
        if cache.vectors_usable():
            return OldCache(old, cache, up_to_date=True, carried_prompts=carried)
        differs = ["some stored vectors are not finite or all zeros"]   # a cache from before that was checked
    if "manifest_sha256" in differs:
        changes = compare({p: r.sha256 for p, r in known.items()}, {r.path: r.sha256 for r in ds.records})
        print(f"{out}: the dataset changed since this cache was made:\n{changes.summary()}")
    kept = {} if force else reusable(cache, old, ds, settings, image_processor)
    return OldCache(old, cache, differs=tuple(differs), kept=kept, carried_prompts=carried)


def _carried_prompts(cache, old: dict, spec: ModelSpec, force: bool) -> dict:
    """The old cache's prompt vectors when the model and tokenizer are this run's (else every prompt is encoded
    again); a damaged prompt table is an error, or under ``force`` encoded again."""
    if not _cache.same_model(old, spec.model_id, spec.revision, spec.tokenizer):
        return {}
    try:
        return cache.prompts
    except _cache.CacheError as e:
        if not force:
            raise
        print(f"note: {e}; --force: its prompts are encoded again")   # the new file's log starts empty
        return {}


def _say_reextracting(out: Path, old: OldCache | None, n_todo: int) -> None:
    if old is None:
        return
    why = ", ".join(old.differs) or "--force"
    print(f"{out}: re-extracting ({why}): keeping the {len(old.kept)} unchanged images' embeddings, "
          f"embedding {n_todo}" if old.kept else f"{out}: re-extracting ({why})")


def open_journal(journal: Journal, settings: dict, batch_size: int, meta: dict | None) -> int:
    """Resume the unfinished run's journal (``meta``: its settings; they must be this run's, and its batch size is
    kept so that results are identical), or start a new one. Returns the batch size of the run."""
    if meta is None:
        journal.remove()   # nothing, or a journal --restart discards
        journal.start({**settings, "batch_size": batch_size})
        return batch_size
    differs = [k for k in settings if meta.get(k) != settings[k]]
    if differs:
        raise ExtractionError(
            f"an unfinished run in {journal.dir} was made with other settings ({', '.join(differs)} differ: "
            f"{ {k: meta.get(k) for k in differs} }). Re-run with those settings to resume it, or pass "
            f"--restart to discard it.")
    if meta["batch_size"] != batch_size:
        print(f"resuming with the unfinished run's batch size {meta['batch_size']} (not {batch_size}) "
              f"so that results are identical")
    return meta["batch_size"]


def batches_of(todo: list[int], size: int) -> dict[int, list[int]]:
    """first image -> rows: ``todo`` cut into batches of ``size``, named by their first image (as journal shards)."""
    return {b[0]: b for b in (todo[k:k + size] for k in range(0, len(todo), size))}


def paths_sha256(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p}\n".encode())
    return h.hexdigest()


def reusable(cache, old, ds, settings, image_processor) -> dict:
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
    by_content = {}   # sha256 -> a stored row with those bytes: a file moved to another path keeps its vector
    for i, (p, h, ok, g) in enumerate(zip(stored["path"], stored["sha256"], stored["ok"], _cache.usable(vectors))):
        if h and (not ok or g):
            by_content.setdefault(h, (i, p))
    kept = {}
    for r in ds.records:
        i, p = by_content.get(r.sha256, (None, None))
        if i is not None:
            kept[r.path] = (vectors[i], bool(stored["ok"][i]), reasons.get(p, ""))
    return kept
