#!/usr/bin/env bash
# Every GPU check in as few device commands as possible (the H200 is lent by the half hour):
#   bash benchmarks/gpu_check.sh tests    # pytest -m gpu: the CUDA branches of every part (about 2 min)
#   bash benchmarks/gpu_check.sh smoke    # lit-infer predict in each GPU configuration, outputs compared
#   bash benchmarks/gpu_check.sh bench    # the issue's harness run: ResNet-50, bf16, 20,000 JPEGs, 16 workers
# Logs go to $OUT (the device tool's folder) or ./gpu_check_out. Where jsonargparse is missing (the H200), carry
# its wheels in .whl (../shared/device-wheels/README.md): they are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?tests, smoke or bench}
out=${OUT:-gpu_check_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import jsonargparse" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; date -u; git log -1 --oneline; } \
  >"$out/machine.txt" 2>&1
case $part in
  tests) python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log" ;;
  smoke) python3 -m benchmarks.gpu_smoke --out /tmp/gpu_smoke 2>&1 | tee "$out/smoke.log"
         rc=$?; cp /tmp/gpu_smoke/smoke.json "$out/" 2>/dev/null; exit $rc ;;
  bench) python3 -m benchmarks.harness --device cuda --model resnet50 --images 20000 --batch-size 256 --workers 16 \
           --precision bf16-mixed --repeats 3 2>&1 | tee "$out/bench.log" ;;
  *) echo "unknown part: $part (tests, smoke or bench)"; exit 2 ;;
esac
