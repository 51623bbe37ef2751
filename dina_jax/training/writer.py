"""Training metrics: one JSON object per line in ``metrics.jsonl``, and TensorBoard scalars."""

from __future__ import annotations

import json
import logging
import os

from dina_jax import files
from dina_jax.tensorboard_writer import TensorBoard


class MetricWriter:
    """Appends records to ``workdir/metrics.jsonl`` and ``workdir/tensorboard``.

    Every record has ``kind`` ("train" or "epoch") and ``step``; TensorBoard gets each numeric
    field as ``<kind>/<field>``. Only process 0 writes (``enabled``).
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.tensorboard = TensorBoard(workdir, enabled=enabled)

    def truncate_after(self, step: int) -> None:
        """Drops records of steps after ``step`` (written by a run killed before its checkpoint)
        and torn lines (a kill in the middle of a write), with a warning; rewrites atomically."""
        if not self.enabled or not os.path.exists(self.path):
            return
        records = []
        with open(self.path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a kill in the middle of a write
                    logging.warning(
                        "%s: line %d is not JSON (torn write); dropped", self.path, number
                    )
        with files.atomic_write(self.path) as f:
            for record in records:
                if record.get("step", 0) <= step:
                    f.write(json.dumps(record) + "\n")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")  # One write: a kill tears at most this line.
        fields = {k: v for k, v in record.items() if k not in ("step", "kind")}
        self.tensorboard.scalars(record["kind"], fields, record["step"])
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()
