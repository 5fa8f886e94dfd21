"""The embedding cache as an object: opened and checked once, then asked for what it holds.

A cache is one store (``storage``: an HDF5 file — ``hdf5``: the layout, the writer, the validating reader — or
tables in memory) plus the prompts added after
extraction in an append-only log beside it (``prompt_log``: ``<cache>.prompts``). ``Cache.open`` checks the
file once and holds its attributes and names; the image index and the prompt table are read once, when first
used; image vectors are read through the same open handle. Prompts the cache lacks are encoded by an encoder
you pass in (``text_encoder.TextEncoder``: the only part that needs torch) and appended to the log.

Usage::

    cache = Cache.open("data/embeddings/PACS/openai__clip-vit-base-patch32.h5")
    cache.attrs["model_id"], cache.domains, cache.classes
    x = cache.image_vectors(cache.index["ok"])            # (n_ok, D) raw vectors of the readable images
    v = cache.prompt_vectors(["a photo"], encoder=None)   # cached prompts; missing ones need an encoder
    cache.changes()                                       # Changes(added, removed, modified) vs the files now
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from . import storage
from .datasets import Changes, Record, compare, scan
from .errors import CacheError, PacsEmbedError  # noqa: F401  (CacheError: the cache's errors, importable from here)
from .files import NO_SPACE, LockBusy, component
from .files import locked as _locked
from .prompt_log import PromptLog, log_path

NOT_RECORDED = "not recorded"           # what a descriptive attribute a cache lacks reads
DESCRIPTIVE = ("processor_class", "device", "dtype", "batch_size", "created", "dataset_root", "torch_version",
               "transformers_version")


def heads_folder(path) -> Path:
    """``<cache>.heads/``: where the analysis keeps the heads it fitted on this cache's vectors."""
    return Path(path).with_name(Path(path).name + ".heads")


def default_path(dataset_name: str, model_id: str, folder="data/embeddings", revision: str | None = None) -> Path:
    """``data/embeddings/<dataset>/<model>.h5``: a hub id with '/' written as '__'; a local checkpoint folder by its
    name and a short hash of its weights' identity (``revision``), so that two checkpoints in folders of the same
    name (``/ckpt/a/final``, ``/ckpt/b/final``) never share a cache."""
    if os.path.isabs(model_id):
        tag = hashlib.sha256(f"{model_id}\0{revision or ''}".encode()).hexdigest()[:8]
        name = f"{Path(model_id).name}-{tag}"
    else:
        name = model_id.replace("/", "__")
    return Path(folder) / component(dataset_name) / f"{component(name)}.h5"


def default_cache(folder="data/embeddings") -> Path:
    """The cache to use when none is named: ``$PACS_EMBED_CACHE``, else the most recently written ``*.h5`` under
    ``folder``; an error saying how to make or name one when there is none."""
    named = os.environ.get("PACS_EMBED_CACHE")
    if named:
        return Path(named)
    found = sorted(Path(folder).glob("**/*.h5"), key=lambda p: p.stat().st_mtime_ns)
    if not found:
        raise CacheError(f"no cache under {folder}/ and PACS_EMBED_CACHE is not set: make one with `pacs-embed extract "
                         f"--data DATASET --model MODEL` (it writes {folder}/<dataset>/<model>.h5), or name one")
    return found[-1]


def default_cache_reason(folder="data/embeddings") -> str:
    """Why ``default_cache`` chose the cache it chose, for the console."""
    if os.environ.get("PACS_EMBED_CACHE"):
        return "named by $PACS_EMBED_CACHE"
    found = list(Path(folder).glob("**/*.h5"))
    return (f"the newest of {len(found)} cache(s) under {folder}/, as no cache was named; name one to choose"
            if len(found) > 1 else f"the one cache under {folder}/, as no cache was named")


@contextlib.contextmanager
def locked(path, wait: bool = True):
    """One writer of the cache at ``path`` at a time (``files.locked``); busy is a CacheError."""
    try:
        with _locked(path, wait):
            yield
    except LockBusy as e:
        raise CacheError(str(e)) from None


