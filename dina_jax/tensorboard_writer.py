"""TensorBoard event files without TensorFlow (tensorboardX): scalars, hyperparameters, figures.

Every run writes to ``<workdir>/tensorboard``; ``tensorboard --logdir <workdir>`` (or
``%tensorboard --logdir ...`` in a notebook) shows the training curves, the config in the
HPARAMS tab and the evaluation figures under IMAGES. Only process 0 of a multi-host run writes.
"""

from __future__ import annotations

import logging
import os

import numpy as np

SUBDIR = "tensorboard"


def logdir(workdir: str | os.PathLike) -> str:
    """The TensorBoard folder of a run."""
    return os.path.join(os.fspath(workdir), SUBDIR)


def flat_hparams(config) -> dict:
    """A ConfigDict (or dict) as TensorBoard hyperparameters: dotted keys, scalar values
    (tuples and lists become their text, ``None`` the string ``"None"``)."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    flat: dict = {}

    def visit(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                visit(value, f"{prefix}{key}.")
            elif isinstance(value, bool | int | float | str):
                flat[prefix + key] = value
            else:
                flat[prefix + key] = str(value)

    visit(values, "")
    return flat


def figure_to_array(fig) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a ``matplotlib.figure.Figure``, drawn off-screen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class TensorBoard:
    """A tensorboardX writer for one run folder; without tensorboardX every call does nothing
    (one warning names the missing package)."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.logdir = logdir(workdir)
        self._writer = None
        if not enabled:
            return
        try:
            import tensorboardX
        except ImportError:
            logging.warning("tensorboardX is not installed: no TensorBoard logs (pip install it)")
            return
        self._writer = tensorboardX.SummaryWriter(self.logdir)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalars(self, prefix: str, record: dict, step: int) -> None:
        """Each numeric field of ``record`` as the scalar ``<prefix>/<field>``."""
        if self._writer is None:
            return
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def hparams(self, config, metrics: tuple[str, ...] = ()) -> None:
        """The config as hyperparameters of this run (HPARAMS tab), the ``metrics`` scalar tags
        as its columns."""
        if self._writer is None:
            return
        from tensorboardX.summary import hparams

        experiment, start, end = hparams(flat_hparams(config), dict.fromkeys(metrics, 0.0))
        for summary in (experiment, start, end):
            self._writer.file_writer.add_summary(summary)

    def figure(self, tag: str, fig, step: int) -> None:
        """A matplotlib Figure as an image."""
        if self._writer is None:
            return
        self._writer.add_image(tag, figure_to_array(fig), step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
