#!/usr/bin/env bash
# One prepared run on a machine with a CUDA GPU: the GPU benchmark, then the GPU tests, figures and
# logs into $OUT. Needs torch and transformers there, no model weights and no downloads: the
# benchmark builds random weights in the embedded model's shape from SHAPE_DIR (config.json +
# tokenizer; tokenizer.json may be gzipped), and the tests run on that random 270M checkpoint.
#
#   SHAPE_DIR=.gpu/shape-270m OUT=/tmp/gpu-out bash benchmarks/gpu_session.sh
#
# DEVICE=cpu SMOKE=1 runs the same steps on a CPU with tiny models (tests/test_benchmarks.py).
# STEPS=bench or STEPS=tests runs one half (two calls on a warm machine: read the first's figures
# before spending the second's time); the tests write the random checkpoint if the bench did not.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/icm-gpu-out}
SHAPE_DIR=${SHAPE_DIR:-}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/icm-bench-gpu}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"

STEPS=${STEPS:-bench,tests}
args=(--out "$WORK" --device "$DEVICE")
[ -n "$SHAPE_DIR" ] && args+=(--shape-dir "$SHAPE_DIR")
[ -n "${SMOKE:-}" ] && args+=(--smoke)
if [[ $STEPS == *bench* ]]; then
    timeout "${BENCH_TIMEOUT:-380}" "$PY" benchmarks/bench_gpu.py "${args[@]}" --deadline "${BENCH_DEADLINE:-300}" \
        2>&1 | grep -v "Writing model shards" | tee "$OUT/bench.log"
    cp "$WORK/results.json" "$OUT/bench-results.json" 2>/dev/null
    cp "$WORK/label.stderr.log" "$OUT/" 2>/dev/null
    cp "$WORK/tweets.labels.jsonl.summary.json" "$OUT/label-summary.json" 2>/dev/null
fi

if [ "$DEVICE" = cuda ] && [[ $STEPS == *tests* ]]; then
    [ -f "$WORK/random-270m/config.json" ] || "$PY" benchmarks/bench_gpu.py "${args[@]}" --parts checkpoint
    ICM_TEST_DEVICE=cuda ICM_TEST_MODEL="$WORK/random-270m" timeout "${TEST_TIMEOUT:-190}" \
        "$PY" -m pytest -q -ra -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/tests.log"
fi
[ -f "$OUT/bench.log" ] && tail -c 4000 "$OUT/bench.log" | grep -E "^==|efficiency|transfer \(|exit|labels identical|log-odds|peak|skipped" || true
