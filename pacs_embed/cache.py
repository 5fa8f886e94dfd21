"""The HDF5 embedding cache: its layout, provenance, staleness check and prompt appends.

Layout (format version 1; all vectors are raw projected CLIP embeddings, float32, *not*
L2-normalised)::

    /                    attrs: provenance (model_id, revision, dtype, versions, manifest_sha256, ...)
    /domains, /classes   name tables (str)
    /images/embedding    (N, D) float32; NaN rows for images that failed to decode
    /images/path         (N,) str, relative to the dataset root
    /images/domain       (N,) int16 index into /domains
    /images/label        (N,) int16 index into /classes
    /images/ok           (N,) bool
    /images/sha256, size, mtime_ns   per-file content hash and stat, for staleness checks
    /failures/path, /failures/reason  images that could not be read, and why
    /prompts/text        (P,) str, appendable
    /prompts/embedding   (P, D) float32, appendable

Usage::

    info = read_attrs("data/embeddings/PACS/openai__clip-vit-base-patch32.h5")
    arrays = read_images(path)         # dict of numpy arrays + name lists
    changes = check_dataset(path)      # Changes(added, removed, modified) against the files now
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .datasets import Changes, Record, compare, scan
from .files import atomic_write
from .errors import PacsEmbedError

FORMAT_VERSION = 1
EMBEDDING_NOTE = ("raw projected CLIP embeddings (output of the visual/text projection), float32, "
                  "not L2-normalised")
STR = h5py.string_dtype()
GROUPS = ("domains", "classes", "images/embedding", "images/path", "images/domain", "images/label", "images/ok",
          "images/sha256", "images/size", "images/mtime_ns", "failures/path", "failures/reason", "prompts/text",
          "prompts/embedding")


class CacheError(PacsEmbedError, RuntimeError):
    pass


PROVENANCE = ("model_id", "revision")   # which model made the vectors: a cache must say (prompts are checked against it)
NOT_RECORDED = "not recorded"           # what read_attrs gives for a descriptive attribute a cache lacks
DESCRIPTIVE = ("processor_class", "device", "dtype", "batch_size", "created", "dataset_root", "torch_version",
               "transformers_version")


def heads_folder(path) -> Path:
    """``<cache>.heads/``: where the analysis keeps the heads it fitted on this cache's vectors."""
    return Path(path).with_name(Path(path).name + ".heads")


def default_path(dataset_name: str, model_id: str, folder="data/embeddings") -> Path:
    """``data/embeddings/<dataset>/<model>.h5`` with '/' in hub ids written as '__'."""
    name = Path(model_id).name if os.path.isabs(model_id) else model_id.replace("/", "__")
    return Path(folder) / dataset_name / f"{name}.h5"


_HELD: dict[str, int] = {}        # locks this process holds, and how deeply (a writer may nest)
_THREADS = threading.RLock()      # one writer thread at a time within this process


@contextlib.contextmanager
def locked(path, wait: bool = True):
    """An exclusive lock beside ``path`` (one writer at a time); ``wait=False`` fails at once.

    POSIX record locks (``lockf``): they belong to the process that took them, so DataLoader workers
    forked meanwhile do not inherit them, and a killed writer's lock dies with it.
    """
    lock = Path(str(path) + ".lock")
    key = str(lock.resolve())
    busy = CacheError(f"another process is writing {str(path)!r} (lock {lock}); wait for it to finish")
    if not _THREADS.acquire(blocking=wait):
        raise busy
    try:
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as f:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError:
                raise busy from None
            _HELD[key] = 1
            try:
                yield
            finally:
                del _HELD[key]
                fcntl.lockf(f, fcntl.LOCK_UN)
    finally:
        _THREADS.release()


