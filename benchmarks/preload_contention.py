"""Does loading the text tower in the background slow the notebook it is meant to help? Measured side by side.

Notebook 4 is run in a fresh kernel (kernel start included) on a copy of the full-size random-weight CLIP cache
(pacs_scale.py) that already holds every prompt the run needs, so no run needs the text tower. Three ways:

- ``at once``: a thread starts loading the tower as soon as the cell that asks for it runs (the old preload);
- ``when idle``: ``pa.preload_text_tower(emb)`` as the notebook has it (it waits until no cell has run for 0.5 s);
- ``none``: no preload at all.

    .venv/bin/python benchmarks/preload_contention.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pacs_scale  # noqa: E402
from analysis_speed import _notebook, _override, timed  # noqa: E402

PRELOAD = "pa.preload_text_tower(emb)"
AT_ONCE = ("import threading\nfrom pacs_embed.text_encoder import _spec_for, _text_tower\n"
           "threading.Thread(target=lambda: _text_tower(_spec_for(emb.cache, None, local_only=True), None)).start()")
WAYS = {"at once": AT_ONCE, "when idle": PRELOAD, "none": "pass"}


def run(cache, tmp, preload: str) -> float:
    from nbclient import NotebookClient
    nb, cell = _notebook(cache, tmp)
    _override(cell, cache, tmp, {})
    hits = [c for c in nb.cells if PRELOAD in c.source]
    assert len(hits) == 1, "notebook 4 no longer calls pa.preload_text_tower(emb) in one cell"
    hits[0].source = hits[0].source.replace(PRELOAD, preload)
    return timed(NotebookClient(nb, timeout=1200, kernel_name="python3").execute)[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from pacs_embed import prompt_embeddings
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(shutil.copy(pacs_scale.clip_cache(), tmp / "clip.h5"))
        pacs_scale.encode_report_prompts(cache)
        nb, cell = _notebook(cache, tmp)
        ns = {}
        exec(next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])), ns)
        prompt_embeddings(cache, ns["my_prompts"])   # every prompt of the run cached: no run needs the tower
        run(cache, tmp, "pass")                      # fills the head cache; not timed
        print(f"notebook 4, fresh kernel (kernel start included), every prompt cached; {args.repeats} runs each")
        times = {way: [run(cache, tmp, code) for _ in range(args.repeats)] for way, code in WAYS.items()}
        for way, t in times.items():
            print(f"preload {way:9s}: " + "  ".join(f"{s:5.1f} s" for s in t)
                  + f"   (best {min(t) / min(times['none']):.2f}x of no preload)")


if __name__ == "__main__":
    main()
