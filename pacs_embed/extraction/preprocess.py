"""``--processor device``: JPEGs decoded on the extraction device (nvJPEG on CUDA) and every image resized,
centre-cropped and normalised there as a batch, in a few tensor ops per image size (no per-image Python loop).

The DataLoader workers only read: a JPEG's bytes (8-bit RGB or grey, with its end marker), anything else (PNG,
CMYK, truncated JPEGs) decoded on the CPU as the other processors do. ``decode`` turns a batch into uint8 images
on the device (``torchvision.io.decode_jpeg`` on a list, batched on CUDA; PIL where torchvision does not import; a
JPEG the batch decoder refuses is decoded alone, then by PIL, then recorded as unreadable). ``BatchTransform``
applies the checkpoint's PIL processor settings (shortest-edge resize with the same output size, antialiased
bicubic or bilinear, the result rounded to 8 bits as PIL's is, centre crop, rescale, normalise) to all images of one
size at once. ``tests/test_preprocess.py`` checks it against the PIL processor on pacs-mini (cosine >= 0.9999).

Usage::

    transform = BatchTransform.from_processor(load_processor(spec, "pil"))
    images, errors = decode(items, device)           # items: what the workers read
    pixels = transform(images)                       # (n, 3, 224, 224) float32 on the device
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from ..errors import ArgumentError

RESAMPLE = {2: "bilinear", 3: "bicubic"}   # PIL's codes: the two the checkpoint processors use


@dataclass(frozen=True)
class BatchTransform:
    """The PIL processor's steps as batched tensor ops on the device."""
    size: tuple                  # ("shortest_edge", S) or ("exact", H, W); () when not resizing
    crop: tuple | None           # (H, W) centre crop, or None
    mode: str                    # "bicubic" or "bilinear"
    scale: float                 # rescale factor (1/255), 1.0 when not rescaling
    mean: tuple | None           # per channel; None when not normalising
    std: tuple | None

    @classmethod
    def from_processor(cls, processor) -> "BatchTransform":
        """The transform of a transformers image processor (its ``to_dict()`` settings); an error naming any setting
        it cannot reproduce."""
        s = processor.to_dict()
        size = s.get("size") or {}
        if not s.get("do_resize", True):
            spec = ()
        elif size.get("shortest_edge") and not size.get("longest_edge"):
            spec = ("shortest_edge", int(size["shortest_edge"]))
        elif size.get("height") and size.get("width"):
            spec = ("exact", int(size["height"]), int(size["width"]))
        else:
            raise ArgumentError(f"--processor device cannot reproduce the resize {size}; use --processor pil")
        resample = int(s.get("resample", 3))
        if spec and resample not in RESAMPLE:
            raise ArgumentError(f"--processor device cannot reproduce resampling filter {resample}; use --processor pil")
        crop = s.get("crop_size") or {}
        normalise = s.get("do_normalize", True)
        return cls(spec, (int(crop["height"]), int(crop["width"])) if s.get("do_center_crop", True) and crop else None,
                   RESAMPLE.get(resample, "bicubic"), float(s.get("rescale_factor", 1 / 255)) if s.get("do_rescale", True)
                   else 1.0, tuple(s["image_mean"]) if normalise else None, tuple(s["image_std"]) if normalise else None)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' resize output size (``get_resize_output_image_size``, default_to_square False)."""
        if not self.size:
            return height, width
        if self.size[0] == "exact":
            return self.size[1], self.size[2]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size[1], int(self.size[1] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        """(n, 3, H, W) float32 pixel values of ``images`` (uint8 3 x h x w tensors, one device), in order: the images
        of one size go through each step together."""
        by_size: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(tuple(im.shape[-2:]), []).append(i)
        out = None
        for (h, w), rows in by_size.items():
            x = torch.stack([images[i] for i in rows]).float()
            if self.size:
                x = F.interpolate(x, size=self.output_size(h, w), mode=self.mode, align_corners=False, antialias=True)
                x = x.round_().clamp_(0, 255)     # PIL resizes 8-bit images to 8 bits
            if self.crop:
                x = center_crop(x, *self.crop)
            x = x * self.scale
            if self.mean is not None:
                mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
                std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
                x = (x - mean) / std
            if out is None:
                out = x.new_empty((len(images), *x.shape[1:]))
            out[torch.tensor(rows, device=x.device)] = x
        return out


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """transformers' centre crop of a batch: top = (H − h) // 2, left = (W − w) // 2, zero padding where the image is
    smaller than the crop."""
    H, W = x.shape[-2:]
    if H < height or W < width:   # padded symmetrically, as transformers does
        ph, pw = max(height - H, 0), max(width - W, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        H, W = x.shape[-2:]
    top, left = (H - height) // 2, (W - width) // 2
    return x[..., top:top + height, left:left + width]


def decode(items: list[torch.Tensor], device) -> tuple[list[torch.Tensor | None], dict[int, str]]:
    """uint8 3 x h x w images on ``device`` for what the workers read (1-D: a JPEG's bytes; 3-D: an image decoded on
    the CPU), in order, and {position: reason} for JPEGs no decoder could read (their image is None)."""
    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(items)
    jpegs = [i for i, it in enumerate(items) if it.ndim == 1]
    for i, it in enumerate(items):
        if it.ndim != 1:
            out[i] = it.to(device, non_blocking=True)
    errors = {}
    if jpegs:
        decoded = _decode_jpegs([items[i] for i in jpegs], device)
        for i, im in zip(jpegs, decoded):
            if isinstance(im, str):
                errors[i] = im
            else:
                out[i] = im
    return out, errors


def _decode_jpegs(data: list[torch.Tensor], device) -> list:
    """JPEG bytes -> uint8 RGB images on ``device``: torchvision's batched decoder (nvJPEG on CUDA) where it imports,
    one by one where the batch fails, PIL last; a string (the reason) for a file nothing decodes."""
    from ..models import has_torchvision
    if has_torchvision():
        from torchvision.io import ImageReadMode, decode_jpeg
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        out = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(_pil(d, device))
        return out
    return [_pil(d, device) for d in data]


def _pil(data: torch.Tensor, device):
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            rgb = np.array(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - recorded as the image's failure
        return f"{type(e).__name__}: {e}"
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous().to(device)
