#!/usr/bin/env bash
# Works through the robustness runs, the recipe proxies, the main ablation plan, then the
# recipe search, in the background (resumable: rerun it after an interruption). Log: logs/sweep.log.
# One process per core (SHARDS, default: the core count), each pinned to its core and taking
# every SHARDS-th run of a plan: XLA:CPU keeps ~1.5 of 2 cores busy, so two pinned runs train
# ~1.25x more examples per second between them than one run on both cores.
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
shards=${SHARDS:-$(nproc)}
# Wait for an earlier sweep of this folder to finish (one writer per workdir).
while pgrep -f "experiments/ablations.py --root workdirs/ablations" > /dev/null; do sleep 30; done
for plan in robust recipe main explore; do
  for ((i = 0; i < shards; i++)); do
    pin=()
    if ((shards > 1)) && command -v taskset > /dev/null; then pin=(taskset -c "$((i % $(nproc)))"); fi
    "${pin[@]}" "$python" experiments/ablations.py --root workdirs/ablations --plan "$plan" \
      --shard "$i/$shards" 2>&1 | sed -u "s/^/[$i] /" &
  done
  wait
done
