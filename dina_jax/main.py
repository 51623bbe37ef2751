"""Command-line entry point: ``python -m dina_jax.main --config configs/<name>.py --workdir DIR``.

``--config`` takes a file or a config name (``--config m1``); ``configs/<name>.py`` is the
packaged ``dina_jax/configs/<name>.py`` from any folder.

Modes (``--mode``):
  data      load (or simulate) the data, preprocess, print a summary; no training.
  train     train (resuming from DIR if it holds a checkpoint), then evaluate the best checkpoint.
  evaluate  evaluate the best checkpoint of DIR (retrieval, baselines, figures) without training.
  analyze   run the interpretability analyses (Fig. 5-6) on the best checkpoint of DIR.
  all       data summary, train, evaluate, analyze (the default).

Any config field can be overridden, e.g. ``--config.data.n_spont_pcs=0`` or
``--config.data.dir=/path/to/stringer``. The resolved config is written to ``DIR/config.json``.
Everything is validated before the first byte is written to DIR: the config, the data, and when
resuming the checkpoint's compatibility. Bad input (unknown config key or bad value, missing or
corrupt data file, damaged or incompatible checkpoint, an unwritable or busy workdir) is reported
in one line ``error: <what> (<how to fix>)`` with exit code 2. One process writes a workdir at a
time (``dina_jax.files.workdir_lock``). The heavy lifting lives in library functions
(``training.train_and_evaluate``, ``evaluation.evaluate``, ``analysis.run.analyze``) that
notebooks call directly.
"""

from __future__ import annotations

import math
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

# The parsing every script shares: one-line errors (exit 2), config names resolved.
from dina_jax.cli import USAGE_ERROR, resolve_config_argument  # noqa: F401 - the CLI's API
from dina_jax.cli import fail as _fail
from dina_jax.cli import parse_flags as _parse_flags
from dina_jax.progress import format_duration

