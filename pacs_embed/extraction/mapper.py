"""Mappers: a decoded batch -> its image-tower vectors (left on the device), one mapper per processor kind.

Usage::

    mapper = MAPPERS[plan.processor](model, image_processor, dev)
    vectors = mapper(batch)          # (readable images, dim) tensor, or None when no image of the batch is readable

A new processor kind is one more subclass of ``Mapper`` here (it says how its pixels reach the tower) and one key
in ``MAPPERS``; ``reader.Reader`` decodes for it in ``images.ImageFiles``.
"""
from __future__ import annotations

import torch

from .. import models
from .preprocess import BatchTransform, decode


class Mapper:
    """``pil``: the checkpoint's PIL processor ran per image in the DataLoader workers; the batch goes to the tower."""

    def __init__(self, model, image_processor, dev: torch.device):
        self.model, self.image_processor, self.dev = model, image_processor, dev

    def pixels(self, batch):
        return batch.pixels

    def __call__(self, batch):
        pixels = self.pixels(batch) if batch.pixels is not None else None
        return None if pixels is None else models.embed_images(self.model, pixels)


class FastMapper(Mapper):
    """``fast``: the workers decode to uint8; resizing, cropping and normalising run on the device, a batch at a
    time (the checkpoint's torchvision processor)."""

    def pixels(self, batch):
        pixels = batch.pixels
        if isinstance(pixels, torch.Tensor):
            pixels = pixels.to(self.dev, non_blocking=True)
        out = self.image_processor(images=pixels, return_tensors="pt", device=self.dev)
        return out["pixel_values"] if set(out) == {"pixel_values"} else dict(out)   # SigLIP 2: several inputs


class DeviceMapper(Mapper):
    """``device``: JPEGs decoded on the device (nvJPEG on CUDA), then the PIL processor's steps as batched tensor
    operations there (``preprocess.BatchTransform``); a JPEG nothing can decode joins the batch's errors."""

    def __init__(self, model, image_processor, dev: torch.device):
        super().__init__(model, image_processor, dev)
        self.transform = BatchTransform.from_processor(image_processor)

    def pixels(self, batch):
        readable = [i for i in batch.indices if i not in batch.errors]   # the order of the batch's pixels
        images, failed = decode(batch.pixels, self.dev)
        for position, reason in failed.items():
            batch.errors[readable[position]] = reason
        images = [im for im in images if im is not None]
        return self.transform(images) if images else None


MAPPERS = {"pil": Mapper, "fast": FastMapper, "device": DeviceMapper}
