"""Extraction speed, side by side in one run: float32 vs bfloat16 (and DataLoader workers), same images.

Uses a CLIP with the real ViT-B/32 configuration and random weights (the same compute as
openai/clip-vit-base-patch32) and the real pacs-mini images. Prints images/s, the ratio, and the
cosine similarity of the bf16 embeddings to the fp32 ones.

    .venv/bin/python benchmarks/extract_speed.py [--data ../shared/data/pacs-mini] [--batch-size 32]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from tiny_clip import VIT_B_32, make_clip  # noqa: E402

from pacs_embed import extract  # noqa: E402
from pacs_embed.cache import read_images  # noqa: E402


def run(data, model, out, **kw):
    t0 = time.perf_counter()
    s = extract(data, model, out, progress=False, **kw)
    return s, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).parent.parent.parent / "shared/data/pacs-mini"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = str(make_clip(Path(tmp) / "vit-b-32", VIT_B_32))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device or 'auto'}")
        run(args.data, model, Path(tmp) / "warmup.h5", dtype="float32", batch_size=args.batch_size, workers=0,
            device=args.device)
        rows = {}
        for name, kw in [("float32", dict(dtype="float32")), ("bfloat16", dict(dtype="bfloat16")),
                         ("bfloat16, 0 workers", dict(dtype="bfloat16", workers=0))]:
            s, secs = run(args.data, model, Path(tmp) / f"{len(rows)}.h5", batch_size=args.batch_size,
                          device=args.device, **kw)
            rows[name] = (s.n_images / secs, read_images(s.out)["embedding"])
            print(f"{name:22s} {s.n_images} images in {secs:6.2f} s = {s.n_images / secs:7.1f} images/s")
        fp32, bf16 = rows["float32"], rows["bfloat16"]
        cos = (fp32[1] * bf16[1]).sum(1) / np.linalg.norm(fp32[1], axis=1) / np.linalg.norm(bf16[1], axis=1)
        print(f"bf16 / fp32 speed ratio: {bf16[0] / fp32[0]:.2f}x")
        print(f"workers / no workers (bf16): {bf16[0] / rows['bfloat16, 0 workers'][0]:.2f}x")
        print(f"cosine(bf16, fp32): min {cos.min():.5f}, mean {cos.mean():.5f}")


if __name__ == "__main__":
    main()