def write(path, attrs: dict, domains, classes, records: list[Record], embeddings: np.ndarray,
          ok: np.ndarray, failures: list[tuple[str, str]], prompts: list[str], prompt_embeddings: np.ndarray):
    """Write a complete cache to ``<path>.partial``, then rename it to ``path`` (atomic)."""
    path = Path(path)
    embeddings, prompt_embeddings = np.asarray(embeddings), np.asarray(prompt_embeddings)
    n = len(records)
    if embeddings.ndim != 2 or len(embeddings) != n or len(ok) != n:
        raise ValueError(f"{str(path)!r}: {n} records need an (n, D) embedding matrix and n ok flags; got "
                         f"{embeddings.shape} and {len(ok)}")
    if prompt_embeddings.shape != (len(prompts), embeddings.shape[1]):
        raise ValueError(f"{str(path)!r}: {len(prompts)} prompts need a ({len(prompts)}, {embeddings.shape[1]}) "
                         f"matrix of vectors (the images' dimension); got {prompt_embeddings.shape}")
    if any(not 0 <= r.domain < len(domains) or not 0 <= r.label < len(classes) for r in records):
        raise ValueError(f"{str(path)!r}: a record's domain or label index is outside the {len(domains)} domains "
                         f"and {len(classes)} classes")
    buffer = io.BytesIO()   # built in memory, written with plain file I/O: a full disk is a clean error, not a crash
    with h5py.File(buffer, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses: h5py fails
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["pacs_embed_version"] = __version__
        f.attrs["embedding"] = EMBEDDING_NOTE
        f.attrs["n_images"] = len(records)
        f.attrs["embed_dim"] = embeddings.shape[1]
        f.create_dataset("domains", data=np.array(domains, dtype=object), dtype=STR)
        f.create_dataset("classes", data=np.array(classes, dtype=object), dtype=STR)
        g = f.create_group("images")
        g.create_dataset("embedding", data=embeddings.astype(np.float32))
        g.create_dataset("path", data=np.array([r.path for r in records], dtype=object), dtype=STR)
        g.create_dataset("domain", data=np.array([r.domain for r in records], np.int16))
        g.create_dataset("label", data=np.array([r.label for r in records], np.int16))
        g.create_dataset("ok", data=ok.astype(bool))
        g.create_dataset("sha256", data=np.array([r.sha256 for r in records], dtype=object), dtype=STR)
        g.create_dataset("size", data=np.array([r.size for r in records], np.int64))
        g.create_dataset("mtime_ns", data=np.array([r.mtime_ns for r in records], np.int64))
        fg = f.create_group("failures")
        fg.create_dataset("path", data=np.array([p for p, _ in failures], dtype=object), dtype=STR)
        fg.create_dataset("reason", data=np.array([r for _, r in failures], dtype=object), dtype=STR)
        pg = f.create_group("prompts")
        pg.attrs["embedding"] = EMBEDDING_NOTE + "; text tower run in float32"
        pg.create_dataset("text", data=np.array(prompts, dtype=object), dtype=STR,
                          maxshape=(None,), chunks=(1024,))
        pg.create_dataset("embedding", data=prompt_embeddings.astype(np.float32),
                          maxshape=(None, embeddings.shape[1]), chunks=(256, embeddings.shape[1]))
    atomic_write(path, buffer.getvalue(), durable=True)


def _open(path, mode="r"):
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"no cache at {str(path)!r}; make it with `pacs-embed extract` (see --out).")
    for attempt in range(50):  # another process may hold HDF5's own file lock for a moment
        try:
            f = h5py.File(path, mode)
            break
        except OSError as e:
            if "lock" not in str(e).lower() or attempt == 49:
                raise CacheError(f"cannot open cache {str(path)!r}: {e}") from e
            time.sleep(0.2)
    version = f.attrs.get("format_version")
    if version is None or "pacs_embed_version" not in f.attrs:
        f.close()
        raise CacheError(f"{str(path)!r} is an HDF5 file but not a pacs_embed cache (no pacs_embed attributes)")
    if version != FORMAT_VERSION:
        f.close()
        raise CacheError(f"{str(path)!r} has cache format {version!r}; this pacs_embed reads {FORMAT_VERSION}. "
                         f"Re-run `pacs-embed extract --force`.")
    missing = [g for g in GROUPS if g not in f]
    problem = (f"it lacks {', '.join('/' + g for g in missing)}" if missing else _layout_problem(f))
    if not problem and (unsaid := [a for a in PROVENANCE if a not in f.attrs]):
        problem = (f"it does not say which model made its vectors (no attribute {', '.join(unsaid)}; add it), so no "
                   f"prompt can be checked against them")
    if problem:
        f.close()
        raise CacheError(f"{str(path)!r} is damaged or inconsistent: {problem}. "
                         f"Re-run `pacs-embed extract --force` to rebuild it.")
    return f