def usable(vectors) -> np.ndarray:
    """Per row: whether the vector can stand for an image or prompt — finite (no NaN or inf) and not all zeros
    (no direction: it cannot be normalised)."""
    v = np.asarray(vectors)
    return np.isfinite(v).all(1) & v.any(1)


def same_model(attrs, model_id: str, revision: str, tokenizer: str | None = None) -> bool:
    """Whether (model_id, revision) is the model a cache was made with, and (when ``tokenizer`` is given) its
    tokenizer files the ones the cache's prompts were encoded with.

    Local folders are identified by the hash of their weights (``sha256:...``), wherever they lie now.
    Caches made before the tokenizer was recorded (no ``tokenizer_sha256``) cannot be checked for it.
    """
    if tokenizer is not None and attrs.get("tokenizer_sha256", tokenizer) != tokenizer:
        return False
    if str(revision).startswith("sha256:"):
        return attrs["revision"] == revision
    return (attrs["model_id"], attrs["revision"]) == (model_id, revision)


def model_mismatch(attrs, model_id: str, revision: str, tokenizer: str | None = None) -> str:
    """Why (model_id, revision, tokenizer) is not what the cache was made with ("" when it is)."""
    if not same_model(attrs, model_id, revision):
        return f"made with {attrs['model_id']} @ {attrs['revision']}, not {model_id} @ {revision}"
    if not same_model(attrs, model_id, revision, tokenizer):
        return (f"made with {attrs['model_id']} @ {attrs['revision']} and other tokenizer files (tokenizer_sha256 "
                f"{attrs['tokenizer_sha256']}, now {tokenizer}): the model folder's tokenizer changed since")
    return ""


