"""Full-size (PACS-scale) caches for the analysis benchmarks: 9,991 images x 512 dims, PACS's domain counts.

Two kinds, both made here on any machine (no Hub, no PACS download):

- ``random_cache``: random unit vectors shaped like PACS (class + domain directions + noise), written
  straight into the cache format with random prompt vectors (every prompt the default report needs).
- ``clip_cache``: a random-weight CLIP with the real ViT-B/32 shape run by ``pacs-embed extract`` over
  9,991 real images made from the 224 pacs-mini images (seeded random crops and flips). Random CLIP
  features are the slow, badly conditioned case for logistic regression. Making the images and
  extracting them took 20 s + 320 s on this project's 2-core CPU (fp32), once: the cache is kept in
  ``data/bench/``. Its tokenizer is CLIP's own BPE (merges from the ``open_clip_torch`` wheel on PyPI),
  so prompts cost what they cost with the real model; ``clip_cache("byte")`` is the older variant with a
  one-token-per-character tokenizer (~2-3x the tokens).

    .venv/bin/python benchmarks/pacs_scale.py          # builds both into data/bench/ (if missing)
    python benchmarks/pacs_scale.py --images DIR [--source PACS_MINI]   # only the 9,991 images, into DIR
    python benchmarks/pacs_scale.py --subset DIR OUT N   # the first N files of each domain x class of DIR, into OUT
    python benchmarks/pacs_scale.py --large DIR N [--source PACS_MINI]   # N larger images, 300-800 px sides
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
BENCH = ROOT / "data" / "bench"
PACS_MINI = ROOT / "tests" / "data" / "pacs-mini"
COUNTS = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}   # PACS, 9,991 images
CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def _every_report_prompt(domains, classes) -> list[str]:
    """Every prompt a report with every description (all 100 nouns) needs, and extraction's defaults."""
    from pacs_embed.analysis.text import DESCRIPTIONS, needed_prompts
    from pacs_embed.templates import default_prompts
    return list(dict.fromkeys(default_prompts(domains, classes) + needed_prompts(domains, classes, DESCRIPTIONS)[1]))


def random_cache(path=BENCH / "random.h5", dim: int = 512, seed: int = 0) -> Path:
    """PACS-shaped random vectors (class + domain + noise), with random vectors for every report prompt."""
    from pacs_embed import cache
    from pacs_embed.datasets import Record
    path = Path(path)
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    cls, dom = rng.standard_normal((7, dim)), rng.standard_normal((4, dim))
    x, records = [], []
    for d, (name, n) in enumerate(COUNTS.items()):
        lab = np.arange(n) % 7
        x.append(cls[lab] + 0.7 * dom[d] + 1.5 * rng.standard_normal((n, dim)))
        records += [Record(f"{name}/{CLASSES[k]}/{i:05d}.jpg", d, int(k), 0, 0, "0" * 64) for i, k in enumerate(lab)]
    x = np.concatenate(x).astype(np.float32)
    prompts = _every_report_prompt(list(COUNTS), CLASSES)
    pv = np.stack([np.random.default_rng(int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "little"))
                   .standard_normal(dim) for p in prompts]).astype(np.float32)
    attrs = dict(model_id="synthetic/random-vectors", revision="none", processor_class="none", processor_settings="{}",
                 dtype="float32", device="none", batch_size=0, torch_version="none", transformers_version="none",
                 created="-", dataset_root=str(BENCH / "no-such-folder"), dataset_name="PACS-random",
                 manifest_sha256="-", n_failed=0)
    cache.write(path, attrs, list(COUNTS), CLASSES, records, x, np.ones(len(x), bool), [], prompts, pv)
    return path


def _crop_flip(src: Path, rng, size):
    """A seeded random crop (55-100% of each side) of image ``src``, resized to ``size()`` (drawn after the crop)
    with bicubic resampling, mirrored half of the time."""
    from PIL import Image, ImageOps
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = rng.uniform(0.55, 1.0)
        cw, ch = int(w * s), int(h * s)
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        im = im.crop((x0, y0, x0 + cw, y0 + ch)).resize(size(), Image.BICUBIC)
    return ImageOps.mirror(im) if rng.random() < 0.5 else im


def _images(folder: Path, seed: int = 0, source: Path = PACS_MINI) -> Path:
    """9,991 real-image files, PACS's counts, from pacs-mini by seeded random crops and flips."""
    done = folder / ".complete"
    if done.is_file():
        return folder
    rng = np.random.default_rng(seed)
    for domain, n in COUNTS.items():
        for i in range(n):
            cls = CLASSES[i % 7]
            files = sorted((Path(source) / domain / cls).iterdir())
            src = files[rng.integers(len(files))]
            im = _crop_flip(src, rng, lambda: (227, 227))
            out = folder / domain / cls / f"{i:05d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            im.save(out, quality=90)
    done.write_text("ok\n")
    return folder


