#!/usr/bin/env bash
# More seeds of the recorded Kermany run (benchmarks/kermany_cpu.sh), identical recipe, only the seed changes:
# gives the seed-to-seed spread of a single run and the members of the ensemble evaluated by
# benchmarks/ensemble_effects.py. All share seed 0's split (--split-seed 0), so their validation set is one.
# Usage: benchmarks/kermany_seeds.sh [KERMANY_DIR] [SEED...]   (default seeds 1 2; seeds 3 4 were run with
# benchmarks/kermany_ensemble5/PROTOCOL.md)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/datasets/chest_xray_kermany}
shift || true
seeds=("${@:-1 2}")
for seed in ${seeds[@]}; do
  "$here/record_run.sh" "kermany_resnet18_128_seed$seed" "$data" --model resnet18 --in-channels 1 \
    --image-size 128 --epochs 20 --batch-size 32 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
    --scheduler cosine --class-weights --early-stopping 6 --seed "$seed" --split-seed 0 --max-minutes 32
done
