"""Fig. 4c of the paper: DINA's retrieval for natural, whitened and low-dimensional (8D) images.

Trains (or resumes) one DINA run per (condition, mouse), evaluates it and prints top-1/5/10 per
mouse and the mean per condition (the paper: natural 36.8 / 60.5 / 68.8 %, whitened 4.8 / 9.3 /
12.7 %, 8D 32.9 / 70.5 / 86.4 %), writes ``ROOT/stimulus_conditions.json`` and the bar chart
``ROOT/figures/fig4c_stimulus_conditions.png``. Runs whose ``results.json`` exists are reused.

Real data: the natural condition uses configs/m1.py..m4.py, the whitened one every
configs/white_*.py and the 8D one every configs/eight_d_*.py, all reading ``--data-dir``::

  python experiments/stimulus_conditions.py --workdir workdirs/fig4c --data-dir /path/to/stringer

Simulated data on a CPU (configs/synthetic.py with ``data.synthetic.stimset`` natimg2800 / white /
8D; the simulator derives the whitened and 8D sets from the same natural images)::

  python experiments/stimulus_conditions.py --synthetic --workdir workdirs/fig4c_synthetic \\
      --epochs 10
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import table1  # noqa: E402

from dina_jax import plots  # noqa: E402
from dina_jax.config import load_config  # noqa: E402

CONDITIONS = {"natimg2800": "natural", "white": "whitened", "8D": "8D"}
REAL_CONFIG_GLOBS = {"natimg2800": "m[0-9].py", "white": "white_*.py", "8D": "eight_d_*.py"}


def condition_configs(condition: str, args, root: pathlib.Path) -> dict:
    """{mouse label: config} of one stimulus condition."""
    configs = {}
    if args.synthetic:
        for mouse in range(args.n_mice):
            config = load_config("synthetic")
            config.data.synthetic.stimset = condition
            config.data.synthetic.n_mice = args.n_mice
            config.data.synthetic.mouse = mouse
            configs[f"sim{mouse}"] = config
    else:
        paths = sorted((table1.ROOT_DIR / "configs").glob(REAL_CONFIG_GLOBS[condition]))
        if not paths:
            raise SystemExit(f"no config matches configs/{REAL_CONFIG_GLOBS[condition]}")
        configs = {path.stem: load_config(path) for path in paths}
    for config in configs.values():
        config.model.name = args.model
        if args.data_dir:
            config.data.dir = args.data_dir
        config.data.cache_dir = args.cache_dir or str(root / "dina_cache")
        if args.epochs:
            config.train.num_epochs = args.epochs
        table1.apply_overrides(config, args.set)
        if args.synthetic:
            table1.name_synthetic_files(config)
    return configs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="Root folder: ROOT/<condition>/<mouse>/.")
    parser.add_argument("--synthetic", action="store_true", help="Use the simulated V1 data.")
    parser.add_argument(
        "--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS)
    )
    parser.add_argument("--n-mice", type=int, default=1, help="Simulated mice per condition.")
    parser.add_argument("--model", default="dina", choices=table1.MODELS)
    table1.add_run_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    root = pathlib.Path(args.workdir).resolve()
    results = {}
    for condition in args.conditions:
        results[condition] = {
            mouse: table1.run_or_resume(config, root / condition / mouse)
            for mouse, config in condition_configs(condition, args, root).items()
        }
    # One row per (condition, mouse), then the mean of each condition: the Table 1 layout with the
    # conditions as rows.
    rows = {}
    for condition, mice in results.items():
        for mouse, result in mice.items():
            rows[f"{CONDITIONS[condition]}/{mouse}"] = {"run": result}
    text = table1.accuracy_table(
        rows,
        {"run": table1.MODEL_LABELS[args.model]},
        title="Fig. 4c: retrieval accuracy (%) by stimulus condition"
        + (" (simulated data)" if args.synthetic else ""),
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
    path = plots.plot_retrieval_bars(
        bars,
        root / "figures" / "fig4c_stimulus_conditions.png",
        title="Retrieval under different stimulus conditions (Fig. 4c; dots: mice)",
    )
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