def _large_part(args) -> int:
    """Worker of ``large_images``: images [lo, hi) of the set."""
    folder, source, lo, hi, seed = args
    files = sorted(p for p in Path(source).glob("*/*/*") if p.suffix.lower() in (".jpg", ".png"))
    for i in range(lo, hi):
        rng = np.random.default_rng([seed, i])
        src = files[rng.integers(len(files))]
        im = _crop_flip(src, rng, lambda: (int(rng.integers(300, 801)), int(rng.integers(300, 801))))
        out = Path(folder) / src.parent.parent.name / src.parent.name / f"{i:07d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        im.save(out, quality=90)
    return hi - lo


def large_images(folder: Path, n: int, seed: int = 0, source: Path = PACS_MINI) -> Path:
    """``n`` larger, varied real-image JPEGs (each side 300-800 px, seeded crops and flips of pacs-mini, in its domain
    and class folders), made on every core: the GPU benchmark's DomainNet-like decoding load."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    done = Path(folder) / ".complete"
    if done.is_file():
        return Path(folder)
    step = 2000
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_large_part, [(str(folder), str(source), lo, min(lo + step, n), seed) for lo in range(0, n, step)]))
    done.write_text("ok\n")
    return Path(folder)


def subset(folder: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` files (sorted) of each domain x class folder of ``folder``, copied into ``out``."""
    import shutil
    for cls_dir in sorted(p for p in Path(folder).glob("*/*") if p.is_dir()):
        dest = Path(out) / cls_dir.parent.name / cls_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(cls_dir.iterdir())[:per_class]:
            shutil.copy2(f, dest / f.name)
    return Path(out)


OPEN_CLIP_WHEEL = "open_clip_torch==2.32.0"   # ships OpenAI's BPE merges (bpe_simple_vocab_16e6.txt.gz)


def clip_bpe_file() -> Path | None:
    """OpenAI CLIP's BPE merges file, taken from the open_clip_torch wheel on PyPI (fetched once into
    data/bench/); None when PyPI cannot be reached."""
    import subprocess
    import zipfile
    out = BENCH / "bpe_simple_vocab_16e6.txt.gz"
    if out.is_file():
        return out
    wheels = BENCH / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "download", OPEN_CLIP_WHEEL, "--no-deps", "-q", "-d", str(wheels)],
                       capture_output=True, text=True)
    found = sorted(wheels.glob("open_clip_torch-*.whl")) if r.returncode == 0 else []
    if not found:
        print(f"cannot fetch {OPEN_CLIP_WHEEL} from PyPI ({r.stderr.strip()[-200:]}): byte-level tokenizer instead")
        return None
    with zipfile.ZipFile(found[-1]) as z:
        out.write_bytes(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
    return out


def clip_cache(tokenizer: str = "bpe") -> Path:
    """``pacs-embed extract`` of a random-weight CLIP (real ViT-B/32 shape) over 9,991 real images.

    ``tokenizer="bpe"``: CLIP's own tokenizer (prompts as many tokens as with the real model: "a comic strip of
    a dog" is 6); ``"byte"`` (or when PyPI is out of reach): one token per character, ~2-3x the tokens, so
    encoding prompts costs more than with the real model.
    """
    from tiny_clip import VIT_B_32, bpe_tokenizer, make_clip
    from pacs_embed import extract
    bpe = clip_bpe_file() if tokenizer == "bpe" else None
    name = "random-clip-vit-b-32" + ("-bpe" if bpe else "")
    path, model = BENCH / f"{name}.h5", BENCH / name
    if path.is_file():
        return path
    if not (model / "config.json").is_file():
        make_clip(model, VIT_B_32, tokenizer=bpe_tokenizer(bpe) if bpe else None)
    extract(_images(BENCH / "pacs-like"), str(model), path, batch_size=64)
    return path


def encode_report_prompts(path) -> None:
    """Encode every prompt the default report needs, so report timings measure the analysis only."""
    from pacs_embed import prompt_embeddings
    from pacs_embed.cache import read_images
    a = read_images(path)
    prompt_embeddings(path, _every_report_prompt(a["domains"], a["classes"]))


if __name__ == "__main__":
    if "--subset" in sys.argv:
        a = sys.argv[sys.argv.index("--subset") + 1:]
        print(subset(Path(a[0]), Path(a[1]), int(a[2])))
        sys.exit(0)
    if "--large" in sys.argv:
        a = sys.argv
        print(large_images(Path(a[a.index("--large") + 1]), int(a[a.index("--large") + 2]),
                           source=Path(a[a.index("--source") + 1]) if "--source" in a else PACS_MINI))
        sys.exit(0)
    if "--images" in sys.argv:
        a = sys.argv
        print(_images(Path(a[a.index("--images") + 1]),
                      source=Path(a[a.index("--source") + 1]) if "--source" in a else PACS_MINI))
        sys.exit(0)
    print(random_cache())
    p = clip_cache()
    encode_report_prompts(p)
    print(p)
