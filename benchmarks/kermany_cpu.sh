#!/usr/bin/env bash
# Recorded real-data run (issue: backbone): ResNet-18 from scratch on Kermany chest X-rays at 128 px, grey,
# on the CPU, evaluated on the official test/ split. Validation = a patient-grouped 20 % of train/.
# Usage: benchmarks/kermany_cpu.sh [KERMANY_DIR] [RUN_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/datasets/chest_xray_kermany}
run=${2:-$here/../runs/kermany-resnet18-128}
cadx=${CADX:-$here/../.venv/bin/cadx}
record=$here/kermany_resnet18_128
mkdir -p "$record"
start=$(date +%s)
$cadx train "$data" --output "$run" --overwrite --model resnet18 --in-channels 1 --image-size 128 \
  --epochs 20 --batch-size 32 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 --scheduler cosine \
  --class-weights --early-stopping 6 --seed 0 --max-minutes 32
$cadx evaluate "$run" --split val --output "$run/val"
$cadx evaluate "$run" --split test --output "$run/test"
end=$(date +%s)
cp "$run/test/metrics.json" "$record/test_metrics.json"
cp "$run/val/metrics.json" "$record/val_metrics.json"
cp "$run/test/report.md" "$record/test_report.md"
cp "$run/summary.json" "$run/metrics.csv" "$run/config.yaml" "$run/curves.png" "$record/"
cp "$run/test/roc.png" "$run/test/confusion_matrix.png" "$record/"
python3 - "$record" "$((end - start))" <<'PY'
import json, os, platform, sys
record, seconds = sys.argv[1], int(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
json.dump({"wall_seconds_train_and_eval": seconds, "cpu": cpu, "cores": os.cpu_count(),
           "python": platform.python_version()}, open(f"{record}/hardware.json", "w"), indent=2)
PY
echo "recorded in $record"
