"""The explorer's edit, timed: a new description of one domain applied in a warm kernel (heads cached), at PACS size
and on a DomainNet-shaped cache (586,575 x 512, 345 classes), side by side with what it replaces — ``evaluate`` of the
same methods for that source re-run after the edit — and with what encoding the typed prompt costs on a random-weight
ViT-B/32 text tower (the synthetic caches' "model" cannot encode: the typed prompts are added to them beforehand with
random vectors, so the edit's time is the analysis's alone).

    .venv/bin/python benchmarks/explorer_speed.py [--datasets PACS DomainNet] [--edits 3] [--png docs/explorer.png]

Targets (issue #34): one edit ≤ 1 s at PACS size, ≤ 10 s at DomainNet size, on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pacs_embed import analysis as pa  # noqa: E402
from pacs_embed.cache import Cache  # noqa: E402
from pacs_embed.synthetic import make_cache  # noqa: E402
from pacs_embed.analysis.embeddings import domain_order  # noqa: E402
from pacs_embed.analysis.text import needed_prompts  # noqa: E402

TYPED = ["a comic strip", "a children's cartoon drawing", "an animated cartoon frame", "a hand-drawn comic panel"]
TARGETS = {"PACS": 1.0, "DomainNet": 10.0}


def add_prompts(path, emb, domain: str, typed: list[str]) -> None:
    """Every prompt the text side needs for each typed description of ``domain`` (the prompt and its "{prompt} of a
    {class}" forms), added with random vectors (a synthetic cache's model cannot encode; a real cache's text tower
    would, timed separately below)."""
    import warnings
    texts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for prompt in typed:
            texts += needed_prompts(emb.domains, emb.classes, ("paper",), {domain: prompt})[1]
    texts = list(dict.fromkeys(texts))
    with Cache(path) as cache:
        have = cache.prompts
        new = [t for t in texts if t not in have]
        v = np.random.default_rng(1).standard_normal((len(new), cache.dim)).astype(np.float32)
        cache.append_prompts(new, v, cache.model)


def text_tower_seconds(n_prompts: int) -> float:
    """One forward pass of a random-weight ViT-B/32 text tower (the real config) over ``n_prompts`` prompts of 77
    tokens, float32, on this CPU: what encoding a typed prompt costs a real cache."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(CLIPTextConfig(projection_dim=512)).eval()
    ids = torch.randint(0, 49407, (n_prompts, 77))
    with torch.no_grad():
        model(input_ids=ids[:1])
        t = time.perf_counter()
        model(input_ids=ids)
    return time.perf_counter() - t


def run(dataset: str, edits: int, folder: Path, png: str | None) -> None:
    path = folder / f"{dataset}.h5"
    t = time.perf_counter()
    make_cache(path, dataset, prompts="report")
    emb = pa.load(path, check=False)
    target = "cartoon" if "cartoon" in emb.domains else domain_order(emb.domains)[1]
    source = domain_order(emb.domains)[0]
    add_prompts(path, emb, target, TYPED[:edits + 1])
    print(f"\n== {dataset}: {len(emb.x):,} images x {emb.x.shape[1]}, {len(emb.classes)} classes; cache made in "
          f"{time.perf_counter() - t:.0f} s; source {source}, editing {target}'s description; {os.cpu_count()} cores")
    t = time.perf_counter()
    ex = pa.explore(emb, source=source, seeds=[0], head_cache=folder / f"{dataset}.heads")
    print(f"explorer opened (every head fitted once, cached): {time.perf_counter() - t:.1f} s; methods "
          f"{ex.methods}; refitted on demand: {sorted(ex.trained | ex.reads)}")
    seconds = []
    for prompt in TYPED[:edits]:
        edit = ex.apply({target: prompt})
        seconds.append(edit.seconds)
        print(f"  edit {target}={prompt!r}: {edit.seconds:.2f} s")
    t = time.perf_counter()
    pa.evaluate(emb, [m for m in ex.methods if m not in ex.trained | ex.reads], seeds=[0], sources=[source],
                domain_prompts=ex.prompts, head_cache=folder / f"{dataset}.heads", progress=False)
    before = time.perf_counter() - t
    median = float(np.median(seconds))
    print(f"edit (median of {edits}): {median:.2f} s   target <= {TARGETS.get(dataset, 10):.0f} s   "
          f"ratio {median / TARGETS.get(dataset, 10):.2f}")
    print(f"the same methods re-evaluated after the edit (evaluate, heads cached): {before:.2f} s   "
          f"explorer / evaluate = {median / before:.2f}")
    one, per_class = text_tower_seconds(1), text_tower_seconds(len(emb.classes))
    print(f"encoding on a real cache (random-weight ViT-B/32 text tower): the typed prompt {one * 1000:.0f} ms; its "
          f"{len(emb.classes)} '{{prompt}} of a {{class}}' forms (read only by zeroshot_domain and lads) "
          f"{per_class:.2f} s")
    if png:
        picture(dataset, folder, png)


def picture(dataset: str, folder: Path, png: str) -> None:
    """The README's picture: one edit on a harder synthetic cache of ``dataset``'s shape (a weak class signal, so
    that the numbers differ), drawn by ``plots.explorer_view``."""
    from pacs_embed.analysis import plots
    path = folder / f"{dataset}-picture.h5"
    make_cache(path, dataset, prompts="report", signal=0.08, seed=3)
    emb = pa.load(path, check=False)
    target = "cartoon" if "cartoon" in emb.domains else domain_order(emb.domains)[1]
    add_prompts(path, emb, target, TYPED[:1])
    ex = pa.explore(emb, source=domain_order(emb.domains)[0], seeds=[0, 1], head_cache=False)
    edit = ex.apply({target: TYPED[0]})
    fig = plots.explorer_view(edit, f"pa.explore(emb).apply({target}={TYPED[0]!r}) on a {dataset}-shaped cache of random "
                                    f"vectors (synthetic: the numbers say nothing about CLIP)")
    fig.savefig(png, dpi=130, bbox_inches="tight")
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["PACS", "DomainNet"])
    ap.add_argument("--edits", type=int, default=3)
    ap.add_argument("--png", help="also draw one edit of the first dataset (the README's picture)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for i, dataset in enumerate(args.datasets):
            run(dataset, args.edits, Path(folder), args.png if i == 0 else None)


if __name__ == "__main__":
    main()
