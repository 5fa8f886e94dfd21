"""Extraction speed, side by side in one run: a naive loop, the forward-only bound, and ``pacs_embed.extract``.

- naive: one image at a time through the HF processor (PIL) and ``CLIPModel.get_image_features``, float32;
- bound: the image tower alone on already-preprocessed tensors on the device, the same dtype and batch size
  as the extraction (nothing can beat it without changing the model or the dtype);
- pacs_embed: ``extract`` over the folder (decoding, preprocessing, tower, journal), timed from after the
  model load (``Summary.embed_seconds``), once per ``--processor``.

The model is a random-weight CLIP with a real architecture (the same compute as the released weights; the
Hub is not needed). Prints images/s, the ratios, and how far fast preprocessing's embeddings are from PIL's.

    .venv/bin/python benchmarks/extract_speed.py                          # CPU, pacs-mini, ViT-B/32
    python benchmarks/extract_speed.py --data /tmp/pacs-like --arch l14 --processor pil fast   # a GPU box
    .venv/bin/python benchmarks/extract_speed.py --sweep 16 32 64 128    # CPU default batch size
    .venv/bin/python benchmarks/extract_speed.py --attention --dtype float32   # eager vs fused attention
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny_clip import ARCHS, make_clip  # noqa: E402

from pacs_embed import extract  # noqa: E402
from pacs_embed.cache import read_images  # noqa: E402
from pacs_embed.extraction import default_batch_size  # noqa: E402
from pacs_embed.extraction.images import read_rgb  # noqa: E402
from pacs_embed.models import (choose_device, choose_dtype, dtype_name, load_image_tower, load_processor,  # noqa: E402
                               resolve)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def naive(model_dir, files, dev) -> float:
    """Images/s of the loop a user writes first: processor + get_image_features, one image, float32."""
    from transformers import CLIPModel
    model = CLIPModel.from_pretrained(model_dir).eval().to(dev)
    processor = load_processor(resolve(model_dir), "pil")

    def one(path):
        px = processor(images=read_rgb(path), return_tensors="pt")["pixel_values"].to(dev)
        out = model.get_image_features(pixel_values=px)
        return (out if isinstance(out, torch.Tensor) else out.pooler_output).cpu()
    with torch.inference_mode():
        for f in files[:3]:
            one(f)
        t = time.perf_counter()
        for f in files:
            one(f)
        _sync(dev)
        return len(files) / (time.perf_counter() - t)


def bound(model_dir, files, dev, dtype, batch_size, n_images) -> float:
    """Images/s of the image tower alone on preprocessed pixels already on the device."""
    spec = resolve(model_dir)
    tower = load_image_tower(spec, dev, dtype)
    processor = load_processor(spec, "pil")
    px = torch.stack([processor(images=read_rgb(f), return_tensors="pt")["pixel_values"][0]
                      for f in (files * batch_size)[:batch_size]]).to(dev, dtype)
    n_batches = max(1, n_images // batch_size)
    with torch.inference_mode():
        for _ in range(2):
            tower(pixel_values=px)
        _sync(dev)
        t = time.perf_counter()
        for _ in range(n_batches):
            tower(pixel_values=px).image_embeds.float().cpu()
        _sync(dev)
        return n_batches * batch_size / (time.perf_counter() - t)


def extract_rate(data, model_dir, tmp, dev, dtype, batch_size, processor, workers, warm_data):
    """(images/s after the model load, Summary) of ``extract``; a small warm-up run first (CUDA init, caches)."""
    kw = dict(device=str(dev), dtype=dtype_name(dtype), batch_size=batch_size, processor=processor, workers=workers,
              progress=False)
    extract(warm_data, model_dir, Path(tmp) / f"warm-{processor}.h5", **kw)
    s = extract(data, model_dir, Path(tmp) / f"{processor}-{batch_size}.h5", **kw)
    return s.n_images / s.embed_seconds, s


def attention_check(model_dir, files, dev, dtype, batch_size, reps: int = 4) -> dict:
    """Median seconds per batch of the image tower with eager vs PyTorch's fused (sdpa) attention, alternated."""
    from transformers import CLIPVisionModelWithProjection
    from transformers.utils import logging
    logging.set_verbosity_error()   # the text weights in the checkpoint are "unexpected" here: expected
    processor = load_processor(resolve(model_dir), "pil")
    px = torch.stack([processor(images=read_rgb(f), return_tensors="pt")["pixel_values"][0]
                      for f in (files * batch_size)[:batch_size]]).to(dev, dtype)
    towers = {a: CLIPVisionModelWithProjection.from_pretrained(model_dir, dtype=dtype, attn_implementation=a).eval()
              .to(dev) for a in ("eager", "sdpa")}
    times = {a: [] for a in towers}
    with torch.inference_mode():
        for t in towers.values():
            t(pixel_values=px[:4])
        for _ in range(reps):
            for a, t in towers.items():
                _sync(dev)
                t0 = time.perf_counter()
                t(pixel_values=px)
                _sync(dev)
                times[a].append(time.perf_counter() - t0)
    return {a: float(np.median(v)) for a, v in times.items()}


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent / "tests/data/pacs-mini"))
    ap.add_argument("--warm-data", help="small folder for the warm-up run (default: --data)")
    ap.add_argument("--arch", default="b32", choices=sorted(ARCHS), help="CLIP shape (default: b32 = ViT-B/32)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="default: what extract picks for the device")
    ap.add_argument("--batch-size", type=int, default=None, help="default: what extract picks (256 CUDA, 32 CPU)")
    ap.add_argument("--processor", nargs="+", default=["pil"], choices=["pil", "fast", "device"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--naive", type=int, default=64, help="images for the naive loop (0: skip)")
    ap.add_argument("--sweep", type=int, nargs="+", help="instead: pacs_embed images/s at each of these batch sizes")
    ap.add_argument("--attention", action="store_true",
                    help="instead: the tower's time per batch with eager vs fused (sdpa) attention, side by side")
    args = ap.parse_args()
    dev = choose_device(args.device)
    dtype = choose_dtype(dev, args.dtype)
    batch_size = args.batch_size or default_batch_size(dev)
    files = sorted(p for p in Path(args.data).glob("*/*/*") if p.is_file())
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {dev} ({name}), {torch.get_num_threads()} threads, "
          f"{dtype_name(dtype)}, {len(files)} images in {args.data}, CLIP {args.arch} (random weights)")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(make_clip(Path(tmp) / args.arch, ARCHS[args.arch]))
        warm = args.warm_data or args.data
        if args.attention:
            t = attention_check(model_dir, files, dev, dtype, batch_size)
            print(f"seconds per batch of {batch_size}: eager {t['eager']:.3f}, sdpa {t['sdpa']:.3f} "
                  f"(eager / sdpa = {t['eager'] / t['sdpa']:.2f})")
            return
        if args.sweep:
            for b in args.sweep:
                rate, _ = extract_rate(args.data, model_dir, tmp, dev, dtype, b, args.processor[0], args.workers, warm)
                print(f"batch {b:4d}: pacs_embed {rate:8.1f} images/s")
            return
        rates = {}
        if args.naive:
            rates["naive (1 image, fp32)"] = naive(model_dir, files[:args.naive], dev)
        rates[f"bound (tower only, {dtype_name(dtype)}, batch {batch_size})"] = bound_rate = bound(
            model_dir, files, dev, dtype, batch_size, min(len(files), 2048 if dev.type == "cuda" else 256))
        caches = {}
        for proc in args.processor:
            rate, s = extract_rate(args.data, model_dir, tmp, dev, dtype, batch_size, proc, args.workers, warm)
            rates[f"pacs_embed ({proc} preprocessing)"] = rate
            caches[proc] = s.out
            print(f"pacs_embed {proc}: {s.n_images} images, {s.embed_seconds:.2f} s after the model load "
                  f"({s.seconds:.2f} s in all: scan, hashing, model load, prompts, writing)")
        print(f"\n{'':48s} {'images/s':>10s} {'x bound':>8s} {'x naive':>8s}")
        for k, r in rates.items():
            n = rates.get("naive (1 image, fp32)")
            print(f"{k:48s} {r:10.1f} {r / bound_rate:8.2f} {(r / n if n else float('nan')):8.2f}")
        for proc in [p for p in caches if p != "pil" and "pil" in caches]:
            a, b = read_images(caches["pil"])["embedding"], read_images(caches[proc])["embedding"]
            c = cosine(a, b)
            print(f"\ncosine({proc}, pil) per image: min {c.min():.5f}, mean {c.mean():.5f}, "
                  f"5th percentile {np.percentile(c, 5):.5f} ({len(c)} images)")


if __name__ == "__main__":
    main()
