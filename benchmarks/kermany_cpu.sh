#!/usr/bin/env bash
# Recorded real-data run (backbone issue): ResNet-18 from scratch on Kermany chest X-rays at 128 px, grey, on the
# CPU, evaluated on the official test/ split. Validation = a patient-grouped 20 % of train/, the only data used
# for model selection (early stopping on validation loss, decision threshold by Youden's J on validation).
# Usage: benchmarks/kermany_cpu.sh [KERMANY_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/datasets/chest_xray_kermany}
exec "$here/record_run.sh" kermany_resnet18_128 "$data" --model resnet18 --in-channels 1 --image-size 128 \
  --epochs 20 --batch-size 32 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 --scheduler cosine \
  --class-weights --early-stopping 6 --seed 0 --max-minutes 32