MODES = ("data", "train", "evaluate", "analyze", "all")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "A config file, or a name from dina_jax/configs/ (m1, synthetic, ...).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and figures.")
_MODE = flags.DEFINE_enum("mode", "all", MODES, "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def write_config(config, workdir: str) -> str:
    """Writes the resolved config to ``workdir/config.json`` atomically and returns the path."""
    from dina_jax.checkpoint import write_config as write

    os.makedirs(workdir, exist_ok=True)
    return write(config, workdir)


def enable_compilation_cache(config, workdir: str | None = None) -> str:
    """Points JAX's persistent compilation cache at ``config.compilation_cache``; returns it.

    "auto": ``<cache folder>/xla`` beside the data cache (``data.cache_dir``, else
    ``<workdir>/../dina_cache``); "": off (returns ""). Every program that takes more than a
    second to compile is stored, so a second run of the same job starts without compiling.
    """
    import jax

    from dina_jax.data import pipeline

    setting = config.compilation_cache
    if not setting:
        return ""
    folder = (
        os.path.join(pipeline.cache_folder(config, workdir), "xla")
        if setting == "auto"
        else os.path.expanduser(setting)
    )
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def run(config, workdir: str, mode: str = "all") -> dict:
    """Runs ``mode`` on ``config`` in ``workdir``: the whole command line in one call.

    Paper Sec. 3.3-4.5: data summary, training, evaluation, the Fig. 5-6 analyses.

    Args:
      config: the full ConfigDict (``dina_jax.load_config``).
      workdir: the run's folder.
      mode: "data", "train", "evaluate", "analyze" or "all" (see the module docstring).

    Returns:
      ``{"train": ..., "evaluate": ..., "analyze": ...}``, the results of the steps that ran.

    Example::

        dina_jax.run(config, "workdirs/synthetic", mode="all")  # data, train, evaluate, analyze
    """
    import contextlib

    import jax

    from dina_jax import files
    from dina_jax.config import check_config
    from dina_jax.data import pipeline

    # Validate first, write after: the config here, the data and a resumed checkpoint's
    # compatibility in each step before its first write (a refused run leaves the workdir as is).
    if mode in ("train", "all"):
        from dina_jax.training.loop import check_train_options

        check_train_options(config)
    else:
        check_config(config)
    enable_compilation_cache(config, workdir)
    results: dict = {}
    if mode in ("data", "all"):
        dataset = pipeline.load_dataset(config, workdir=workdir)
        print(pipeline.summarize(dataset), flush=True)
    if mode == "data":
        with files.workdir_lock(workdir):
            write_config(config, workdir)
        return results
    # "all" holds the workdir for its three steps (each step also locks it, re-entrantly).
    primary = jax.process_index() == 0
    hold = files.workdir_lock(workdir, enabled=primary) if mode == "all" else None
    with hold or contextlib.nullcontext():
        if mode in ("train", "all"):
            from dina_jax.training import train_and_evaluate

            results["train"] = train_and_evaluate(config, workdir)
        elif mode == "evaluate":
            from dina_jax.evaluation import evaluate

            results["evaluate"] = evaluate(config, workdir)
        if mode in ("analyze", "all"):
            from dina_jax.analysis import run as analysis_run

            results["analyze"] = analysis_run.analyze(config, workdir)
    return results


def _pct(metrics: dict, k: int) -> str:
    value = metrics.get(f"top{k}")
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_lines(results: dict, workdir: str) -> list[str]:
    """The end of a CLI run: its main numbers, then the files it wrote (those that exist)."""
    lines = [f"== summary of {os.path.abspath(workdir)}"]
    train = results.get("train") or {}
    if train:
        how = "stopped early" if train.get("stopped_early") else "epoch budget"
        best = train.get("best_val_loss")
        lines.append(
            f"training: {train.get('epochs_completed')} epochs ({how}) in "
            f"{format_duration(train.get('train_seconds', math.nan))}, best val_loss "
            + (f"{best:.4f}" if best is not None else "-")
            + f" at epoch {train.get('best_epoch')}"
        )
    evaluation = train.get("eval") or results.get("evaluate")
    if evaluation:
        run, ridge = evaluation["retrieval"], evaluation["linear_baseline"]
        ceiling, chance = evaluation["noise_ceiling"], evaluation["chance"]
        lines.append(
            f"test retrieval ({evaluation['n_test']}-way) top-1/5/10: "
            f"{' / '.join(_pct(run, k) for k in (1, 5, 10))}; ridge top-1 {_pct(ridge, 1)}, "
            f"noise ceiling {_pct(ceiling, 1)}, chance {_pct(chance, 1)}"
        )
    analysis = results.get("analyze")
    if analysis:
        parts = []
        if "blobs" in analysis:
            parts.append(f"STI mean {analysis['blobs'].get('sti_mean', math.nan):.3f}")
        if "ablation" in analysis:
            ranked = analysis["ablation"].get("ranked_fraction", math.nan)
            parts.append(f"SSIM 0.9 at {100 * ranked:.1f}% of neurons (ranked)")
        if "attention" in analysis:
            attention = analysis["attention"]
            parts.append(
                f"attention ln P ~ N({attention.get('mu', math.nan):.2f}, "
                f"{attention.get('sigma', math.nan):.2f}^2)"
            )
        lines.append("analyses: " + "; ".join(parts or ["done"]))
    written = [
        name
        for name in (
            "config.json",
            "metrics.jsonl",
            "checkpoints",
            "results.json",
            "analysis.json",
            "analysis.h5",
            "tensorboard",
        )
        if os.path.exists(os.path.join(workdir, name))
    ]
    figures = os.path.join(workdir, "figures")
    if os.path.isdir(figures):
        written.append(f"figures/ ({len(os.listdir(figures))} files)")
    lines.append("wrote: " + ", ".join(written))
    if "tensorboard" in written:
        lines.append(f"view: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
    return lines


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = _CONFIG.value
        config.seed  # noqa: B018 - a config file that failed to load raises only on first access
    except Exception as error:  # noqa: BLE001 - any problem loading the file is a usage error
        reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
        _fail(f"cannot load config {flags.FLAGS['config'].config_filename}: {reason}")
    import jax

    from dina_jax.data import DataError

    if not flags.FLAGS["verbosity"].present:
        # Keep stderr for warnings and errors (a bad input must read as one line); progress goes
        # to stdout and tqdm. --verbosity=0 brings absl/JAX INFO logs back.
        logging.set_verbosity(logging.WARNING)
    from dina_jax.checkpoint import CheckpointError
    from dina_jax.config import ConfigError, check_config
    from dina_jax.files import WorkdirBusy
    from dina_jax.training.loop import (
        NonFiniteLossError,
        check_train_options,
        maybe_initialize_distributed,
    )

    # Multi-host: jax.distributed must be initialized before anything touches a backend.
    maybe_initialize_distributed(config)
    print(f"JAX {jax.__version__} devices: {jax.devices()}", flush=True)
    config_file = flags.FLAGS["config"].config_filename
    try:
        (check_train_options if _MODE.value in ("train", "all") else check_config)(config)
    except ValueError as error:
        _fail(f"{config_file}: {error}")
    workdir = _WORKDIR.value
    try:
        results = run(config, workdir, _MODE.value)
    except (DataError, CheckpointError, WorkdirBusy) as error:
        _fail(str(error))
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as error:  # a config value that only the data refute
        _fail(f"{config_file}: {error}")
    except OSError as error:  # e.g. an unwritable workdir, or none to evaluate
        where = error.filename or workdir
        hint = "" if isinstance(error, FileNotFoundError) else " (check that --workdir is writable)"
        _fail(f"{where}: {error.strerror or error}{hint}")
    print("\n".join(summary_lines(results, workdir)), flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
