#!/usr/bin/env bash
# The GPU measurement of issue 14, as one prepared run for a lent GPU machine (H200: about 8 minutes).
#
# Here, once:   bash bench/gpu_device_wheels.sh          (wheels the device lacks → .whl/, ~32 MiB)
# Then, with the device tool:
#   run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=600)
# It builds the full-size SDXL random-weight model ON the device (nothing large travels), runs bench/gpu.py at
# 1280² x 4 images, 30 steps, with a time limit that leaves room for the build, and writes under $OUT:
#   gpu.json (the JSON line), gpu.log (the table), env.txt (GPU, driver, versions).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/imagine-gpu-out}
mkdir -p "$OUT"
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "no wheels in .whl/: run bench/gpu_device_wheels.sh here and carry .whl" | tee "$OUT/gpu.log"
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 3
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', \
diffusers.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)"
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# --time-limit counts from the start of the build; measurements that would pass it are skipped and listed.
timeout 560 python3 bench/gpu.py --arch sdxl --size 1280 --steps 30 --time-limit "${TIME_LIMIT:-450}" \
  --json-out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"
status=${PIPESTATUS[0]}
echo "bench/gpu.py exit status $status" | tee -a "$OUT/gpu.log"
exit "$status"