def _layout_problem(f) -> str:
    """What makes the arrays of an open cache disagree with each other (shapes only: no vector is read), or ""."""
    e, n = f["images/embedding"], f["images/path"].shape[0]
    if e.ndim != 2 or e.shape[0] != n:
        return f"/images/embedding has shape {e.shape}, not one row per image path ({n})"
    for name in ("domain", "label", "ok", "sha256", "size", "mtime_ns"):
        if f[f"images/{name}"].shape != (n,):
            return f"/images/{name} has shape {f[f'images/{name}'].shape}, not one entry per image ({n})"
    p, texts = f["prompts/embedding"], f["prompts/text"].shape[0]
    if p.ndim != 2 or p.shape != (texts, e.shape[1]):
        return (f"/prompts/embedding has shape {p.shape}, not one {e.shape[1]}-dimensional vector (the images' "
                f"dimension) per prompt ({texts})")
    if f["failures/path"].shape != f["failures/reason"].shape:
        return "/failures/path and /failures/reason differ in length"
    return ""


def read_attrs(path) -> dict:
    """The cache's attributes; descriptive ones it lacks (a cache written by another tool) read "not recorded"."""
    with _open(path) as f:
        a = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        a.setdefault("embed_dim", int(f["images/embedding"].shape[1]))
    return {**dict.fromkeys(DESCRIPTIVE, NOT_RECORDED), **a}


def read_names(path) -> tuple[list[str], list[str]]:
    """(domains, classes) without reading any vectors."""
    with _open(path) as f:
        return f["domains"].asstr()[:].tolist(), f["classes"].asstr()[:].tolist()


def read_images(path) -> dict:
    """Every image's embedding and labels: keys embedding, path, domain, label, ok, sha256, domains, classes."""
    with _open(path) as f:
        g = f["images"]
        out = {"embedding": g["embedding"][:], "path": g["path"].asstr()[:].tolist(),
               "domain": g["domain"][:].astype(np.int64), "label": g["label"][:].astype(np.int64),
               "ok": g["ok"][:], "sha256": g["sha256"].asstr()[:].tolist(),
               "domains": f["domains"].asstr()[:].tolist(), "classes": f["classes"].asstr()[:].tolist()}
    for key, names in (("domain", "domains"), ("label", "classes")):
        v = out[key]
        if len(v) and (v.min() < 0 or v.max() >= len(out[names])):
            raise CacheError(f"{str(path)!r} is damaged or inconsistent: /images/{key} holds index "
                             f"{int(v.max() if v.max() >= len(out[names]) else v.min())}, but there are "
                             f"{len(out[names])} {names}. Re-run `pacs-embed extract --force` to rebuild it.")
    return out


def usable(vectors) -> np.ndarray:
    """Per row: whether the vector can stand for an image or prompt — finite (no NaN or inf) and not all zeros
    (no direction: it cannot be normalised)."""
    v = np.asarray(vectors)
    return np.isfinite(v).all(1) & v.any(1)


def readable_vectors_usable(path, rows: int = 1 << 16) -> bool:
    """Whether every image vector marked readable is ``usable`` (read in blocks of ``rows``: no copy of the whole
    matrix). Caches written before extraction checked this can hold NaN/inf rows marked readable, hand-made ones
    zero rows."""
    with _open(path) as f:
        e, ok = f["images/embedding"], f["images/ok"][:]
        return all(usable(e[i:i + rows][ok[i:i + rows]]).all() for i in range(0, len(ok), rows))


def read_failures(path) -> list[tuple[str, str]]:
    with _open(path) as f:
        return list(zip(f["failures/path"].asstr()[:], f["failures/reason"].asstr()[:]))


def stored_records(path) -> dict[str, Record]:
    with _open(path) as f:
        g = f["images"]
        return {p: Record(p, int(d), int(c), int(s), int(m), h) for p, d, c, s, m, h in zip(
            g["path"].asstr()[:], g["domain"][:], g["label"][:], g["size"][:], g["mtime_ns"][:], g["sha256"].asstr()[:])}


