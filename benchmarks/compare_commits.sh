#!/usr/bin/env bash
# The PACS-size cold default report, side by side at an older commit and at this checkout, in one run (the machines
# are shared: compare the two numbers of one run). Both use this checkout's .venv.
#   bash benchmarks/compare_commits.sh OLD_COMMIT [ROUNDS]
# Another dataset shape and report: DATASET=DomainNet ARGS="--sources clipart --seeds 1 --descriptions paper" bash ...
set -euo pipefail
old=${1:?an older commit to compare with}; rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd); py=$here/.venv/bin/python
work=$(mktemp -d); trap 'git -C "$here" worktree remove --force "$work/old" >/dev/null 2>&1; rm -rf "$work"' EXIT
git -C "$here" worktree add -q "$work/old" "$old"
dataset=${DATASET:-PACS}; args=${ARGS:-}
"$py" -c "from pacs_embed.synthetic import make_cache; make_cache('$work/$dataset.h5', '$dataset', prompts='report')"
echo "$dataset-shaped random cache, report ${args:-(default: 5 seeds, 3 descriptions)}, no head cache; $(nproc) cores"
for r in $(seq "$rounds"); do
  for tree in "$work/old" "$here"; do
    name=$([ "$tree" = "$here" ] && echo "now ($(git -C "$here" rev-parse --short HEAD))" || echo "$old")
    s=$(date +%s.%N)
    (cd "$tree" && PYTHONPATH=$tree "$py" -m pacs_embed report "$work/$dataset.h5" $args --no-head-cache --no-progress \
        --out "$work/out-$r-$(basename "$tree")" > /dev/null)
    printf "round %s  %-16s %6.1f s\n" "$r" "$name" "$(echo "$(date +%s.%N) - $s" | bc)"
  done
done
