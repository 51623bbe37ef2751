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
Bad input (unknown config key, missing or corrupt data file) is reported in one line with exit
code 2. The heavy lifting lives in library functions (``training.train_and_evaluate``,
``evaluation.evaluate``, ``analysis.run.analyze``) that notebooks call directly.
"""

from __future__ import annotations

import math
import os

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
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        f.write("\n")
    os.replace(tmp, path)
    return path


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
    from dina_jax.data import pipeline

    enable_compilation_cache(config, workdir)
    results: dict = {}
    if mode in ("train", "all"):
        from dina_jax.training.loop import check_train_options

        # A bad training option fails here, before the workdir is written to.
        check_train_options(config)
    if mode in ("data", "train", "all") or not os.path.exists(os.path.join(workdir, "config.json")):
        # Evaluating or analysing an existing run must not replace the record of its training.
        write_config(config, workdir)
    if mode in ("data", "all"):
        dataset = pipeline.load_dataset(config, workdir=workdir)
        print(pipeline.summarize(dataset), flush=True)
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

    from dina_jax.data.stringer import DataError

    if not flags.FLAGS["verbosity"].present:
        # Keep stderr for warnings and errors (a bad input must read as one line); progress goes
        # to stdout and tqdm. --verbosity=0 brings absl/JAX INFO logs back.
        logging.set_verbosity(logging.WARNING)
    from dina_jax.training.loop import check_train_options, maybe_initialize_distributed

    # Multi-host: jax.distributed must be initialized before anything touches a backend.
    maybe_initialize_distributed(config)
    print(f"JAX {jax.__version__} devices: {jax.devices()}", flush=True)
    try:
        check_train_options(config)
    except ValueError as error:
        _fail(f"{flags.FLAGS['config'].config_filename}: {error}")
    from dina_jax.checkpoint import CheckpointError

    try:
        results = run(config, _WORKDIR.value, _MODE.value)
    except (DataError, CheckpointError) as error:
        _fail(str(error))
    except FileNotFoundError as error:
        _fail(f"{error.filename}: {error.strerror}")
    print("\n".join(summary_lines(results, _WORKDIR.value)), flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
