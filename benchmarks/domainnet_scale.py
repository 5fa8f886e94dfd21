"""DomainNet scale on one machine: a DomainNet-shaped cache (586,575 x 512 random vectors with DomainBed's domain counts
and 345 classes, every report prompt cached) and, side by side in one run:

- a prompt append: seconds and extra memory (the issue's target: <= 0.2 s, <= 100 MB);
- C chosen on a sample of the training rows (heads.SELECT_ROWS) against the full C path, on a few sources and seeds:
  same C?, hold-out accuracy, share of equal predictions, seconds each;
- `pacs-embed report` on one source (1 seed, `paper`) and on every source (1 seed, `paper`), each in a fresh process:
  wall seconds and peak RSS; with --full also the default report (5 seeds, 3 descriptions, every default method);
- an edit of one domain's prompt in a warm process (heads of the unedited description cached), 1 seed, `paper`.

    .venv/bin/python benchmarks/domainnet_scale.py [--full] [--signal 0.3]

The vectors are random with a weak class and domain structure (``pacs_embed.synthetic``; --signal sets the class
signal: 0.3 gives hold-out accuracies around 0.45); no model is loaded. Timings depend on how hard the heads' problem
is, which random vectors only imitate.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable

MEASURE = r'''
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
t = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  **(extra if "extra" in dir() else {{}})}}))
'''


def fresh(body: str) -> dict:
    """Run ``body`` in a fresh Python process; its seconds (imports excluded) and peak RSS."""
    out = subprocess.run([PY, "-c", MEASURE.format(body=body)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=str(ROOT / "data/bench/DomainNet.h5"))
    ap.add_argument("--signal", type=float, default=0.3)
    ap.add_argument("--full", action="store_true", help="also the default report (5 seeds x 3 descriptions: long)")
    args = ap.parse_args()
    import numpy as np
    print(f"{os.cpu_count()} CPUs; {platform.processor() or platform.machine()}; numpy {np.__version__}")
    cache = Path(args.cache)
    if not cache.exists():
        from pacs_embed.synthetic import make_cache
        t = time.perf_counter()
        make_cache(cache, "DomainNet", prompts="report", signal=args.signal)
        print(f"made {cache} in {time.perf_counter() - t:.0f} s")

    print("\n== prompt append (20 prompts), fresh process")
    r = fresh(f'''
import numpy as np, resource
from pacs_embed.cache import Cache
c = Cache.open({str(cache)!r}); c.prompts
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
v = np.random.default_rng(int(time.time())).standard_normal((20, c.dim)).astype(np.float32)
t = time.perf_counter()
c.append_prompts([f"appended {{time.time()}} {{i}}" for i in range(20)], v, c.model)
extra = {{"append_s": time.perf_counter() - t,
          "extra_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}}''')
    print(f"append: {r['append_s'] * 1000:.1f} ms, +{r['extra_mb']:.0f} MB peak RSS (targets: <= 0.2 s, <= 100 MB)")

    print("\n== C chosen on a sample of the training rows vs the full C path (plain heads)")
    r = fresh(f'''
import numpy as np
from pacs_embed import analysis as pa
import pacs_embed.analysis.heads as hd
emb = pa.load({str(cache)!r}, check=False)
rows = []
for d in ("clipart", "painting"):
    idx = emb.in_domain(d); x, y = emb.x[idx], emb.label[idx]
    for seed in (0, 1):
        tr, ho = hd.split(len(idx), seed, d)
        with hd.single_threaded_blas():
            cap = hd.model.SELECT_ROWS
            hd.model.SELECT_ROWS = 10**9
            t0 = time.perf_counter(); full = hd.fit_heads(x, y, [(tr, ho)])[0]; t1 = time.perf_counter()
            hd.model.SELECT_ROWS = cap
            samp = hd.fit_heads(x, y, [(tr, ho)])[0]; t2 = time.perf_counter()
        rows.append([d, seed, len(tr), full.C, samp.C, full.holdout_accuracy, samp.holdout_accuracy,
                     float((full.predict(x) == samp.predict(x)).mean()), t1 - t0, t2 - t1])
extra = {{"rows": rows, "cap": hd.model.SELECT_ROWS}}''')
    print(f"(sample: {r['cap']:,} training rows, stratified)")
    for d, seed, n, c_full, c_samp, a_full, a_samp, agree, t_full, t_samp in r["rows"]:
        print(f"{d:9s} seed {seed}  {n:6,} rows  C full {c_full:g} / sampled {c_samp:g}  hold-out {a_full:.4f} / "
              f"{a_samp:.4f}  same predictions {agree:.2%}  {t_full:5.1f} s / {t_samp:5.1f} s  ratio {t_full / t_samp:.2f}x")

    print("\n== the same, forced onto PACS-size sources (synthetic PACS, dim 64; 4 sources x 3 seeds)")
    r = fresh('''
import numpy as np
from pacs_embed.synthetic import make_cache
from pacs_embed import analysis as pa
import pacs_embed.analysis.heads as hd
out = []
for signal in (0.3, 0.6):
    emb = pa.load(make_cache("/tmp/dn-bench/pacs-%s.h5" % signal, "PACS", dim=64, signal=signal, prompts="none"),
                  check=False)
    for cap in (500, 1000):
        same, diffs = 0, []
        for d in emb.domains:
            idx = emb.in_domain(d); x, y = emb.x[idx], emb.label[idx]
            for seed in range(3):
                tr, ho = hd.split(len(idx), seed, d)
                hd.model.SELECT_ROWS = 10**9
                full = hd.fit_heads(x, y, [(tr, ho)])[0]
                hd.model.SELECT_ROWS = cap
                samp = hd.fit_heads(x, y, [(tr, ho)])[0]
                same += full.C == samp.C
                diffs.append(samp.holdout_accuracy - full.holdout_accuracy)
        out.append([signal, cap, same, float(np.mean(diffs)), float(np.min(diffs))])
extra = {"rows": out}''')
    for signal, cap, same, mean, worst in r["rows"]:
        print(f"signal {signal}, sample of {cap:,} rows: same C in {same} of 12; hold-out accuracy {mean:+.4f} on "
              f"average, {worst:+.4f} at worst")

    runs = [("one source (clipart), 1 seed, paper", "--seeds 1 --descriptions paper --sources clipart", 30),
            ("every source, 1 seed, paper", "--seeds 1 --descriptions paper", 180)]
    if args.full:
        runs.append(("default report (5 seeds, paper/ensemble/nouns, every default method)", "", 1800))
    print("\n== pacs-embed report, fresh process each (no head cache)")
    for k, (what, flags, target) in enumerate(runs):
        out = f"/tmp/dn-bench/report-{time.time_ns()}-{k}"   # a new folder each: another run's is never reused
        r = fresh(f'''
from pacs_embed.cli import main
assert main(["report", {str(cache)!r}, *{flags.split()!r}, "--out", {out!r}, "--no-progress",
             "--no-head-cache"]) == 0''')
        print(f"{what}: {r['seconds']:.0f} s (target <= {target} s), peak RSS {r['peak_gb']:.1f} GB (target <= 8 GB)")

    print("\n== an edit of one domain's prompt in a warm process (1 seed, paper; heads cached in memory)")
    r = fresh(f'''
import numpy as np
from pacs_embed import analysis as pa
from pacs_embed.cache import Cache
emb = pa.load({str(cache)!r}, check=False)
from pacs_embed.analysis.text import needed_prompts
prompt = f"a comic-style clipart {{time.time()}}"
_, wanted = needed_prompts(emb.domains, emb.classes, ["paper"], {{"clipart": prompt}})
new = [p for p in wanted if p not in emb.cache.prompts]
emb.cache.append_prompts(new, np.random.default_rng(1).standard_normal((len(new), emb.x.shape[1])).astype(np.float32),
                         emb.cache.model)   # the synthetic model cannot encode: its vectors stand in
heads = pa.HeadCache()
t0 = time.perf_counter()
pa.evaluate(emb, seeds=[0], head_cache=heads, progress=False)
t1 = time.perf_counter()
pa.evaluate(emb, seeds=[0], head_cache=heads, progress=False, domain_prompts={{"clipart": prompt}})
extra = {{"first": t1 - t0, "edit": time.perf_counter() - t1, "fits": heads.fits}}''')
    print(f"first evaluate {r['first']:.0f} s; after clipart -> a new prompt {r['edit']:.0f} s (target <= 20 s); "
          f"peak RSS {r['peak_gb']:.1f} GB")


if __name__ == "__main__":
    main()
