"""CLIP embeddings of a DomainBed-layout dataset, extracted once into HDF5, and analyses on them."""
__version__ = "0.1.0"

from .extract import extract  # noqa: E402
from .prompts import prompt_embeddings  # noqa: E402

__all__ = ["extract", "prompt_embeddings", "__version__"]
