"""Reader: this rank's batches of image files -> decoded (with the PIL processor, preprocessed) batches, in
DataLoader worker processes. An unreadable image is a recorded failure, never an exception.

Usage::

    reader = Reader(plan, plan.batches_for(ranks), image_processor, dev, workers=None)
    with reader.failures_said():
        for batch in reader:      # Batch(indices, pixels, errors)
            ...
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..errors import ExtractionError
from .images import ImageFiles, collate, worker_init
from .journal import Journal


@dataclass
class Batch:
    """One batch as read: its image indices, the pixels of the readable ones (in that order; None when none is),
    and {index: why it could not be read}."""
    indices: list[int]
    pixels: object
    errors: dict[int, str]


def default_workers(device: torch.device, local_world: int = 1) -> int:
    """CUDA: every core of this process's share but one decodes (the GPU outruns them); CPU: half the cores
    decode and the rest run the tower."""
    cores = max(1, (os.cpu_count() or 1) // local_world)
    return max(1, min(32, cores - 1)) if device.type == "cuda" else max(1, min(8, cores // 2))


class Reader:
    """The batches ``share`` (first images of ``plan.batches``) decoded by ``workers`` DataLoader processes."""

    def __init__(self, plan, share: list[int], image_processor, dev: torch.device, workers: int | None,
                 local_world: int = 1):
        self.n_workers = default_workers(dev, local_world) if workers is None else workers
        self.journal = Journal(plan.out)
        self.loader = torch.utils.data.DataLoader(
            ImageFiles(plan.root, list(plan.paths), image_processor, plan.processor),
            batch_sampler=[plan.batches[s] for s in share], num_workers=self.n_workers, collate_fn=collate,
            worker_init_fn=worker_init, pin_memory=dev.type == "cuda")

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            try:
                indices, pixels, errors = next(batches)
            except StopIteration:
                return
            except Exception as e:   # a worker failed outside an image's own decoding, or died
                raise self.failed(e) from e
            yield Batch(indices, pixels, errors)

    @contextlib.contextmanager
    def failures_said(self):
        """A worker that dies makes PyTorch raise wherever the main thread is (mapping, writing): said as ours."""
        try:
            yield
        except RuntimeError as e:
            if isinstance(e, ExtractionError) or "DataLoader worker" not in str(e):
                raise
            raise self.failed(e) from e

    def failed(self, e: Exception) -> ExtractionError:
        """The error for a DataLoader that failed outside any one image: what happened, that the finished batches
        are kept, and how to go on."""
        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        return ExtractionError(
            f"image decoding stopped: {type(e).__name__}: {first}. The batches embedded so far are kept in "
            f"{self.journal.dir}; run the same command again to resume"
            + (f" (with --workers 0 if the {self.n_workers} decoding worker processes keep failing: e.g. a full "
               f"/dev/shm, a file-size limit, too little memory)" if self.n_workers else ""))

