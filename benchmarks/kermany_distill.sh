#!/usr/bin/env bash
# Distil an ensemble of two Kermany ResNet-18s into one (benchmarks/kermany_distill/PROTOCOL.md): train the second
# teacher, measure the teachers' ensemble, train the student against both and a control without teachers, then put
# student, control and shipped model side by side. Finished steps are skipped, so the script can be re-run.
# Teacher 1 is the shipped chest model as it was when this ran (seed 2 of benchmarks/kermany_seeds.sh).
# Usage: benchmarks/kermany_distill.sh [KERMANY_DIR]   (about 2.5 hours on 2 CPU cores)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$here/..
data=${1:-$root/../shared/datasets/chest_xray_kermany}
python=${PYTHON:-$root/.venv/bin/python}
recipe=(--model resnet18 --in-channels 1 --image-size 128 --epochs 10 --batch-size 32 --optimizer adamw --lr 1e-3
        --weight-decay 1e-4 --scheduler cosine --class-weights --early-stopping 6 --split-seed 0 --max-minutes 75)
teachers=("$root/models/chest_xray_pneumonia" "$root/runs/kermany_resnet18_128_seed1_10ep")
done_() { [ -f "$here/$1/${2:-hardware.json}" ]; }  # record_run.sh writes hardware.json last
done_ kermany_resnet18_128_seed1_10ep ||
  "$here/record_run.sh" kermany_resnet18_128_seed1_10ep "$data" "${recipe[@]}" --seed 1
done_ kermany_distill_teachers results.json ||
  "$python" "$here/ensemble_effects.py" kermany_distill_teachers "${teachers[@]}" \
    --note "Kermany 128 px grey; the two teachers of benchmarks/kermany_distill (shipped seed 2; seed 1, 10 epochs)"
done_ kermany_resnet18_128_distilled ||
  "$here/record_run.sh" kermany_resnet18_128_distilled "$data" "${recipe[@]}" --seed 5 \
    --teacher "${teachers[0]}" --teacher "${teachers[1]}" --distill-weight 0.9 --distill-temperature 4
done_ kermany_resnet18_128_seed5_10ep || "$here/record_run.sh" kermany_resnet18_128_seed5_10ep "$data" "${recipe[@]}" --seed 5
done_ kermany_distill results.json ||
  "$python" "$here/ensemble_effects.py" kermany_distill "$root/runs/kermany_resnet18_128_distilled" \
  "$root/runs/kermany_resnet18_128_seed5_10ep" "${teachers[0]}" --top 0 \
  --note "Kermany 128 px grey; student (seed 5, 10 epochs) distilled from 2 teachers, the same without teachers, and the shipped model (seed 2)"
# Addendum 7 of the protocol: a second student seed.
done_ kermany_resnet18_128_distilled_seed6 ||
  "$here/record_run.sh" kermany_resnet18_128_distilled_seed6 "$data" "${recipe[@]}" --seed 6 \
    --teacher "${teachers[0]}" --teacher "${teachers[1]}" --distill-weight 0.9 --distill-temperature 4
done_ kermany_distill_seed6 results.json ||
  "$python" "$here/ensemble_effects.py" kermany_distill_seed6 "$root/runs/kermany_resnet18_128_distilled_seed6" --top 0 \
    --note "Kermany 128 px grey; second student (seed 6, 10 epochs) distilled from the same 2 teachers"