class Cache(os.PathLike):
    """An embedding cache, opened and checked once (``Cache.open``): a path, or a ``storage.Store`` (e.g. a
    ``MemoryStore``). It stands for its path where one is expected (``Path(cache)``, ``open(cache)``, f-strings)."""

    def __init__(self, source):
        self._file = storage.open_store(source)
        self.path = Path(self._file.path)
        try:
            self._identity = self._file.identity()
            attrs = dict(self._file.attrs)
            attrs.setdefault("embed_dim", int(self._file.shape[1]))
            self.attrs = {**dict.fromkeys(DESCRIPTIVE, NOT_RECORDED), **attrs}
            self.domains, self.classes = self._file.names()
        except BaseException:
            self._file.close()
            raise
        self.n_images, self.dim = self._file.shape
        self._log = PromptLog(log_path(self.path))
        self._prompts: dict[str, np.ndarray] | None = None
        self.unsaved: set[str] = set()   # prompts encoded in this process that could not be added to the log
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path) -> "Cache":
        """The cache at ``path`` or over a ``storage.Store`` (a Cache is returned as it is); a missing, damaged or
        foreign file is a CacheError naming it and what is wrong."""
        return path if isinstance(path, Cache) else cls(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r})"

    def __reduce__(self):   # pickles as its path (a store in memory: itself); unpickled, opened (and checked) again
        return Cache.open, (self._file.reference(),)

    def close(self) -> None:
        """Close the file handle (reads that need it later open it again, after checking the file was not replaced)."""
        with self._lock:
            self._file.close()

    def _h(self) -> storage.Store:
        """The open store, reopened if it was closed — refused if the file at the path is no longer this one."""
        if not self._file.is_open:
            self.check_current("read it")
            self._file.reopen()
        return self._file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def replaced(self) -> bool:
        """Whether the file at the path is no longer the one opened (re-extracted, or copied over)."""
        try:
            return self._file.identity() != self._identity
        except FileNotFoundError:
            return True

    def check_current(self, doing: str = "use it") -> None:
        if self.replaced():
            raise CacheError(f"{str(self.path)!r} was replaced (re-extracted or copied over) after it was opened; its "
                             f"vectors in memory are the old file's, so they cannot be mixed with the new file's "
                             f"prompts. Load it again (emb = pa.load(...)) to {doing}.")

    # -- images ---------------------------------------------------------------------------------------------
    @cached_property
    def index(self) -> dict:
        """Every image's path, domain, label, ok, sha256, size, mtime_ns (checked: read as what each must be)."""
        with self._lock:
            return self._h().index(len(self.domains), len(self.classes))

    def image_vectors(self, rows=None) -> np.ndarray:
        """The stored image vectors (raw, float as stored): all, or the rows of a boolean mask / index array."""
        with self._lock:
            return self._h().embedding(rows)

    def vectors_usable(self) -> bool:
        """Whether every image vector marked readable is ``usable`` (read in blocks: no copy of the whole matrix)."""
        ok = self.index["ok"]
        with self._lock:
            return all(usable(e[ok[i:i + len(e)]]).all() for i, e in self._h().blocks())

    def records(self) -> dict[str, Record]:
        """path -> Record (domain, label, size, mtime, sha256) as extracted."""
        a = self.index
        return {p: Record(p, int(d), int(c), int(s), int(m), h) for p, d, c, s, m, h in zip(
            a["path"], a["domain"], a["label"], a["size"], a["mtime_ns"], a["sha256"])}

    def failures(self) -> list[tuple[str, str]]:
        with self._lock:
            return self._h().failures()

    def changes(self, root=None) -> Changes:
        """Exactly which dataset files were added, removed or modified since extraction (files whose size and
        mtime are unchanged are trusted; others are hashed again)."""
        root = root or self.attrs["dataset_root"]
        if root == NOT_RECORDED:
            raise CacheError(f"{str(self.path)!r} does not record its dataset folder; name it (pacs-embed info --data FOLDER)")
        old = self.records()
        now = scan(root, known=old, progress=False)
        return compare({p: r.sha256 for p, r in old.items()}, {r.path: r.sha256 for r in now.records})

    # -- prompts --------------------------------------------------------------------------------------------
    @property
    def model(self) -> dict:
        """Which text tower the cache's prompts must come from (``prompt_log.MODEL_KEYS``)."""
        return {"model_id": self.attrs["model_id"], "revision": self.attrs["revision"],
                "tokenizer_sha256": self.attrs.get("tokenizer_sha256")}

    def _ours(self, record) -> bool:
        """A log record is the cache's when the same model (and tokenizer, where both say) encoded it; others are
        left over from a cache this one replaced with another model."""
        return same_model(self.attrs, record.model["model_id"], record.model["revision"],
                          record.model.get("tokenizer_sha256"))

    def _take(self, texts, vectors, where: str) -> None:
        table = self._prompts
        for t, v in zip(texts, vectors):
            if t in table and not np.array_equal(table[t], v):
                fix = (storage.REBUILD if where == "/prompts" else
                       f"`pacs-embed prompts {self.path} --repair` sets the log's contradicting records aside (or "
                       f"`pacs-embed extract --force` rebuilds the cache)")
                raise CacheError(f"{str(self.path)!r} is damaged or inconsistent: {where} holds the prompt {t!r} twice, "
                                 f"with two different vectors. {fix}.")
            table[t] = v

    def repair_prompts(self) -> tuple[int, Path | None]:
        """Rewrite the prompt log without the records that contradict the file's prompts or an earlier record (another
        vector for the same prompt); its old bytes are kept beside it first. Returns (records set aside, where the old
        bytes are, or None when nothing was wrong)."""
        with locked(self.path), self._lock:
            table = dict(zip(*self._h().prompts()))
            keep, dropped = [], 0
            for record in _all_records(self._log):
                if self._ours(record) and any(t in table and not np.array_equal(table[t], v)
                                              for t, v in zip(record.texts, record.vectors)):
                    dropped += 1
                    continue
                if self._ours(record):
                    table.update(zip(record.texts, record.vectors))
                keep.append(record)
            if not dropped:
                return 0, None
            kept = self._log.set_aside()
            self._log.rewrite(keep)
            self._prompts = None
            return dropped, kept

    def _refresh(self) -> dict[str, np.ndarray]:
        with self._lock:
            if self._prompts is None:
                self._prompts = {}
                self._templates = self._stored_templates()
                self._take(*self._h().prompts(), "/prompts")
            for record in self._log.read_new():   # only what was committed since the last look
                if self._ours(record) and record.templates is not None:
                    self._templates = record.templates
                if self._ours(record):
                    if record.vectors.shape[1] != self.dim:
                        raise CacheError(f"{str(self._log.path)!r} holds {record.vectors.shape[1]}-dimensional prompt "
                                         f"vectors; the cache's are {self.dim}-dimensional. Delete it (its prompts are "
                                         f"encoded again when needed).")
                    self._take(record.texts, record.vectors, str(self._log.path))
            return self._prompts

    def _stored_templates(self) -> dict | None:
        text = self.attrs.get("prompt_templates")
        if text in (None, NOT_RECORDED, ""):
            return None
        try:
            templates = json.loads(text)
        except ValueError:
            raise CacheError(f"{str(self.path)!r} is damaged or inconsistent: its prompt_templates attribute is not "
                             f"JSON. {storage.REBUILD}.") from None
        return templates if isinstance(templates, dict) else None

    def templates(self) -> dict | None:
        """The prompt set chosen for this cache at extraction (``extract --prompts FILE``: recorded in the file, or,
        given to an up-to-date cache, in its log), or None: the dataset's own (the registry's, else generic)."""
        self._refresh()
        return self._templates

    @property
    def prompts(self) -> dict[str, np.ndarray]:
        """prompt -> raw vector: those of the file and of its log (read once; new log records when they appear)."""
        return dict(self._refresh())

    def prompt_vectors(self, prompts, encoder=None) -> np.ndarray:
        """(len(prompts), D) float32 raw vectors in order. Missing prompts are encoded by ``encoder`` (prompts ->
        vectors, with a ``model`` dict saying which text tower it runs) and appended to the log; without one they
        are a CacheError naming them."""
        prompts = self._checked_prompts(prompts)
        if not prompts:
            return np.zeros((0, self.dim), np.float32)
        self.check_current("encode or read prompts")
        have = self._refresh()
        missing = [p for p in dict.fromkeys(prompts) if p not in have]
        if missing:
            have = self._encode(missing, encoder)
        out = np.stack([have[p] for p in prompts]).astype(np.float32)
        if bad := [p for p, good in zip(prompts, usable(out)) if not good]:
            raise CacheError(f"{str(self.path)!r}: the vector of prompt(s) {', '.join(map(repr, bad[:3]))} is not finite "
                             f"(NaN or inf) or all zeros; no analysis can use it. Re-extract into a new cache to encode "
                             f"them again.")
        return out

    def _checked_prompts(self, prompts) -> list[str]:
        """``prompts`` as a list of non-empty UTF-8 strings, or an error saying what is wrong."""
        if isinstance(prompts, (str, bytes)):
            raise ArgumentTypeError(f"prompts must be a list of strings, not one string ({prompts!r}); write [{prompts!r}]")
        prompts = list(prompts)
        if any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ArgumentError("prompts must be non-empty strings")
        for p in prompts:
            try:
                p.encode("utf-8")
            except UnicodeEncodeError:   # e.g. bytes of another encoding on the command line (surrogate escapes)
                shown = p.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                raise ArgumentError(f"the prompt {shown!r} (for {self.path}) is not valid UTF-8 text; write it in "
                                    f"UTF-8") from None
        return prompts

    def _encode(self, missing: list[str], encoder) -> dict[str, np.ndarray]:
        """``missing`` encoded by ``encoder`` and added to the log (or, where it cannot be written, to this process's
        table, with a warning); the prompt table after."""
        if encoder is None:
            raise CacheError(f"{str(self.path)!r} does not hold {len(missing)} prompt(s) asked for "
                             f"({_shown(missing)}), and no text encoder was given to encode them")
        vectors = np.asarray(encoder(missing), np.float32)
        if bad := [p for p, good in zip(missing, usable(vectors)) if not good]:   # never stored: tried again next time
            raise CacheError(f"the text tower returned a non-finite or zero vector for prompt(s) "
                             f"{', '.join(map(repr, bad[:3]))}; nothing was added to {str(self.path)!r}")
        try:
            self.append_prompts(missing, vectors, encoder.model)
            return self._refresh()
        except OSError as e:   # a read-only folder, a full disk: the analysis goes on, the prompts are not kept
            why = f"no space left: {e.strerror}" if e.errno in NO_SPACE else str(e)
            warnings.warn(f"cannot save {len(missing)} new prompt(s) beside {str(self.path)!r} ({why}); they are used "
                          f"in this process only and encoded again next time. Copy the cache (with its "
                          f"{self._log.path.name} file) to a writable folder to keep them.", stacklevel=3)
            have = self._refresh()
            with self._lock:
                have.update(zip(missing, vectors))   # the table itself: later reads find them too
                self.unsaved.update(missing)
            return have

    def append_prompts(self, texts, vectors: np.ndarray, model: dict, templates: dict | None = None) -> int:
        """Add prompt vectors to the log (those not held yet; returns how many); refuses vectors from another model,
        revision or tokenizer, or of another dimension. One record, fsynced: a crash leaves the old prompts or all.
        ``templates``: the prompt set chosen for the cache from now on (recorded even when no prompt is new)."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ArgumentError(f"{str(self.path)!r}: {len(texts)} prompts need a ({len(texts)}, {self.dim}) matrix of "
                             f"vectors (the images' dimension); got {vectors.shape}")
        why = model_mismatch(self.attrs, model["model_id"], model["revision"], model.get("tokenizer_sha256"))
        if why:
            raise CacheError(f"{str(self.path)!r} was {why}; refusing to add prompts encoded otherwise.")
        with locked(self.path), self._lock:
            self.check_current("add prompts")
            have = self._refresh()
            keep = [i for i, t in enumerate(texts) if t not in have]
            if templates is not None and templates == self._templates:
                templates = None   # recorded already
            if keep or templates is not None:
                stale = [r for r in _all_records(self._log) if not self._ours(r)]
                if stale:   # left by a cache this one replaced: dropped, the rest kept (an atomic rewrite)
                    self._log.rewrite([r for r in _all_records(self._log) if self._ours(r)])
                    self._prompts = None
                self._log.append([texts[i] for i in keep], vectors[keep].reshape(len(keep), self.dim), model,
                                 templates)
                self._refresh()
            return len(keep)

    def dataset_name(self) -> str:
        """The dataset's name: its registry entry's, else the one recorded at extraction, else the cache folder's."""
        from .registry import match
        entry = match(self.domains, self.classes)
        if entry is not None:
            return entry.name
        recorded = str(self.attrs.get("dataset_name", NOT_RECORDED))
        return self.path.resolve().parent.name if recorded in (NOT_RECORDED, "", "None") else recorded

    def dataset_label(self) -> str:
        """The dataset's name as a table should print it: a registered dataset's subset says so
        ('PACS (224 of 9,991 images)'), so that a pasted table never claims the full dataset."""
        from .registry import match
        entry, name = match(self.domains, self.classes), self.dataset_name()
        if entry is not None and self.n_images < entry.n_images:
            return f"{name} ({self.n_images:,} of {entry.n_images:,} images)"
        return name

    def model_label(self) -> str:
        """The model's identity: its id, and the first characters of its revision (a hub commit, or the hash of a
        local folder's weights) — two checkpoints in folders of one name are told apart."""
        model, revision = str(self.attrs.get("model_id")), str(self.attrs.get("revision", ""))
        revision = revision.split(":", 1)[-1][:8]
        return f"{model}@{revision}" if revision and revision not in ("None", "none", NOT_RECORDED) else model

    def model_folder(self) -> str:
        """The model's identity as one path component: 'openai__clip-vit-base-patch32@3d74acf9', 'final@1a2b3c4d'."""
        model, _, revision = self.model_label().partition("@")
        name = Path(model).name if os.path.isabs(model) else model.replace("/", "__")
        return component(f"{name}@{revision}" if revision else name)

    def dataset(self) -> str:
        """Which registered dataset this is, and how many of its images the cache holds ('OfficeHome: 15,588 of
        15,588 images'), or that the registry does not know it."""
        from .registry import match
        entry = match(self.domains, self.classes)
        if entry is None:
            return ("a dataset the registry does not know (generic prompts: 'a {domain}', 'a photo of a {class}'); "
                    "add it to pacs_embed/data/datasets.json or pass --prompts FILE")
        d = self.index["domain"]
        counts = {name: int((d == i).sum()) for i, name in enumerate(self.domains)}
        line = entry.coverage(counts)
        if set(self.classes) != set(entry.classes):
            line += f"; {len(self.classes)} of its {len(entry.classes)} classes"
        return line

    # -- summary --------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """A short human-readable summary (``pacs-embed info``)."""
        a, ix, failures = self.attrs, self.index, self.failures()
        n_log = sum(len(r.texts) for r in _all_records(self._log) if self._ours(r))
        lines = [f"cache      {self.path}",
                 f"model      {a['model_id']} @ {a['revision']} ({a.get('backbone', 'clip')})",
                 f"processor  {a['processor_class']} ({a.get('processor', 'pil')})",
                 f"run        {a['device']} / {a['dtype']}, batch {a['batch_size']}, {a['created']}",
                 f"dataset    {a['dataset_root']} ({len(self.domains)} domains x {len(self.classes)} classes)",
                 f"known as   {self.dataset()}",
                 f"images     {self.n_images} ({int(ix['ok'].sum())} embedded, {len(failures)} failed), dim {self.dim}",
                 f"prompts    {len(self._refresh())} ({n_log} added since extraction, in {self._log.path.name}), "
                 f"tokenizer files sha256 {a.get('tokenizer_sha256') or 'not recorded'}",
                 f"versions   torch {a['torch_version']}, transformers {a['transformers_version']}, "
                 f"pacs_embed {a['pacs_embed_version']}"]
        heads = heads_folder(self.path)
        if heads.is_dir():   # the analysis side's fitted heads (pacs_embed.analysis.heads.HeadCache)
            files = list(heads.glob("*.npz"))
            lines.append(f"heads      {len(files)} fitted heads in {heads} ({sum(f.stat().st_size for f in files) / 2**20:.1f} "
                         f"MiB; each prompt edit adds the heads it changes; delete the folder to free the space)")
        lines += [f"  failed: {p}: {r}" for p, r in failures[:10]]
        return "\n".join(lines)


