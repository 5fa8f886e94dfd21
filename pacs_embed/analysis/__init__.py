"""The analysis side: everything the notebooks and ``pacs-embed report`` call, from the cache alone.

It imports numpy, scipy and pandas — not torch, transformers or PIL — unless a prompt missing from
the cache must be encoded (then the text tower loads) or a figure is drawn (matplotlib uses Pillow).

Usage::

    from pacs_embed import analysis as pa
    emb = pa.load(cache)
    res = pa.evaluate(emb, domain_prompts={"cartoon": "a comic strip"})
    pa.method_means(res.table)
"""
from ..cache import Cache
from ..templates import load_templates, templates_for
from ..registry import match, registry
from ..text_encoder import prompt_embeddings, provenance
from .embeddings import Embeddings, dataset_status, l2_normalize, load
from .evaluation import Results, evaluate
from .methods import PARAMETERS
from .explorer import Edit, Explorer, explore
from .sweep import Sweep, sweep
from .heads import C_GRID, Head, HeadCache, fit_head, split
from . import lads  # noqa: F401  (registers the opt-in method "lads")
from .methods import METHODS, Method, Source, default_methods, delta, register
from .reporting import markdown, record, report
from .runs import notebook_run
from .similarity import (description_similarity, paper_comparison, paper_table1, prompt_similarity, similarity_matrix,
                         table1)
from .study import study
from .stats import gains, grid, method_means, summary
from .text import (DESCRIPTIONS, NO_DESCRIPTION, Description, TextSide, cached_prompts, described, preload_text_tower,
                   text_side)

__all__ = [
    # the cache
    "load", "Cache", "Embeddings", "l2_normalize", "dataset_status", "provenance", "prompt_embeddings",
    # datasets and their prompt templates
    "registry", "match", "templates_for", "load_templates",
    # the text side
    "text_side", "TextSide", "Description", "DESCRIPTIONS", "NO_DESCRIPTION", "preload_text_tower", "cached_prompts",
    "described",
    # methods and heads
    "METHODS", "Method", "Source", "register", "default_methods", "delta", "fit_head", "Head", "HeadCache", "split", "C_GRID",
    # evaluation, statistics, output
    "evaluate", "Results", "summary", "method_means", "gains", "grid", "sweep", "Sweep", "explore", "Explorer", "Edit", "PARAMETERS",
    "table1", "paper_table1", "paper_comparison", "prompt_similarity", "description_similarity", "similarity_matrix",
    "report", "study", "notebook_run", "record", "markdown", "plots",
]


def __getattr__(name):  # figures import matplotlib (and Pillow): only when asked for
    if name == "plots":
        import importlib
        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module 'pacs_embed.analysis' has no attribute {name!r}")
