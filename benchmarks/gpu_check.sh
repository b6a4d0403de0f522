#!/usr/bin/env bash
# Every GPU check in as few device commands as possible (the H200 is lent by the half hour):
#   bash benchmarks/gpu_check.sh tests    # pytest -m gpu: the CUDA branches of every part (about 2 min)
#   bash benchmarks/gpu_check.sh smoke    # lit-infer predict in each GPU configuration, outputs compared
#   bash benchmarks/gpu_check.sh bench    # the issue's harness run: ResNet-50, bf16, 20,000 JPEGs, 16 workers
#   bash benchmarks/gpu_check.sh all      # the three in one command, each bounded (120 s, 210 s, 230 s) so the next
#                                         # still runs: about 9 minutes, for a lease of 15 (smaller smoke and bench)
# Logs go to $OUT (the device tool's folder) or ./gpu_check_out. Where jsonargparse is missing (the H200), carry
# its wheels in .whl (../shared/device-wheels/README.md): they are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?tests, smoke, bench or all}
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
# The files that hold GPU tests: collecting all of tests/ would need moto, s3fs and pycocotools, which the H200 lacks.
gpu_tests=$(grep -l "mark.gpu" -r tests --include="test_*.py")
case $part in
  tests) python3 -m pytest -q -m gpu $gpu_tests -p no:cacheprovider -rs 2>&1 | tee "$out/gpu_tests.log" ;;
  smoke) python3 -m benchmarks.gpu_smoke --out /tmp/gpu_smoke --images "${SMOKE_IMAGES:-500}" 2>&1 | tee "$out/smoke.log"
         rc=$?; cp /tmp/gpu_smoke/smoke.json "$out/" 2>/dev/null; exit $rc ;;
  bench) python3 -m benchmarks.harness --device cuda --model resnet50 --images "${BENCH_IMAGES:-20000}" \
           --batch-size 256 --workers 16 --precision bf16-mixed --repeats "${BENCH_REPEATS:-3}" --timeout 120 \
           2>&1 | tee "$out/bench.log" ;;
  all) for step in "tests 120" "smoke 210" "bench 230"; do
         set -- $step
         started=$(date +%s)
         SMOKE_IMAGES=300 BENCH_IMAGES=8000 BENCH_REPEATS=2 timeout --kill-after 5 "$2" bash "$0" "$1"
         echo "$1: exit $? after $(( $(date +%s) - started )) s (bound $2 s)" | tee -a "$out/parts.txt"
       done ;;
  *) echo "unknown part: $part (tests, smoke or bench)"; exit 2 ;;
esac
