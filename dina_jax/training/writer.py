"""Training metrics: one JSON object per line in ``metrics.jsonl``, and TensorBoard if installed."""

from __future__ import annotations

import json
import logging
import os

from dina_jax import files


class MetricWriter:
    """Appends records to ``workdir/metrics.jsonl`` (+ TensorBoard scalars when installed).

    Every record has ``kind`` ("train" or "epoch") and ``step``; TensorBoard gets each numeric
    field as ``<kind>/<field>``. Only process 0 writes (``enabled``).
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tensorboard = (
            _tensorboard_writer(os.path.join(workdir, "tensorboard")) if enabled else None
        )

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
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)):
                    self._tensorboard.scalar(f"{record['kind']}/{key}", value, record["step"])
            self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _tensorboard_writer(logdir: str):
    """A scalar summary writer if flax's TensorBoard writer or tensorboardX is installed."""
    try:
        from flax.metrics import tensorboard  # needs tensorflow

        return tensorboard.SummaryWriter(logdir)
    except ImportError:
        pass
    try:
        import tensorboardX

        class _Adapter:
            def __init__(self):
                self._writer = tensorboardX.SummaryWriter(logdir)

            def scalar(self, tag, value, step):
                self._writer.add_scalar(tag, value, step)

            def flush(self):
                self._writer.flush()

            def close(self):
                self._writer.close()

        return _Adapter()
    except ImportError:
        return None
