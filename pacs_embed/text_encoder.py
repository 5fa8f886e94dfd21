"""The text encoder: prompts the cache lacks, run through the cache's own text tower (torch, loaded on first use).

Reading prompts the cache holds needs none of this (``cache.Cache.prompt_vectors``); a ``TextEncoder`` is what
the cache calls for a prompt it lacks. ``preload_text_tower`` loads the tower in the background beforehand.

Usage::

    vectors = prompt_embeddings(cache_path, ["a photo", "a watercolor"])   # (2, D) float32, raw
    cache.prompt_vectors(prompts, TextEncoder(cache))                      # the same through an open Cache
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time

import numpy as np

from .cache import Cache, CacheError, model_mismatch, read_attrs
from .errors import ArgumentTypeError, PacsEmbedError

_tower_lock = threading.Lock()   # one load at a time: a call that needs the tower waits for a preload under way


def _text_tower(spec, device):
    with _tower_lock:
        return _load_text_tower(spec, device)


@functools.lru_cache(maxsize=4)
def _load_text_tower(spec, device):
    from .models import load_text_tower
    return load_text_tower(spec, device)


IDLE_S = 0.5   # in a notebook, a preload starts once no cell has run for this long


def preload_text_tower(path, model: str | None = None, device: str | None = None) -> threading.Thread:
    """Start loading the cache's text tower (torch, transformers, the weights) in a background thread and
    return at once, so that the first prompt the cache lacks is encoded without that wait (about 4 s on a
    2-core CPU). Nothing is downloaded: a model that is not on disk is left to the call that needs it, and
    so is any failure (that call loads the tower again and raises it).

    In an IPython kernel (a notebook) the load waits until the kernel is idle — no cell running for
    ``IDLE_S`` — e.g. while you edit a prompt: a background import holds Python's lock, and loading while the
    cells of a run execute made them about twice as slow (``benchmarks/preload_contention.py``). A cell that needs
    the tower before then loads it itself.

    Usage: ``preload_text_tower(cache_path)`` while the cache's own prompts are analysed.
    """
    shell = _ipython()
    idle = _when_idle(shell)

    def load():
        idle()
        try:
            _text_tower(_spec_for(path, model, local_only=True), device)
        except Exception:  # noqa: BLE001 - the encoding call that needs the tower reports it
            pass
    thread = threading.Thread(target=load, name="pacs_embed text tower", daemon=shell is not None)
    thread.start()
    return thread


def _ipython():
    """The running IPython shell (a notebook's kernel), or None; IPython is never imported for this."""
    import sys
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell if hasattr(getattr(shell, "events", None), "register") else None


def _when_idle(shell):
    """A function that returns once the IPython ``shell`` has run no cell for ``IDLE_S`` (at once when ``shell`` is
    None: not in IPython). It must be made while the cell that asks for it runs."""
    if shell is None:
        return lambda: None
    state = {"running": True, "since": 0.0}   # made inside a running cell

    def pre(*_):
        state["running"] = True

    def post(*_):
        state["running"], state["since"] = False, time.monotonic()
    shell.events.register("pre_run_cell", pre)
    shell.events.register("post_run_cell", post)

    def wait():
        while state["running"] or time.monotonic() - state["since"] < IDLE_S:
            time.sleep(0.05)
        for event, fn in (("pre_run_cell", pre), ("post_run_cell", post)):
            with contextlib.suppress(ValueError):
                shell.events.unregister(event, fn)
    return wait


def _spec_for(path, model, local_only: bool = False):
    from .models import resolve
    attrs = Cache.open(path).attrs if isinstance(path, Cache) else read_attrs(path)
    spec = resolve(model or attrs["model_id"], revision=None if model or attrs["revision"].startswith("sha256:")
                   else attrs["revision"], local_only=local_only)
    why = model_mismatch(attrs, spec.model_id, spec.revision, spec.tokenizer)
    if why:
        raise CacheError(f"{str(path)!r} was {why}; prompt vectors of different models, revisions or "
                                f"tokenizers do not mix (restore the model, or re-run `pacs-embed extract` with it: "
                                f"images whose model is unchanged are kept, prompts are encoded again).")
    return spec


def _without_model(path) -> str:
    """What a user whose cache's model cannot be loaded here can still do (said after why it cannot)."""
    return (f" With a copy of the same weights elsewhere, `pacs-embed prompts {str(path)!r} \"PROMPT\" ... --model FOLDER` "
            f"encodes them, or `pacs-embed extract --data DATASET --model FOLDER --out {str(path)!r}` records the new "
            f"folder (every image vector is kept). Without the model, only the prompts the cache holds can be used.")


class TextEncoder:
    """prompts -> (n, D) float32 raw vectors by the text tower of ``cache``'s own model (checked: model, revision and
    tokenizer files), loaded when first called. ``model`` names where the same weights lie now (a moved folder).
    ``model`` (a dict) says which tower it runs, for the cache's log of added prompts."""

    def __init__(self, cache, model: str | None = None, device: str | None = None):
        self.cache, self.name, self.device, self._spec = Cache.open(cache), model, device, None
        if model:   # a named model must be the cache's, even when every prompt is held
            self.spec()

    def spec(self):
        if self._spec is None:
            self._spec = _spec_for(self.cache, self.name)
        return self._spec

    @property
    def model(self) -> dict:
        s = self.spec()
        return {"model_id": s.model_id, "revision": s.revision, "tokenizer_sha256": s.tokenizer}

    def __call__(self, missing) -> np.ndarray:
        try:
            spec = self.spec()
        except PacsEmbedError as e:
            path = str(self.cache.path)
            unloadable = not self.name and not isinstance(e, CacheError)   # not found, rather than another model
            shown = ", ".join(repr(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise type(e)(f"{path!r} does not hold {len(missing)} prompt(s) asked for ({shown}); encoding them "
                          f"needs the cache's own model: {e}{_without_model(path) if unloadable else ''}") from e
        from . import models
        return models.encode_text(_text_tower(spec, self.device), list(missing))


def provenance(path, model: str | None = None) -> dict:
    """The cache's attributes (model, revision, dtype, ...); raises CacheError if ``model`` (when given)
    is not the cache's model and revision."""
    attrs = read_attrs(path)
    if model:
        _spec_for(path, model)
    return attrs


def prompt_embeddings(path, prompts, model: str | None = None, device: str | None = None) -> np.ndarray:
    """Raw embeddings of ``prompts`` in order: cached ones are read, missing ones encoded and appended.

    Parameters: ``path`` an embedding cache (a path or an open ``Cache``); ``model`` (optional) must resolve to the
    cache's own model and revision; ``device`` for the text tower (default: CUDA if present, else CPU).
    Returns a (len(prompts), D) float32 array.
    """
    if isinstance(prompts, (str, bytes)):
        raise ArgumentTypeError(f"prompts must be a list of strings, not one string ({prompts!r}); write [{prompts!r}]")
    cache = Cache.open(path)
    return cache.prompt_vectors(prompts, TextEncoder(cache, model, device))
