"""Table 1 of the paper: 280-way retrieval of DINA, VGG-16-MLP and ViT-MLP for each mouse.

Trains (or resumes) one run per (mouse, model) with ``training.train_and_evaluate``, evaluates its
best checkpoint with ``evaluation.evaluate`` and prints the paper's Table 1 layout (top-1/5/10 per
model, one row per mouse and a mean row) from the runs' ``results.json`` files, followed by the
context of each mouse (linear baseline, noise ceiling, chance). A run whose ``results.json``
exists is not touched again, so the script can be interrupted and restarted. Also writes
``ROOT/table1.json`` and, under ``ROOT/figures/``, Fig. A.1 (DINA's similarity matrices, one per
mouse), Fig. A.2 (paired feature maps of every model, one figure per mouse) and the table as bars.

Real data (the four natural-image recordings of configs/m1.py..m4.py in one folder)::

  python -m experiments.table1 --workdir workdirs/table1 --config.data.dir=/path/to/stringer

Simulated data, on a CPU (configs/synthetic.py: 2,000 neurons, 2,800 images per mouse; the
baselines shrunk to the CPU sizes of ``CPU_BASELINE`` below)::

  python -m experiments.table1 --synthetic --workdir workdirs/table1_synthetic \
      --config.train.num_epochs=10

``--config.<section>.<field>=value`` overrides every run's config, as in ``dina_jax.main``
(``--config.data.cache_dir`` defaults to ``ROOT/dina_cache``, one cache for all runs). Run
``--help`` for the other options (mice, models). ``python experiments/table1.py`` works too.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import app, flags

from dina_jax import checkpoint, cli, plots
from dina_jax.config import apply_overrides, load_config
from dina_jax.data import synthetic
from dina_jax.evaluation import evaluate
from dina_jax.evaluation.run import example_rows
from dina_jax.training import train_and_evaluate

MODELS = ("dina", "vgg16_mlp", "vit_mlp")
MODEL_LABELS = {"dina": "Ours (DINA)", "vgg16_mlp": "VGG-16 - MLP", "vit_mlp": "ViT - MLP"}
REAL_MICE = ("m1", "m2", "m3", "m4")
# The paper-size VGG-16 (13 convolutions, pooled twice to 16 x 64) costs ~32 GFLOP per 64 x 256
# image and the ViT (width 192, depth 6, 1,024 tokens) ~12 GFLOP, forward: hours per CPU epoch.
# With --synthetic the baselines keep their architecture (depths, pooling, token grid) with these
# widths, ~0.5 GFLOP each, the cost of configs/synthetic.py's DINA (which keeps its own sizes).
CPU_BASELINE = {
    "vgg16.widths": (8, 16, 32, 64, 64),
    "vit.dim": 32,
    "vit.depth": 2,
    "vit.num_heads": 2,
    "readout.mlp_hidden": 256,
}


def name_synthetic_files(config) -> None:
    """Points data.recording/images at the simulated files of data.synthetic.stimset/mouse."""
    stimset, mouse = config.data.synthetic.stimset, config.data.synthetic.mouse
    config.data.recording = synthetic.recording_filename(stimset, mouse)
    config.data.images = synthetic.images_filename(stimset, mouse)


def mouse_config(
    mouse: str, *, synthetic: bool, n_synthetic_mice: int, root: pathlib.Path, overrides: dict
):
    """The config of one mouse: configs/<mouse>.py, or the simulated mouse ``sim<i>``, with the
    command line's overrides."""
    if synthetic:
        config = load_config("synthetic")
        config.data.synthetic.n_mice = n_synthetic_mice
        config.data.synthetic.mouse = int(mouse.removeprefix("sim"))
        for key, value in CPU_BASELINE.items():
            block, field = key.split(".")
            config.model[block][field] = value
    else:
        config = load_config(mouse)
    # One cache for all runs: the simulated mice are generated (and recordings parsed) once.
    config.data.cache_dir = str(root / "dina_cache")
    apply_overrides(config, overrides)
    if synthetic:
        name_synthetic_files(config)
    return config


