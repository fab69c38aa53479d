#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests, then the GPU benchmarks; prints everything.
#
#   bash scripts/gpu_check.sh [DATA]
#
# DATA: a COCO dataset folder (annotations.json + images/) for the segment throughput bench,
# default ../shared/data/balloon (skipped when absent). PY=python3 bash scripts/gpu_check.sh uses
# another interpreter than .venv/bin/python (one with this repo's dependencies).
# Exit status: 1 if a CUDA test failed or CUDA is absent, else 0 (benchmarks only print).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${1:-../shared/data/balloon}
export PYTHONPATH=$PWD

echo "== machine"
nvidia-smi || echo "(no nvidia-smi)"
$PY - <<'EOF' || exit 1
import os, torch
assert torch.cuda.is_available(), "CUDA is not available to torch: nothing to check"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): "
      f"{p.name} {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}; "
      f"{os.cpu_count()} CPU cores")
EOF
AMP=$($PY -c "import torch; print('bf16' if torch.cuda.is_bf16_supported() else 'fp16')")

echo "== CUDA tests (tests marked cuda, slow ones included)"
status=0
$PY -m pytest -m cuda -v -rs -p no:cacheprovider tests/ || status=1

echo "== latency: set_image and per-box decode, tiny and R50 (random init), 512 and 1024 px"
OMP_NUM_THREADS=1 $PY -m bench.latency --device cuda --compile --repeat 20

if [ -d "$DATA" ]; then
  echo "== segment throughput on $DATA"
  OMP_NUM_THREADS=1 $PY -m bench.throughput --data "$DATA" --device cuda
  OMP_NUM_THREADS=1 $PY -m bench.throughput --data "$DATA" --device cuda --model r50 \
    --image-size 1024
  OMP_NUM_THREADS=1 $PY -m bench.throughput --data "$DATA" --device cuda --model r50 \
    --image-size 1024 --segment-args "--batch-images 8 --amp $AMP --channels-last"
else
  echo "== segment throughput skipped: no dataset at $DATA"
fi
exit $status
