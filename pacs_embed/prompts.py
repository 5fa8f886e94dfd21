"""Prompt templates (kept as data in ``data/prompts.json``) and prompt encoding through the cache.

Reading prompts that the cache holds needs no torch; only encoding a missing prompt loads the
text tower (``models``, torch and transformers are imported then, not before).

Usage::

    vectors = prompt_embeddings(cache_path, ["a photo", "a watercolor"])   # (2, D) float32, raw
"""
from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np

from . import cache as _cache
from .errors import PacsEmbedError


def load_templates(file=None) -> dict:
    """The prompt templates in ``file`` (JSON: domains, class_template, domain_class_template, ensembles,
    nouns), or the packaged PACS ones."""
    if file is None:
        return json.loads(resources.files("pacs_embed").joinpath("data/prompts.json").read_text())
    try:
        templates = json.loads(Path(file).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"prompt file {str(file)!r}: {e}") from e
    problem = _template_problem(templates)
    if problem:
        raise ValueError(f"prompt file {str(file)!r}: {problem} (see pacs_embed/data/prompts.json for the layout)")
    return templates


def _template_problem(t) -> str | None:
    """What is wrong with a templates dict, or None."""
    def strings(v):
        return isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v)
    if not isinstance(t, dict):
        return f"expected a JSON object, got {type(t).__name__}"
    if not (isinstance(t.get("domains", {}), dict) and all(isinstance(v, str) and v.strip()
                                                           for v in t.get("domains", {}).values())):
        return '"domains" must map domain folder names to prompts'
    if "{class}" not in str(t.get("class_template", "{class}")):
        return '"class_template" must contain {class}'
    dct = str(t.get("domain_class_template", "{domain} {class}"))
    if "{domain}" not in dct or "{class}" not in dct:
        return '"domain_class_template" must contain {domain} and {class}'
    if not (isinstance(t.get("ensembles", {}), dict) and all(strings(v) for v in t.get("ensembles", {}).values())):
        return '"ensembles" must map domain folder names to lists of prompts'
    if not strings(t.get("nouns", [])):
        return '"nouns" must be a list of words'
    return None


def readable(name: str) -> str:
    return name.replace("_", " ")


def domain_prompt(domain: str, templates: dict | None = None) -> str:
    """The set's prompt for a domain folder name, else 'a <domain name>'."""
    templates = templates or load_templates()
    return templates.get("domains", {}).get(domain) or f"a {readable(domain)}"


def class_prompts(classes, templates=None) -> list[str]:
    template = (templates or load_templates()).get("class_template", "a photo of a {class}")
    return [template.replace("{class}", readable(c)) for c in classes]


def domain_class_prompts(domain_text: str, classes, templates=None) -> list[str]:
    """'{domain text} of a {class}' (the templates' ``domain_class_template``) for each class or noun."""
    template = (templates or load_templates()).get("domain_class_template", "{domain} of a {class}")
    return [template.replace("{domain}", domain_text).replace("{class}", readable(c)) for c in classes]


def default_prompts(domains, classes, templates=None) -> list[str]:
    """What extraction encodes: domain prompts, class prompts, domain x class prompts (no duplicates)."""
    templates = templates or load_templates()
    out = [domain_prompt(d, templates) for d in domains] + class_prompts(classes, templates)
    for d in domains:
        out += domain_class_prompts(domain_prompt(d, templates), classes, templates)
    return list(dict.fromkeys(out))


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
    attrs = _cache.read_attrs(path)
    spec = resolve(model or attrs["model_id"], revision=None if model or attrs["revision"].startswith("sha256:")
                   else attrs["revision"], local_only=local_only)
    why = _cache.model_mismatch(attrs, spec.model_id, spec.revision, spec.tokenizer)
    if why:
        raise _cache.CacheError(f"{str(path)!r} was {why}; prompt vectors of different models, revisions or "
                                f"tokenizers do not mix (restore the model, or re-run `pacs-embed extract` with it: "
                                f"images whose model is unchanged are kept, prompts are encoded again).")
    return spec


def _without_model(path) -> str:
    """What a user whose cache's model cannot be loaded here can still do (said after why it cannot)."""
    return (f" With a copy of the same weights elsewhere, `pacs-embed prompts {str(path)!r} \"PROMPT\" ... --model FOLDER` "
            f"encodes them, or `pacs-embed extract --data DATASET --model FOLDER --out {str(path)!r}` records the new "
            f"folder (every image vector is kept). Without the model, only the prompts the cache holds can be used.")


def _unusable(prompts, vectors) -> list[str]:
    """The prompts whose vector is not ``cache.usable`` (NaN, inf, or all zeros)."""
    return [p for p, good in zip(prompts, _cache.usable(vectors)) if not good]


def provenance(path, model: str | None = None) -> dict:
    """The cache's attributes (model, revision, dtype, ...); raises CacheError if ``model`` (when given)
    is not the cache's model and revision."""
    if model:
        _spec_for(path, model)
    return _cache.read_attrs(path)


def prompt_embeddings(path, prompts, model: str | None = None, device: str | None = None) -> np.ndarray:
    """Raw embeddings of ``prompts`` in order: cached ones are read, missing ones encoded and appended.

    Parameters: ``path`` an embedding cache; ``model`` (optional) must resolve to the cache's own
    model and revision; ``device`` for the text tower (default: CUDA if present, else CPU).
    Returns a (len(prompts), D) float32 array.
    """
    if isinstance(prompts, (str, bytes)):
        raise TypeError(f"prompts must be a list of strings, not one string ({prompts!r}); write [{prompts!r}]")
    prompts = list(prompts)
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("prompts must be non-empty strings")
    if not prompts:
        return np.zeros((0, _cache.read_attrs(path)["embed_dim"]), np.float32)
    have = _cache.read_prompts(path)
    missing = [p for p in dict.fromkeys(prompts) if p not in have]
    if missing or model:
        try:
            spec = _spec_for(path, model)
        except PacsEmbedError as e:
            if not missing:
                raise
            unloadable = not model and not isinstance(e, _cache.CacheError)   # not found, rather than another model
            shown = ", ".join(repr(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise type(e)(f"{str(path)!r} does not hold {len(missing)} prompt(s) asked for ({shown}); encoding them "
                          f"needs the cache's own model: {e}{_without_model(path) if unloadable else ''}") from e
    if missing:
        from .models import encode_text
        vectors = encode_text(_text_tower(spec, device), missing)
        if bad := _unusable(missing, vectors):   # never stored: the next call tries again
            raise _cache.CacheError(f"the text tower returned a non-finite or zero vector for prompt(s) "
                                    f"{', '.join(map(repr, bad[:3]))}; nothing was added to {str(path)!r}")
        _cache.append_prompts(path, missing, vectors, spec.model_id, spec.revision, spec.tokenizer)
        have.update(zip(missing, vectors))
    out = np.stack([have[p] for p in prompts]).astype(np.float32)
    if bad := _unusable(prompts, out):
        raise _cache.CacheError(f"{str(path)!r}: the vector of prompt(s) {', '.join(map(repr, bad[:3]))} is not finite "
                                f"(NaN or inf) or all zeros; no analysis can use it. Re-extract into a new cache to encode "
                                f"them again.")
    return out