def run_or_resume(config, workdir: pathlib.Path) -> dict:
    """results.json of a run, training and evaluating it first when it does not exist yet."""
    results_path = workdir / "results.json"
    if not results_path.exists():
        print(f"== {workdir}: training {config.model.name}", flush=True)
        train_and_evaluate(config, str(workdir))
        if not results_path.exists():  # config.train.evaluate_at_end was off.
            evaluate(config, str(workdir))
    else:
        print(f"== {workdir}: done before, reading results.json", flush=True)
    return json.loads(results_path.read_text())


LABEL_WIDTH = 16  # Width of the row-label column of the printed tables.


def accuracy_table(rows: dict, columns: dict, topk=(1, 5, 10), *, title: str) -> str:
    """Table 1 layout: rows {row label: {column: results}}, one top-k block per column, mean row.

    ``columns`` maps a column key (model or condition) to its printed label; a missing run prints
    dashes and is left out of the mean.
    """
    width = 8 * len(topk)
    lines = [
        title,
        f"{'':<{LABEL_WIDTH}}" + "".join(f"{label:^{width}}" for label in columns.values()),
        f"{'Mouse':<{LABEL_WIDTH}}" + "".join(f"{f'Top-{k}':>8}" for k in topk) * len(columns),
    ]
    for row, runs in rows.items():
        cells = ""
        for key in columns:
            retrieval = runs.get(key, {}).get("retrieval")
            for k in topk:
                cells += f"{100 * retrieval[f'top{k}']:8.2f}" if retrieval else f"{'-':>8}"
        lines.append(f"{row:<{LABEL_WIDTH}}" + cells)
    cells = ""
    for key in columns:
        done = [runs[key]["retrieval"] for runs in rows.values() if key in runs]
        for k in topk:
            values = [r[f"top{k}"] for r in done]
            cells += f"{100 * np.mean(values):8.2f}" if values else f"{'-':>8}"
    lines.append(f"{'Mean':<{LABEL_WIDTH}}" + cells)
    return "\n".join(lines)


def context_table(rows: dict, key: str, topk=(1, 5, 10)) -> str:
    """Per mouse: the run's own retrieval next to the linear baseline, noise ceiling and chance."""
    parts = {
        "run": lambda r: r["retrieval"],
        "linear": lambda r: r["linear_baseline"],
        "ceiling": lambda r: r["noise_ceiling"],
        "chance": lambda r: r["chance"],
    }
    labels = {
        "run": "model",
        "linear": "linear ridge",
        "ceiling": "noise ceil.",
        "chance": "chance",
    }
    width = 7 * len(topk)
    lines = [
        "Context (top-1/5/10 %): the same test images decoded linearly, from the other repeat, "
        "by chance",
        f"{'':<{LABEL_WIDTH}}" + "".join(f"{labels[p]:^{width}}" for p in parts),
    ]
    for row, runs in rows.items():
        if key not in runs:
            continue
        cells = ""
        for get in parts.values():
            metrics = get(runs[key])
            cells += "".join(f"{100 * metrics[f'top{k}']:7.1f}" for k in topk)
        lines.append(f"{row:<{LABEL_WIDTH}}" + cells)
    return "\n".join(lines)