def check_dataset(path, root=None) -> Changes:
    """Exactly which dataset files were added, removed or modified since the cache was made.

    Files whose size and mtime are unchanged are trusted; others are hashed again.
    """
    root = root or read_attrs(path)["dataset_root"]
    if root == NOT_RECORDED:
        raise CacheError(f"{str(path)!r} does not record its dataset folder; name it (pacs-embed info --data FOLDER)")
    old = stored_records(path)
    now = scan(root, known=old, progress=False)
    return compare({p: r.sha256 for p, r in old.items()}, {r.path: r.sha256 for r in now.records})


def read_prompts(path) -> dict[str, np.ndarray]:
    with _open(path) as f:
        return dict(zip(f["prompts/text"].asstr()[:], f["prompts/embedding"][:]))


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


def append_prompts(path, texts: list[str], vectors: np.ndarray, model_id: str, revision: str,
                   tokenizer: str | None = None) -> None:
    """Append prompt embeddings; refuses vectors from another model, revision or tokenizer.

    Copy-on-write: the append goes to ``<path>.partial``, renamed over ``path`` when done, so a crash
    mid-append never damages the cache (the image embeddings are the expensive part).
    """
    path = Path(path)
    with locked(path):
        with _open(path) as f:
            why = model_mismatch(f.attrs, model_id, revision, tokenizer)
            if why:
                raise CacheError(f"{str(path)!r} was {why}; refusing to add prompts encoded otherwise.")
            have = set(f["prompts/text"].asstr()[:])
        keep = [i for i, t in enumerate(texts) if t not in have]
        if not keep:
            return
        buffer = io.BytesIO(path.read_bytes())   # copy-on-write, in memory; then one atomic write
        with h5py.File(buffer, "a") as f:
            _append(f, "prompts/text", np.array([texts[i] for i in keep], dtype=object))
            _append(f, "prompts/embedding", vectors[keep].astype(np.float32))
        atomic_write(path, buffer.getvalue(), durable=True)


def _append(f, name: str, rows: np.ndarray) -> None:
    """Append ``rows`` to the dataset ``name``. One written at a fixed size (by another tool, or h5py's default)
    cannot grow: it is rewritten as an appendable one (chunked, unlimited rows; text as UTF-8 strings), its
    attributes kept."""
    d = f[name]
    n = d.shape[0]
    if d.maxshape[0] is None:
        d.resize((n + len(rows),) + d.shape[1:])
        d[n:] = rows
        return
    text = rows.dtype == object
    old, attrs = (d.asstr()[:] if text else d[:]), dict(d.attrs)
    del f[name]
    data = np.concatenate([old.astype(object) if text else old.astype(np.float32), rows])
    d = f.create_dataset(name, data=data, dtype=STR if text else np.float32, maxshape=(None,) + data.shape[1:],
                         chunks=(1024,) if text else (256,) + data.shape[1:])
    d.attrs.update(attrs)


def describe(path) -> str:
    """A short human-readable summary of a cache."""
    a = read_attrs(path)
    imgs = read_images(path)
    failures = read_failures(path)
    with _open(path) as f:
        n_prompts = f["prompts/text"].shape[0]
    lines = [f"cache      {path}",
             f"model      {a['model_id']} @ {a['revision']}",
             f"processor  {a['processor_class']} ({a.get('processor', 'pil')})",
             f"run        {a['device']} / {a['dtype']}, batch {a['batch_size']}, {a['created']}",
             f"dataset    {a['dataset_root']} ({len(imgs['domains'])} domains x {len(imgs['classes'])} classes)",
             f"images     {len(imgs['path'])} ({int(imgs['ok'].sum())} embedded, {len(failures)} failed), dim {a['embed_dim']}",
             f"prompts    {n_prompts}, tokenizer files sha256 {a.get('tokenizer_sha256') or 'not recorded'}",
             f"versions   torch {a['torch_version']}, transformers {a['transformers_version']}, pacs_embed {a['pacs_embed_version']}"]
    heads = heads_folder(path)
    if heads.is_dir():   # the analysis side's fitted heads (pacs_embed.analysis.heads.HeadCache)
        files = list(heads.glob("*.npz"))
        lines.append(f"heads      {len(files)} fitted heads in {heads} ({sum(f.stat().st_size for f in files) / 2**20:.1f} MiB; "
                     f"each prompt edit adds the heads it changes; delete the folder to free the space)")
    lines += [f"  failed: {p}: {r}" for p, r in failures[:10]]
    return "\n".join(lines)
