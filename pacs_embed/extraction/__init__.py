"""The one pass: every image through the image tower once, batched, resumable, into the HDF5 cache.

Usage::

    from pacs_embed.extraction import extract
    print(extract("data/PACS", model="openai/clip-vit-base-patch32"))

Read top to bottom, as clip-retrieval's runner: ``plan`` (a frozen Plan from the dataset scan, the cache being
replaced and the journal) -> ``reader`` (DataLoader workers decode this rank's batches) -> ``mapper`` (one per
processor kind: pixels -> the image tower's vectors) -> ``writer`` (one atomic journal shard per batch; then the
journal + kept vectors + prompts -> the HDF5 file). ``runner.extract`` wires them; ``ranks`` is torchrun.

Crash safety: each finished batch is written atomically to ``<out>.journal/``, named by its first image;
an interrupted run (Ctrl-C, kill -9) resumes from there with the same batches, so the result is identical
to an uninterrupted run. The HDF5 file is written as ``<out>.partial`` and renamed when complete.

Many GPUs / machines: under ``torchrun`` (``torch.distributed``: NCCL on CUDA, gloo on CPU) rank 0 plans,
every rank embeds every ``world_size``-th pending batch into the shared journal, and rank 0 assembles the
file after a barrier. The journal does not depend on the world size, so any run resumes any other.
"""
from ..errors import ExtractionError
from .plan import check_arguments, default_batch_size
from .runner import extract
from .summary import Summary

__all__ = ["extract", "Summary", "ExtractionError", "check_arguments", "default_batch_size"]
