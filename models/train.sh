#!/usr/bin/env bash
# Re-train one shipped model from ../shared/datasets and export it here (fp16 weights + metadata + metrics.json).
# Usage: models/train.sh chest_xray_pneumonia | brain_mri_tumor
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$here/..
data=$root/../shared/datasets
cadx=${CADX:-$root/.venv/bin/cadx}
case "${1:-}" in
  chest_xray_pneumonia)
    "$root/benchmarks/kermany_cpu.sh" "$data/chest_xray_kermany"
    run=$root/runs/kermany_resnet18_128 category="Chest X-ray" ;;
  brain_mri_tumor)
    # 70/20/10 split of the training folder, seeded; byte-identical duplicates dropped before splitting.
    "$root/benchmarks/record_run.sh" brain_mri_resnet18_128 "$data/brain_mri_4class/train" --model resnet18 \
      --in-channels 1 --image-size 128 --epochs 20 --batch-size 32 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
      --scheduler cosine --early-stopping 6 --drop-duplicates --patient-pattern "" --seed 0 --max-minutes 32
    run=$root/runs/brain_mri_resnet18_128 category="Brain MRI" ;;
  *) echo "usage: $0 chest_xray_pneumonia | brain_mri_tumor" >&2; exit 2 ;;
esac
"$cadx" export "$run" --output "$here/$1/model.ckpt" --category "$category"
