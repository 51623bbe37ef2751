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

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from dina_jax.analysis.run import analyze, with_defaults

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (default: the run's).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's folder.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        from dina_jax.train import config_from_json

        path = os.path.join(_WORKDIR.value, "config.json")
        if not os.path.exists(path):
            print(f"error: {path}: no config.json (not a trained run?)", file=sys.stderr)
            sys.exit(2)
        with open(path) as f:
            config = config_from_json(json.load(f))
        config = with_defaults(config)  # Fields added after the run was trained: defaults.
    analyze(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
