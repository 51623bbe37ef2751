"""Interpretability analyses of a trained run: Fig. 5a-h and Fig. 6a-b (paper Sec. 4.4-4.5).

  python -m experiments.interpret --workdir workdirs/synthetic
  python -m experiments.interpret --workdir workdirs/m1 --config.analysis.n_images=40 \\
      --config.data.dir=/path/to/stringer

The run's own config (``DIR/config.json``) supplies the settings; ``--config.<section>.<field>``
overrides them as in ``dina_jax.main``. Same as ``python -m dina_jax.main --config <run config>
--workdir DIR --mode analyze``. Writes ``DIR/analysis.h5``, ``DIR/analysis.json`` and
``DIR/figures/fig5*``, ``fig6*``; rerunning skips the parts already computed with the same
settings. ``python experiments/interpret.py`` works too.
"""

from __future__ import annotations

import sys

from absl import app, flags

from dina_jax import cli
from dina_jax.config import apply_overrides


def define_flags() -> None:
    """The command line (defined only when run as a script: absl flags are global)."""
    cli.define_config_overrides("Overrides of the run's config.")
    flags.DEFINE_string("workdir", None, "A trained run's folder.", required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from dina_jax.analysis.run import analyze
    from dina_jax.checkpoint import run_config

    workdir = flags.FLAGS.workdir
    try:
        config = run_config(workdir)  # Fields added since the run: defaults.
    except FileNotFoundError as error:
        print(f"error: {error.filename}: {error.strerror} (not a trained run?)", file=sys.stderr)
        sys.exit(2)
    apply_overrides(config, cli.config_overrides())
    analyze(config, workdir)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
