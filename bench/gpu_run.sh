#!/usr/bin/env bash
# One device call for the GPU suite, from the repository root; results under $OUT (the device tool's folder).
# Prepare here first: bench/gpu_wheels.sh (wheels the device image lacks → .whl/), then have the device tool run
#   bash bench/gpu_run.sh                                  with carry [".whl"] and timeout_s 600
# GPU_SUITE_LIMIT_S (default 480: 8 min) bounds the suite; it skips steps that would end within 60 s of that, a
# `timeout` stops it at the limit, and the result file (written after every step) and the table survive either way.
# GPU_SUITE_ARGS adds options, e.g. GPU_SUITE_ARGS="--only autotune" for the max-autotune runs in a second call.
set -uo pipefail
OUT="${OUT:-bench/results}"
LIMIT_S="${GPU_SUITE_LIMIT_S:-480}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit --format=csv \
  > "$OUT/nvidia_smi.csv" 2>&1
# shellcheck disable=SC2086  # GPU_SUITE_ARGS is a list of options
timeout -k 15 "$LIMIT_S" python3 -m bench.gpu_suite --out "$OUT" --budget-s $((LIMIT_S - 60)) ${GPU_SUITE_ARGS:-} \
  > "$OUT/gpu_suite.log" 2>&1
status=$?
tail -c 3000 "$OUT/gpu_suite.log"
for result in "$OUT"/gpu_suite_*.json; do
  [ -e "$result" ] && python3 -m bench.gpu_suite --summary "$result"
done
exit "$status"