def write_figures(rows: dict, models, root: pathlib.Path, figure_format=None) -> list[str]:
    """Fig. A.1 (DINA's similarity matrix per mouse), Fig. A.2 per mouse, the table as bars
    (PNG, or ``figure_format``)."""
    options = {"format": figure_format} if figure_format else {}
    from dina_jax.data import pipeline

    figures = root / "figures"
    paths = []
    maps = {
        row: {m: np.load(root / row / m / "test_maps.npz") for m in models if m in runs}
        for row, runs in rows.items()
    }
    first_model = models[0]
    matrices = {
        f"{row} ({MODEL_LABELS[first_model]})": maps[row][first_model]["similarity"]
        for row in rows
        if first_model in maps[row]
    }
    if matrices:
        paths.append(
            plots.save(
                plots.plot_similarity_matrices(
                    matrices,
                    suptitle="Image-neural similarity matrices on the test set (Fig. A.1)",
                ),
                figures / "figA1_similarity_matrices",
                **options,
            )
        )
    for row in rows:
        if not maps[row]:
            continue
        config = checkpoint.restore(str(root / row / next(iter(maps[row]))), "best")[1]
        dataset = pipeline.load_dataset(config, workdir=str(root / row / next(iter(maps[row]))))
        any_maps = next(iter(maps[row].values()))
        positions = example_rows(len(any_maps["test_rows"]), config.eval.n_example_stimuli)
        images = dataset.images[any_maps["test_rows"][positions]]
        fig = plots.plot_feature_maps(
            images,
            {
                MODEL_LABELS[m]: (
                    maps[row][m]["z_img"][positions],
                    maps[row][m]["z_neu"][positions],
                )
                for m in maps[row]
            },
        )
        paths.append(plots.save(fig, figures / f"figA2_feature_maps_{row}", **options))
    bars = {
        MODEL_LABELS[m]: {
            f"top{k}": [
                100 * runs[m]["retrieval"][f"top{k}"] for runs in rows.values() if m in runs
            ]
            for k in (1, 5, 10)
        }
        for m in models
    }
    bars = {label: v for label, v in bars.items() if v["top1"]}
    if bars:
        fig = plots.plot_retrieval_bars(bars, title="280-way retrieval (Table 1; dots: mice)")
        paths.append(plots.save(fig, figures / "table1_bars", **options))
    return paths


def define_flags() -> None:
    """The command line (defined only when run as a script: absl flags are global)."""
    flags.DEFINE_string("workdir", None, "Root folder: ROOT/<mouse>/<model>/.", required=True)
    flags.DEFINE_bool("synthetic", False, "Use the simulated V1 data.")
    flags.DEFINE_list(
        "mice",
        None,
        "Config names (m1,m2,m3,m4) or, with --synthetic, simulated mice sim0,sim1,... "
        "(default: m1-m4, or sim0,sim1 with --synthetic).",
    )
    flags.DEFINE_list("models", list(MODELS), f"Models to train, from {','.join(MODELS)}.")
    cli.define_config_overrides("Overrides of every run's config.")


def main(argv) -> dict:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    unknown = set(FLAGS.models) - set(MODELS)
    if unknown:
        raise app.UsageError(f"--models: unknown {sorted(unknown)}; choose from {MODELS}")
    root = pathlib.Path(FLAGS.workdir).resolve()
    mice = FLAGS.mice or (["sim0", "sim1"] if FLAGS.synthetic else list(REAL_MICE))
    n_synthetic_mice = 1 + max((int(m.removeprefix("sim")) for m in mice), default=0)
    overrides = cli.config_overrides()
    rows = {}
    for mouse in mice:
        rows[mouse] = {}
        for model in FLAGS.models:
            config = mouse_config(
                mouse,
                synthetic=FLAGS.synthetic,
                n_synthetic_mice=n_synthetic_mice,
                root=root,
                overrides=overrides,
            )
            config.model.name = model
            rows[mouse][model] = run_or_resume(config, root / mouse / model)
    title = (
        "Table 1: image retrieval accuracy (%) from neural-derived representations, "
        f"{next(iter(next(iter(rows.values())).values()))['n_test']}-way"
        + (" (simulated data)" if FLAGS.synthetic else "")
    )
    text = accuracy_table(
        {m.upper(): r for m, r in rows.items()},
        {m: MODEL_LABELS[m] for m in FLAGS.models},
        title=title,
    )
    text += "\n\n" + context_table({m.upper(): r for m, r in rows.items()}, FLAGS.models[0])
    print(text)
    (root / "table1.txt").write_text(text + "\n")
    summary = {
        mouse: {model: runs[model]["retrieval"] for model in runs} for mouse, runs in rows.items()
    }
    (root / "table1.json").write_text(json.dumps(summary, indent=2) + "\n")
    for path in write_figures(rows, list(FLAGS.models), root, overrides.get("figures.format")):
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
