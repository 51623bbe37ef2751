#!/usr/bin/env bash
# Works through the robustness runs, the recipe proxies, the main ablation plan, then the
# recipe search, in the background (resumable: rerun it after an interruption). Log: logs/sweep.log.
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
# Wait for an earlier sweep of this folder to finish (one writer per workdir).
while pgrep -f "experiments/ablations.py --root workdirs/ablations" > /dev/null; do sleep 30; done
for plan in robust recipe main explore; do
  "$python" experiments/ablations.py --root workdirs/ablations --plan "$plan"
done
