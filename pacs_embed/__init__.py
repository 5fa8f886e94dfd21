"""CLIP embeddings of a DomainBed-layout dataset, extracted once into HDF5, and analyses on them.

Two sides meet at the HDF5 cache: extraction (``extract``, torch) writes it; analysis
(``from pacs_embed import analysis as pa``, numpy only) reads it. Importing this package imports
neither torch nor transformers; ``extract`` loads them when called.

Usage::

    from pacs_embed import extract, prompt_embeddings
    extract("data/PACS")
"""
__version__ = "0.1.0"
DEFAULT_MODEL = "openai/clip-vit-base-patch32"

__all__ = ["extract", "prompt_embeddings", "DEFAULT_MODEL", "__version__"]


def __getattr__(name):  # lazy: `import pacs_embed` must not pull in torch
    if name == "extract":
        from .extraction import extract
        return extract
    if name == "prompt_embeddings":
        from .text_encoder import prompt_embeddings
        return prompt_embeddings
    raise AttributeError(f"module 'pacs_embed' has no attribute {name!r}")
