"""Image files -> pixels: decoding (PIL, or torchvision for the fast processor) in DataLoader workers; for the device
processor the workers read JPEG bytes and the device decodes them (``preprocess.py``).

Usage::

    rgb = read_rgb("photo/dog/1.jpg")            # PIL RGB, 8-bit; 16-bit scaled, bombs refused
    loader = DataLoader(ImageFiles(root, paths, processor, "pil"), batch_sampler=..., collate_fn=collate)
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from ..errors import ArgumentError


class ImageFiles(torch.utils.data.Dataset):
    """Decodes (and with the PIL processor, preprocesses) one image in a DataLoader worker; failures are
    returned, not raised. With the fast processor it returns the decoded uint8 CHW tensor: resizing, cropping
    and normalising happen on the extraction device, a batch at a time."""

    def __init__(self, root: Path, paths: list[str], processor, kind: str):
        self.root, self.paths, self.processor, self.kind = root, paths, processor, kind

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            if self.kind == "fast":
                return i, read_uint8(self.root / self.paths[i]), None
            if self.kind == "device":
                return i, read_for_device(self.root / self.paths[i]), None
            rgb = read_rgb(self.root / self.paths[i])
            out = self.processor(images=rgb, return_tensors="pt")
            if set(out) == {"pixel_values"}:
                return i, out["pixel_values"][0], None
            return i, {k: v[0] for k, v in out.items()}, None   # SigLIP 2: patches, their mask, the patch grid
        except Exception as e:  # noqa: BLE001 - any unreadable file is recorded, not fatal
            return i, None, f"{type(e).__name__}: {e}"


@contextlib.contextmanager
def _open_image(path):
    """Image.open, refusing images over Pillow's pixel limit (a decompression bomb) before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            yield im


def read_rgb(path) -> Image.Image:
    """Decode an image to 8-bit RGB. High-bit-depth images are scaled to 8 bits (Pillow's convert("RGB")
    would clip 16-bit values to white); images over Pillow's pixel limit (a decompression bomb, e.g. a
    15 KB PNG of 11,000 x 11,000) are refused before they are decoded."""
    with _open_image(path) as im:
        if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            a = np.asarray(im).astype(np.int64)
            bits = 16 if im.mode.startswith("I;16") or a.max() > 255 else 8
            a = np.clip(a >> (bits - 8), 0, 255).astype(np.uint8)
            return Image.fromarray(a, "L").convert("RGB")
        if im.mode == "F":
            raise ArgumentError("floating-point images are not supported")
        im.load()
        return im.convert("RGB")


def read_uint8(path) -> torch.Tensor:
    """The image as a 3 x H x W uint8 tensor: 8-bit RGB or grey JPEG/PNG decoded by torchvision (libjpeg-turbo,
    libpng), anything else (and JPEGs without their end marker) through ``read_rgb``, so that both processors
    treat odd files alike."""
    with _open_image(path) as im:
        fast = im.format in ("JPEG", "PNG") and im.mode in ("RGB", "L")
        if fast and im.format == "JPEG":  # libjpeg decodes a truncated file with a warning; PIL refuses it
            fast = _ends_with_jpeg_eoi(path)
    if fast:
        from torchvision.io import ImageReadMode, decode_image, read_file
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    return torch.from_numpy(np.array(read_rgb(path))).permute(2, 0, 1).contiguous()


def read_for_device(path) -> torch.Tensor:
    """For ``--processor device``: an 8-bit RGB or grey JPEG with its end marker as its bytes (a 1-D uint8 tensor,
    decoded later on the device), anything else decoded here to 3 x H x W uint8 as ``read_rgb`` does."""
    with _open_image(path) as im:
        jpeg = im.format == "JPEG" and im.mode in ("RGB", "L")
    if jpeg and _ends_with_jpeg_eoi(path):
        return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    return torch.from_numpy(np.array(read_rgb(path))).permute(2, 0, 1).contiguous()


def _ends_with_jpeg_eoi(path) -> bool:
    """True when the JPEG's end-of-image marker is in its last bytes (some writers pad after it)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        return b"\xff\xd9" in f.read()


def collate(items):
    """(indices, pixels of the readable ones in that order, {index: error}); pixels are one stacked tensor (PIL
    processor, or uint8 images of one size), a dict of stacked tensors (a processor that gives several inputs:
    SigLIP 2), or a list of uint8 images of different sizes (fast processor) or of JPEG bytes and images (device
    processor)."""
    pixels = [px for _, px, err in items if err is None] or None
    if pixels and isinstance(pixels[0], dict):   # several inputs per image (SigLIP 2): each stacked
        return ([i for i, _, _ in items], {k: torch.stack([px[k] for px in pixels]) for k in pixels[0]},
                {i: err for i, _, err in items if err is not None})
    if pixels and all(px.ndim == 3 for px in pixels) and (pixels[0].dtype != torch.uint8
                                                          or len({px.shape for px in pixels}) == 1):
        pixels = torch.stack(pixels)  # one tensor: one pinned copy to the device
    return [i for i, _, _ in items], pixels, {i: err for i, _, err in items if err is not None}


def worker_init(_):
    """In each DataLoader worker: one thread, and a batch that cannot be sent ends the worker (see below)."""
    torch.set_num_threads(1)
    import multiprocessing.queues
    multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(_batch_not_sent)


def _batch_not_sent(e, obj):
    """A worker's decoded batch could not be handed to the main process (its shared-memory copy failed: a full
    /dev/shm, a file-size limit): the queue's feeder thread would print this and drop the batch, and the main
    process would wait for it forever. The worker says why and exits; the DataLoader then stops the run."""
    import sys
    print(f"pacs-embed: a DataLoader worker could not send its decoded batch to the main process: "
          f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
    os._exit(3)
