#!/usr/bin/env bash
# Lung CT, 5-fold cross-validation over near-duplicate groups (issue 20): the fine-tuning recipe of
# ../lung_ct_resnet18_128_ft with a shorter budget per fold, so that every image is tested once out of fold.
# Run from the repository root: bash benchmarks/lung_ct_resnet18_128_cv/run.sh -> runs/lung_ct_cv, cv_metrics.json here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${DATA:-$here/../../../shared/datasets/lung_ct_iqothnccd/train}
run=$here/../../runs/lung_ct_cv
start=$(date +%s)
"$here/../../.venv/bin/cadx" train "$data" --output "$run" --overwrite --folds 5 \
  --model resnet18 --in-channels 1 --image-size 128 --weights models/chest_xray_pneumonia/model.ckpt \
  --epochs 30 --batch-size 32 --optimizer adamw --lr 3e-4 --weight-decay 1e-4 --scheduler cosine \
  --early-stopping 6 --drop-duplicates --balanced-sampler --patient-pattern '' --seed 0 --max-minutes 4
end=$(date +%s)
cp "$run/cv_metrics.json" "$here/cv_metrics.json"
"$here/../../.venv/bin/python" - "$here" "$((end - start))" <<'PY'
import json, sys
from cadx.engine.hardware import describe_hardware
json.dump({"wall_seconds": int(sys.argv[2]), **describe_hardware()}, open(f"{sys.argv[1]}/hardware.json", "w"),
          indent=2)
PY