def _all_records(log: PromptLog):
    return PromptLog(log.path).read_new()


def _shown(prompts) -> str:
    return ", ".join(repr(p) for p in prompts[:3]) + (f" and {len(prompts) - 3} more" if len(prompts) > 3 else "")


def write(path, *args, **kwargs) -> None:
    """A new cache file (``storage.write``: atomic); prompts logged for the file it replaces are folded in by the
    caller (extraction carries them), so the log goes."""
    storage.write(path, *args, **kwargs)
    PromptLog(log_path(path)).remove()


@contextlib.contextmanager
def _once(path):
    """A Cache for one question: opened (and closed) here unless one is given."""
    if isinstance(path, Cache):
        yield path
    else:
        with Cache(path) as c:
            yield c


# One-shot readers for scripts and tests: each opens the cache once. Code that asks more than one thing opens a Cache.
def read_attrs(path) -> dict:
    with _once(path) as c:
        return c.attrs


def read_images(path) -> dict:
    """Every image's embedding and labels: keys embedding, path, domain, label, ok, sha256, domains, classes."""
    with _once(path) as c:
        return {"embedding": c.image_vectors(), **{k: c.index[k] for k in ("path", "domain", "label", "ok", "sha256")},
                "domains": c.domains, "classes": c.classes}


def read_prompts(path) -> dict[str, np.ndarray]:
    with _once(path) as c:
        return c.prompts
