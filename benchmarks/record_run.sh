#!/usr/bin/env bash
# Train, evaluate on validation and test, and keep the record (raw JSON, report, plots, hardware) in benchmarks/NAME.
# Usage: benchmarks/record_run.sh NAME DATA [cadx train options...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=$1; data=$2; shift 2
run=$here/../runs/$name
record=$here/$name
cadx=${CADX:-$here/../.venv/bin/cadx}
mkdir -p "$record"
start=$(date +%s)
$cadx train "$data" --output "$run" --overwrite --folds 1 "$@"  # one split: evaluated on its test below
$cadx evaluate "$run" --split val --output "$run/val"
$cadx evaluate "$run" --split test --output "$run/test"
end=$(date +%s)
cp "$run/test/metrics.json" "$record/test_metrics.json"
cp "$run/val/metrics.json" "$record/val_metrics.json"
cp "$run/test/report.md" "$record/test_report.md"
cp "$run/summary.json" "$run/metrics.csv" "$run/config.yaml" "$run/curves.png" "$record/"
cp "$run/test/roc.png" "$run/test/confusion_matrix.png" "$record/"
printf '%q ' "$0" "$name" "$data" "$@" > "$record/command.txt"; echo >> "$record/command.txt"
"$(dirname "$cadx")/python" - "$record" "$((end - start))" <<'PY'
import json, sys
from cadx.engine.hardware import describe_hardware
record, seconds = sys.argv[1], int(sys.argv[2])
json.dump({"wall_seconds_train_and_eval": seconds, **describe_hardware()}, open(f"{record}/hardware.json", "w"),
          indent=2)
PY
echo "recorded in $record"
