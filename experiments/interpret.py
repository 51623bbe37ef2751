"""Interpretability analyses of a trained run: Fig. 5a-h and Fig. 6a-b (paper Sec. 4.4-4.5).

  python experiments/interpret.py --workdir workdirs/synthetic
  python experiments/interpret.py --workdir workdirs/m1 --config configs/m1.py \
      --config.analysis.n_images=40

Same as ``python -m dina_jax.main --config <run config> --workdir DIR --mode analyze``. Without
``--config`` the run's own config (``DIR/config.json``) supplies the analysis settings. Writes
``DIR/analysis.h5``, ``DIR/analysis.json`` and ``DIR/figures/fig5*.png``, ``fig6*.png``; rerunning
skips the parts already computed with the same settings.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from dina_jax.analysis.run import analyze
from dina_jax.checkpoint import run_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (default: the run's).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's folder.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        try:
            config = run_config(_WORKDIR.value)  # Fields added since the run: defaults.
        except FileNotFoundError as error:
            print(
                f"error: {error.filename}: {error.strerror} (not a trained run?)", file=sys.stderr
            )
            sys.exit(2)
    analyze(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
