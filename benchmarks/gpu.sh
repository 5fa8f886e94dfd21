#!/usr/bin/env bash
# GPU extraction benchmark: one command on a machine with one CUDA GPU (no Hub access needed).
# Random-weight CLIPs with the real ViT-B/32 and ViT-L/14 shapes, 9,991 PACS-like images made from pacs-mini;
# prints naive / forward-only bound / pacs_embed (PIL and fast preprocessing), bf16 and fp16, and
# cosine(fast, PIL). Usage (repo root):   bash benchmarks/gpu.sh [PACS_MINI_DIR] [WORK_DIR]
set -euo pipefail
MINI=${1:-../shared/data/pacs-mini}
WORK=${2:-/tmp/pacs-embed-gpu}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$WORK"
$PY - <<'PY'
import torch, transformers, torchvision
print("torch", torch.__version__, "transformers", transformers.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
nproc
t=$(date +%s); $PY benchmarks/pacs_scale.py --images "$WORK/pacs-like" --source "$MINI" >/dev/null
echo "made 9,991 images in $(( $(date +%s) - t )) s"
B="$PY benchmarks/extract_speed.py --data $WORK/pacs-like --warm-data $MINI --device cuda"
echo "== ViT-B/32, bf16, batch 256";  $B --arch b32 --dtype bfloat16 --processor pil fast --naive 100
echo "== ViT-B/32, fp16, batch 256";  $B --arch b32 --dtype float16 --processor pil fast --naive 0
echo "== ViT-L/14, bf16, batch 256";  $B --arch l14 --dtype bfloat16 --processor pil fast --naive 50
echo "== where the time goes (PACS_EMBED_PROFILE=1 synchronises the GPU after each batch: slower)"
PACS_EMBED_PROFILE=1 $B --arch b32 --dtype bfloat16 --processor pil fast --naive 0 2>&1 | grep -E "^profile|^pacs_embed"
echo "== fast vs PIL on pacs-mini (the tests, on cpu and cuda)"
PACS_MINI="$MINI" $PY -m pytest -q -s -p no:cacheprovider tests/test_extract.py -k "fast_processor" 2>&1 | grep -E "cosine|passed|failed|error" || true
