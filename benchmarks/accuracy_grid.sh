#!/usr/bin/env bash
# The full accuracy grid of docs/benchmarks.md (issue #16), most telling
# cells first: every step is resumable (rows already in the JSON are
# skipped), so rerun the script after a stop. One process at a time.
#   nohup bash benchmarks/accuracy_grid.sh > accuracy_grid.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
backend=${BACKEND:-tensorflow}
accuracy() {
    TF_CPP_MIN_LOG_LEVEL=2 "$python" -m benchmarks.accuracy \
        --backends "$backend" "$@"
}
# b_v against all biases and full fine-tuning, with the model's own head;
# STS-B's untuned cosine baseline.
accuracy --tasks sst2 --methods b_v all-bias full
accuracy --tasks stsb --methods untuned b_v all-bias full
accuracy --tasks rte cola --methods b_v all-bias full
# Length buckets against fixed padding to 128, on SST-2.
accuracy --tasks sst2 --methods b_v --fixed-padding
# keras-hub's CLS head at the paper's settings, for the authors' figures.
accuracy --tasks rte sst2 --methods b_v all-bias --pooling cls
# The other methods; b_k on one seed (it equals head-only).
accuracy --methods b_q head random
accuracy --seeds 0 --methods b_k
