#!/usr/bin/env bash
# The exact command behind the 224 px Kermany tables, run through the lent-GPU tool (a bare CUDA machine with torch and
# Lightning but no MONAI/pydicom, nothing outside reachable, 10 minutes per command, 30 minutes per session):
#   - .whl/  the wheels it lacks (monai, pydicom, pylibjpeg, pylibjpeg-openjpeg), installed into /tmp/site;
#   - .gpu/chest_xray_kermany  a byte-for-byte copy of ../shared/datasets/chest_xray_kermany (224 x 224 JPEGs), linked
#     to ../shared/datasets/ so the tables record the same data path as the CPU tables;
# Finished runs committed under benchmarks/compare/TABLE/runs (no checkpoints) are copied in first, so a fresh machine
# resumes a table instead of retraining them. The tool sends at most 64 MiB and the tracked tree is larger (the shipped
# models), so before a call, here: list models/, docs/ and the 64 px/28 px table folders of benchmarks/compare/ in
# .git/info/exclude and `git rm -r -q --cached` them; after it, `git reset -q` and empty the exclude file.
# Runs `cadx compare` on each TABLE (default: the comparison, then the ablation) until BUDGET seconds are spent (an
# unfinished run resumes from its last.ckpt on the next call while the machine is still warm), then packs every
# result but the checkpoints into $OUT/results.tgz and, once trained, ResNet-18 as fp16 in 15 MB parts.
# Usage: benchmarks/gpu/run_kermany_224.sh [TABLE...]   (TABLE: a benchmarks/compare/*.yaml name without .yaml)
set -u
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
out=${OUT:-/tmp/cadx_gpu_out}
runs=${RUNS:-/tmp/cadx_gpu_runs}
budget=${BUDGET:-540}
mkdir -p "$out" "$runs"
if ! "$python" -c 'import monai, pydicom' 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
if [ -d .gpu/chest_xray_kermany ] && [ ! -e ../shared/datasets/chest_xray_kermany ]; then
  mkdir -p ../shared/datasets && ln -s "$PWD/.gpu/chest_xray_kermany" ../shared/datasets/chest_xray_kermany
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$out/log.txt"
tables=("$@"); [ ${#tables[@]} -gt 0 ] || tables=(kermany_224_comparison kermany_224_ablation)
deadline=$((SECONDS + budget))
for table in "${tables[@]}"; do
  left=$((deadline - SECONDS))
  [ "$left" -gt 30 ] || break
  echo "== $table ($left s left) $(date -u +%FT%TZ)" | tee -a "$out/log.txt"
  [ -d "benchmarks/compare/$table/runs" ] && mkdir -p "$runs/$table" && cp -rn "benchmarks/compare/$table/runs" "$runs/$table/"
  timeout "$left" "$python" -c 'from cadx.interfaces.cli import app; app()' compare \
    "benchmarks/compare/$table.yaml" --output "$runs/$table" 2>&1 | grep -v '━' >> "$out/log.txt"
  for m in "$runs/$table"/runs/*/metrics.csv; do [ -e "$m" ] && { echo "$m"; tail -n 2 "$m"; }; done >> "$out/log.txt"
done
tar czf "$out/results.tgz" -C "$runs" --exclude='*.ckpt' --exclude=.cache --exclude=split.csv .
resnet18=$runs/kermany_224_comparison/runs/resnet-18-seed0
if [ -e "$resnet18/test/metrics.json" ]; then
  "$python" -c 'from cadx.interfaces.cli import app; app()' export "$resnet18" --output /tmp/resnet18_224.ckpt \
    --category "Chest X-ray" >> "$out/log.txt" 2>&1 && split -b 15M /tmp/resnet18_224.ckpt "$out/resnet18_224.ckpt.part-"
fi
tail -n 40 "$out/log.txt"
