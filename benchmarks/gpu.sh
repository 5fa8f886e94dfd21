#!/usr/bin/env bash
# GPU benchmark: one command on a machine with one CUDA GPU (no Hub access needed), under 10 minutes.
# Random-weight CLIPs with the real ViT-B/32 and ViT-L/14 shapes, 9,991 PACS-like images made from pacs-mini and
# 100,000 larger ones (300-800 px sides); prints naive / forward-only bound / pacs_embed with PIL, fast and device
# (nvJPEG) preprocessing, and cosine(each, PIL) per image; then a DomainNet-shaped default report with the heads on
# the GPU (--solver torch). Usage (repo root):   bash benchmarks/gpu.sh [PACS_MINI_DIR] [WORK_DIR]
set -euo pipefail
MINI=${1:-tests/data/pacs-mini}
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
echo "== ViT-B/32, bf16, batch 256";  $B --arch b32 --dtype bfloat16 --processor pil fast device --naive 100
echo "== ViT-L/14, bf16, batch 256";  $B --arch l14 --dtype bfloat16 --processor pil fast device --naive 50
t=$(date +%s); $PY benchmarks/pacs_scale.py --large "$WORK/large" 100000 --source "$MINI" >/dev/null
echo "made 100,000 images of 300-800 px in $(( $(date +%s) - t )) s"
L="$PY benchmarks/extract_speed.py --data $WORK/large --warm-data $MINI --device cuda --dtype bfloat16 --naive 0"
echo "== 100,000 larger images, ViT-B/32 bf16";  $L --arch b32 --processor fast device
echo "== 100,000 larger images, ViT-L/14 bf16";  $L --arch l14 --processor fast device
$PY benchmarks/pacs_scale.py --subset "$WORK/large" "$WORK/large-5k" 180 >/dev/null
echo "== cosine(device, pil) on 5,040 of the larger images"
$PY benchmarks/extract_speed.py --data "$WORK/large-5k" --warm-data "$MINI" --device cuda --dtype bfloat16 --naive 0 \
  --arch b32 --processor pil device | grep -E "cosine|preprocessing"
echo "== where the time goes (PACS_EMBED_PROFILE=1 synchronises the GPU after each batch: slower)"
PACS_EMBED_PROFILE=1 $B --arch b32 --dtype bfloat16 --processor pil fast --naive 0 2>&1 | grep -E "^profile|^pacs_embed"
echo "== fast vs PIL on pacs-mini (the tests, on cpu and cuda)"
PACS_MINI="$MINI" $PY -m pytest -q -s -p no:cacheprovider tests/test_extract.py -k "fast_processor" 2>&1 | grep -E "cosine|passed|failed|error" || true
echo "== DomainNet-shaped default report (586,575 x 512 random vectors), heads on the GPU"
$PY -c "from pacs_embed.synthetic import make_cache; make_cache('$WORK/DomainNet.h5', 'DomainNet', prompts='report', signal=0.3)"
/usr/bin/time -v $PY -m pacs_embed report "$WORK/DomainNet.h5" --no-head-cache --solver torch --out "$WORK/dn-report" \
  --no-progress 2>&1 | grep -E "Elapsed|Maximum resident|error" || true
