"""Fig. 4c of the paper: DINA's retrieval for natural, whitened and low-dimensional (8D) images.

Trains (or resumes) one DINA run per (condition, mouse), evaluates it and prints top-1/5/10 per
mouse and the mean per condition (the paper: natural 36.8 / 60.5 / 68.8 %, whitened 4.8 / 9.3 /
12.7 %, 8D 32.9 / 70.5 / 86.4 %), writes ``ROOT/stimulus_conditions.json`` and the bar chart
``ROOT/figures/fig4c_stimulus_conditions.png``. Runs whose ``results.json`` exists are reused.

Real data: the natural condition uses configs/m1.py..m4.py, the whitened one every
configs/white_*.py and the 8D one every configs/eight_d_*.py, all reading ``data.dir``::

  python -m experiments.stimulus_conditions --workdir workdirs/fig4c \
      --config.data.dir=/path/to/stringer

Simulated data on a CPU (configs/synthetic.py with ``data.synthetic.stimset`` natimg2800 / white /
8D; the simulator derives the whitened and 8D sets from the same natural images)::

  python -m experiments.stimulus_conditions --synthetic --workdir workdirs/fig4c_synthetic \
      --config.train.num_epochs=10

``--config.<section>.<field>=value`` overrides every run's config, as in ``dina_jax.main`` and
``experiments.table1``. ``python experiments/stimulus_conditions.py`` works too.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import app, flags

from dina_jax import cli, plots
from dina_jax.config import CONFIGS_DIR, apply_overrides, load_config

try:  # python -m experiments.stimulus_conditions
    from experiments import table1
except ImportError:  # python experiments/stimulus_conditions.py: its folder is on sys.path
    import table1

CONDITIONS = {"natimg2800": "natural", "white": "whitened", "8D": "8D"}
REAL_CONFIG_GLOBS = {"natimg2800": "m[0-9].py", "white": "white_*.py", "8D": "eight_d_*.py"}


def condition_configs(
    condition: str,
    root: pathlib.Path,
    *,
    synthetic: bool,
    n_mice: int = 1,
    model: str = "dina",
    overrides: dict | None = None,
) -> dict:
    """{mouse label: config} of one stimulus condition, with the command line's overrides."""
    configs = {}
    if synthetic:
        for mouse in range(n_mice):
            config = load_config("synthetic")
            config.data.synthetic.stimset = condition
            config.data.synthetic.n_mice = n_mice
            config.data.synthetic.mouse = mouse
            configs[f"sim{mouse}"] = config
    else:
        paths = sorted(CONFIGS_DIR.glob(REAL_CONFIG_GLOBS[condition]))
        if not paths:
            raise SystemExit(f"no config matches configs/{REAL_CONFIG_GLOBS[condition]}")
        configs = {path.stem: load_config(path) for path in paths}
    for config in configs.values():
        config.model.name = model
        config.data.cache_dir = str(root / "dina_cache")
        apply_overrides(config, overrides or {})
        if synthetic:
            table1.name_synthetic_files(config)
    return configs


def define_flags() -> None:
    """The command line (defined only when run as a script: absl flags are global)."""
    flags.DEFINE_string("workdir", None, "Root folder: ROOT/<condition>/<mouse>/.", required=True)
    flags.DEFINE_bool("synthetic", False, "Use the simulated V1 data.")
    flags.DEFINE_list("conditions", list(CONDITIONS), f"From {','.join(CONDITIONS)}.")
    flags.DEFINE_integer("n_mice", 1, "Simulated mice per condition.")
    flags.DEFINE_enum("model", "dina", table1.MODELS, "The model of every run.")
    cli.define_config_overrides("Overrides of every run's config.")


def main(argv) -> dict:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    unknown = set(FLAGS.conditions) - set(CONDITIONS)
    if unknown:
        raise app.UsageError(f"--conditions: unknown {sorted(unknown)}; from {list(CONDITIONS)}")
    root = pathlib.Path(FLAGS.workdir).resolve()
    overrides = cli.config_overrides()
    results = {}
    for condition in FLAGS.conditions:
        configs = condition_configs(
            condition,
            root,
            synthetic=FLAGS.synthetic,
            n_mice=FLAGS.n_mice,
            model=FLAGS.model,
            overrides=overrides,
        )
        results[condition] = {
            mouse: table1.run_or_resume(config, root / condition / mouse)
            for mouse, config in configs.items()
        }
    # One row per (condition, mouse), then the mean of each condition: the Table 1 layout with the
    # conditions as rows.
    rows = {}
    for condition, mice in results.items():
        for mouse, result in mice.items():
            rows[f"{CONDITIONS[condition]}/{mouse}"] = {"run": result}
    text = table1.accuracy_table(
        rows,
        {"run": table1.MODEL_LABELS[FLAGS.model]},
        title="Fig. 4c: retrieval accuracy (%) by stimulus condition"
        + (" (simulated data)" if FLAGS.synthetic else ""),
    ).rsplit("\n", 1)[0]  # The overall mean mixes conditions: per-condition means follow.
    lines = [text]
    for condition, mice in results.items():
        means = [
            100 * np.mean([r["retrieval"][f"top{k}"] for r in mice.values()]) for k in (1, 5, 10)
        ]
        label = f"mean {CONDITIONS[condition]}"
        lines.append(f"{label:<{table1.LABEL_WIDTH}}" + "".join(f"{m:8.2f}" for m in means))
    text = "\n".join(lines)
    print(text)
    (root / "stimulus_conditions.txt").write_text(text + "\n")
    summary = {c: {m: r["retrieval"] for m, r in mice.items()} for c, mice in results.items()}
    (root / "stimulus_conditions.json").write_text(json.dumps(summary, indent=2) + "\n")
    bars = {
        CONDITIONS[c]: {
            f"top{k}": [100 * r["retrieval"][f"top{k}"] for r in mice.values()] for k in (1, 5, 10)
        }
        for c, mice in results.items()
    }
    fig = plots.plot_retrieval_bars(
        bars, title="Retrieval under different stimulus conditions (Fig. 4c; dots: mice)"
    )
    fmt = overrides.get("figures.format")
    path = plots.save(
        fig, root / "figures" / "fig4c_stimulus_conditions", **({"format": fmt} if fmt else {})
    )
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
