#!/usr/bin/env bash
# Works through the recipe search, then the main ablation plan, in the background (resumable:
# rerun it after an interruption). Log: logs/sweep.log.
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
# Wait for an earlier sweep of this folder to finish (one writer per workdir).
while pgrep -f "experiments/ablations.py --root workdirs/ablations" > /dev/null; do sleep 30; done
for plan in explore main; do
  "$python" experiments/ablations.py --root workdirs/ablations --plan "$plan"
done
