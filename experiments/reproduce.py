"""One command for the paper's numbers: train, evaluate and analyse every mouse, then report.

For every mouse this trains (or resumes, or reuses) DINA and the two Table 1 baselines on natural
images, DINA on the whitened and 8D images, evaluates each run and analyses DINA's natural-image
runs (Fig. 5-6), then writes, into ``--root``:

  report.md, report.json   each number of the paper beside this run's (Table 1 means for DINA and
                           both baselines; whitened and 8D; the range of paired-map SSIM, and of
                           LPIPS when weights are given; blobs per image and blob size; the STI
                           distribution; the fraction of neurons for SSIM >= 0.9; the attention's
                           log-normal fit; what the attention contributes; the semantic category
                           check), means with SEM over mice, and every per-mouse value;
  figures/                 the four-mouse panels (Fig. 5a, 5e, 5f, 5h, 6a, 6b) and the class
                           confusion of the retrievals (semantic_confusion.png);
  timings.json             seconds per run (training + evaluation, analysis).

Runs live in ``ROOT/<condition>/<mouse>/<model>/``. A run whose ``results.json`` exists is reused
(not trained again), an interrupted one resumes from its checkpoint, and the analyses resume
stage by stage, so the command can be stopped and restarted at any point. ``--report`` only
aggregates the runs finished so far.

Real data (all recordings, the images files and ``stimuli_class_assignment_confident.mat`` in one
folder; README.md "Data"): the paper's configs, ``m1``..``m4`` (natural; DINA, VGG-16-MLP,
ViT-MLP), ``white_*`` and ``eight_d_*`` (DINA)::

  python experiments/reproduce.py --root workdirs/reproduce --data-dir /path/to/stringer \\
      [--lpips_weights /path/to/lpips_alexnet.npz]

Simulated mice (``--synthetic N``: N mice of the simulated V1, each with its own neurons, shown
the same simulated images, generated once into ROOT/dina_cache; the whitened and 8D sets for the
first two). The demo config (configs/synthetic.py) or ``--config``, with its overrides; the
baselines take the CPU sizes of experiments/table1.py. Reduced sizes for a CPU::

  python experiments/reproduce.py --root workdirs/reproduce_sim --synthetic 3 --epochs 2 \\
      --config configs/synthetic.py --config.analysis.n_images=8 \\
      --config.analysis.occlusion.stride=8

Time of that command (13 runs, 3 analyses), estimated from its first runs on a shared 2-core
machine (load 7-9, so counted in CPU seconds): the first DINA run, including simulating the three
mice, 213 CPU-s (2 epochs and the evaluation); its analyses 41 CPU-s; a VGG-16-MLP run 147 CPU-s.
All of it adds up to ~2,100 CPU-s, i.e. roughly 20-35 min of wall time on two free cores (the
timings of every run are in ROOT/timings.json and report.md). The paper-size analyses (280
stimuli, stride 2) take hours per mouse on a CPU.

With real data ``--config FILE --config.a.b=v`` applies the overrides to every mouse's config
(the file itself only checks the override names). ``--help`` lists every flag.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

CONDITIONS = ("natural", "whitened", "8D")
MODELS = ("dina", "vgg16_mlp", "vit_mlp")
# The simulator's stimulus set of each condition.
STIMSETS = {"natural": "natimg2800", "whitened": "white", "8D": "8D"}
# The paper's configs of each condition (configs/<name>.py).
REAL_CONFIGS = {"natural": r"m\d+", "whitened": r"white_.+", "8D": r"eight_d_.+"}
# Mice of the whitened and 8D conditions: two, as in the paper (Sec. 4.1).
CONTROL_MICE = 2
# As experiments/table1.py's CPU_BASELINE: the baselines keep their architecture with these
# widths on simulated data (~0.5 GFLOP per image each, the cost of the demo's DINA).
CPU_BASELINE = {
    "model.vgg16.widths": (8, 16, 32, 64, 64),
    "model.vit.dim": 32,
    "model.vit.depth": 2,
    "model.vit.num_heads": 2,
    "model.readout.mlp_hidden": 256,
}
USAGE_ERROR = 2
# Written into a run's workdir after its analyses: the analysis settings they were made with.
ANALYSIS_MARKER = "reproduce_analysis_settings.json"


@dataclasses.dataclass
class Run:
    """One (condition, mouse, model) training run and what is done with it."""

    condition: str
    mouse: str
    model: str
    config: object
    workdir: pathlib.Path
    analyse: bool  # The Fig. 5-6 analyses: DINA on natural images.

    @property
    def name(self) -> str:
        return f"{self.condition}/{self.mouse}/{self.model}"


@dataclasses.dataclass
class Options:
    """What to reproduce (the command line's flags, or a test's arguments)."""

    root: pathlib.Path
    synthetic: int = 0  # Simulated mice; 0: the real recordings of data_dir.
    data_dir: str = ""
    base_config: object = None  # --config: the synthetic runs' config (None: configs/synthetic.py)
    overrides: dict = dataclasses.field(default_factory=dict)  # Applied to every real config.
    epochs: int = 0  # 0: the config's budget.
    models: tuple = MODELS
    conditions: tuple = CONDITIONS
    lpips_weights: str = ""
    classes: str = ""  # Class-assignment file; "" the one beside the images.
    cpu_baselines: bool = True  # Simulated data: CPU-sized baselines.
    report_only: bool = False


# ----------------------------------------------------------------------------- planning


def _mouse_configs(options: Options, condition: str) -> dict:
    """{mouse: config} of one condition, before the model is set."""
    from dina_jax.config import apply_overrides, available_configs, load_config

    if options.synthetic:
        base = options.base_config
        if base is None:
            base = load_config("synthetic")
        if base.data.source != "synthetic":
            raise ValueError(
                "--synthetic needs a config with data.source='synthetic' (configs/synthetic.py)"
            )
        n_mice = (
            options.synthetic if condition == "natural" else min(CONTROL_MICE, options.synthetic)
        )
        configs = {}
        for mouse in range(n_mice):
            config = base.copy_and_resolve_references()
            config.data.synthetic.stimset = STIMSETS[condition]
            config.data.synthetic.n_mice = n_mice
            config.data.synthetic.mouse = mouse
            configs[f"sim{mouse}"] = config
        return configs
    names = [n for n in available_configs() if re.fullmatch(REAL_CONFIGS[condition], n)]
    configs = {}
    for name in names:
        config = load_config(name)
        apply_overrides(config, options.overrides)
        config.data.dir = options.data_dir
        configs[name] = config
    return configs


def plan_runs(options: Options) -> list[Run]:
    """Every run of the reproduction, in the order they are done (natural images first)."""
    from dina_jax.config import apply_overrides

    runs = []
    for condition in options.conditions:
        models = options.models if condition == "natural" else ("dina",)
        for mouse, mouse_config in _mouse_configs(options, condition).items():
            for model in models:
                if model not in options.models:
                    continue
                config = mouse_config.copy_and_resolve_references()
                config.model.name = model
                if not config.data.cache_dir:  # One cache: data simulated or parsed once.
                    config.data.cache_dir = str(options.root / "dina_cache")
                if options.epochs:
                    config.train.num_epochs = options.epochs
                if options.lpips_weights:
                    config.eval.lpips_weights = options.lpips_weights
                if options.synthetic and options.cpu_baselines and model != "dina":
                    apply_overrides(config, CPU_BASELINE)
                runs.append(
                    Run(
                        condition=condition,
                        mouse=mouse,
                        model=model,
                        config=config,
                        workdir=options.root / condition / mouse / model,
                        analyse=condition == "natural" and model == "dina",
                    )
                )
    return runs


# ----------------------------------------------------------------------------- running


def _write_config(config, workdir: pathlib.Path) -> None:
    """``workdir/config.json`` as ``python -m dina_jax.main`` writes it (the first time)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    if not path.exists():
        tmp = workdir / "config.json.tmp"
        tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


def _needs_lpips(run: Run) -> bool:
    """A reused run evaluated without LPIPS weights while weights are now given."""
    if not run.config.eval.lpips_weights:
        return False
    results = json.loads((run.workdir / "results.json").read_text())
    return results.get("lpips", {}).get("status") != "computed"


def execute(run: Run) -> dict:
    """Trains and evaluates ``run`` unless its results exist, then analyses it if asked.

    Returns its timing: ``train_s`` (training + evaluation, this call), ``analyze_s`` (wall
    seconds), ``train_cpu_s``, ``analyze_cpu_s`` (CPU seconds of the process, all threads: the
    cost on a shared machine), ``reused`` (results.json existed) and, for an analysed run,
    ``analysis_reused`` (a reused run analysed before with the same ``config.analysis``).
    """
    from dina_jax.analysis.run import analyze
    from dina_jax.evaluation import evaluate
    from dina_jax.training import train_and_evaluate

    timing: dict = {"reused": (run.workdir / "results.json").exists()}
    start, cpu = time.perf_counter(), time.process_time()
    if not timing["reused"]:
        print(f"=== {run.name}: training", flush=True)
        _write_config(run.config, run.workdir)
        train_and_evaluate(run.config, str(run.workdir))
        if not (run.workdir / "results.json").exists():  # train.evaluate_at_end was off.
            evaluate(run.config, str(run.workdir))
        timing["train_s"] = time.perf_counter() - start
        timing["train_cpu_s"] = time.process_time() - cpu
    elif _needs_lpips(run):
        print(f"=== {run.name}: evaluating again for LPIPS", flush=True)
        evaluate(run.config, str(run.workdir))
    if run.analyse:
        # The analyses of a reused run with the same settings are reused too; otherwise analyze
        # resumes stage by stage (finished stages with the same settings are skipped).
        marker = run.workdir / ANALYSIS_MARKER
        settings = run.config.analysis.to_json_best_effort(sort_keys=True)
        finished = (run.workdir / "analysis.json").exists() and marker.exists()
        if timing["reused"] and finished and marker.read_text() == settings:
            timing["analysis_reused"] = True
        else:
            print(f"=== {run.name}: analyses", flush=True)
            timing["analysis_reused"] = False
            start, cpu = time.perf_counter(), time.process_time()
            analyze(run.config, str(run.workdir))
            timing["analyze_s"] = time.perf_counter() - start
            timing["analyze_cpu_s"] = time.process_time() - cpu
            marker.write_text(settings)
    return timing


def class_assignment(options: Options, runs: list[Run]):
    """(ClassAssignment or None, status line) of the natural images' semantic classes.

    ``--classes``, else the release's file beside the images (real data) or the simulator's
    (written into the simulated dataset's folder if it predates the class file). A missing real
    file is reported, not an error; a damaged one raises DataError.
    """
    from dina_jax.data import pipeline, stringer, synthetic

    natural = [r for r in runs if r.condition == "natural"]
    if not natural:
        return None, "No natural-image runs: semantic check not done."
    config = natural[0].config
    if options.classes:
        path = options.classes
    elif options.synthetic:
        folder = pipeline.ensure_synthetic(config, str(natural[0].workdir))
        syn = config.data.synthetic
        path = synthetic.ensure_class_assignment(folder, syn.n_images, syn.seed)
    else:
        path = os.path.join(os.path.expanduser(config.data.dir), stringer.CLASS_ASSIGNMENT_FILE)
        if not os.path.exists(path):
            return None, (
                f"Semantic check not done: {path} not found (the release's "
                f"{stringer.CLASS_ASSIGNMENT_FILE}; or pass --classes)."
            )
    classes = stringer.load_class_assignment(path)
    status = f"Classes: {path} ({len(classes.names)} classes"
    status += ", each image's source photograph)." if options.synthetic else ")."
    return classes, status


def check_data(runs: list[Run]) -> None:
    """Raises DataError naming the first missing recording or images file of any run, before
    hours of training on the others (leave a condition out with --conditions)."""
    from dina_jax.data import pipeline

    for run in runs:
        pipeline.data_paths(run.config)


def _load_timings(root: pathlib.Path) -> dict:
    path = root / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_timings(root: pathlib.Path, timings: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "timings.json.tmp"
    tmp.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, root / "timings.json")


def reproduce(options: Options) -> dict:
    """Plans, runs (unless ``report_only``) and reports; returns the report dict."""
    from dina_jax.evaluation import report as report_lib

    root = options.root = pathlib.Path(options.root).resolve()
    runs = plan_runs(options)
    timings = _load_timings(root)
    wall = time.perf_counter()
    if not options.report_only and not options.synthetic:
        check_data(runs)
    if not options.report_only:
        print(f"{len(runs)} runs: {', '.join(r.name for r in runs)}", flush=True)
        for run in runs:
            timing = execute(run)
            previous = timings.get(run.name, {})
            timings[run.name] = {**previous, **timing}
            _save_timings(root, timings)
    done = [r for r in runs if (r.workdir / "results.json").exists()]
    classes, semantic_status = class_assignment(options, runs)
    records = [
        report_lib.collect(
            dict(mouse=r.mouse, condition=r.condition, model=r.model, workdir=r.workdir),
            classes if r.condition == "natural" else None,
        )
        for r in done
    ]
    aggregate = report_lib.aggregate(records)
    figures = report_lib.write_figures(records, aggregate, root / "figures")
    first = runs[0].config if runs else None
    meta = {
        "data": (
            f"{options.synthetic} simulated mice ({first.data.synthetic.n_neurons} neurons, "
            f"{first.data.synthetic.n_images} images each)"
            if options.synthetic and first is not None
            else f"real recordings in {options.data_dir}"
        ),
        "epochs": options.epochs or (first.train.num_epochs if first is not None else None),
        "runs finished": f"{len(done)} of {len(runs)}",
        "analysed stimuli per mouse": first.analysis.n_images if first is not None else None,
        "occlusion stride (px)": first.analysis.occlusion.stride if first is not None else None,
        "wall time of this call (s)": round(time.perf_counter() - wall, 1),
        "total run time recorded (s)": round(
            sum(t.get("train_s", 0) + t.get("analyze_s", 0) for t in timings.values()), 1
        ),
        "root": str(root),
    }
    report = {
        "meta": meta,
        "paper": report_lib.PAPER,
        "aggregate": aggregate,
        "runs": [{k: v for k, v in r.items() if k != "panels"} for r in records],
        "figures": [os.path.relpath(p, root) for p in figures],
        "timings": {name: timings[name] for name in (r.name for r in runs) if name in timings},
        "semantic_status": semantic_status,
    }
    report_lib.write_json(root / "report.json", report)
    (root / "report.md").write_text(report_lib.to_markdown(report))
    print(f"wrote {root / 'report.md'} and report.json ({len(figures)} figures)", flush=True)
    return report


# ----------------------------------------------------------------------------- command line


def define_flags(flag_values=None) -> dict:
    """Defines the command line's flags on ``flag_values`` (default absl's global FLAGS).

    Only the script defines them (``__main__``): tests import this module beside dina_jax.main,
    whose --config flag would collide; they pass a fresh ``flags.FlagValues()``.
    """
    fv = flags.FLAGS if flag_values is None else flag_values
    holders = dict(
        config=config_flags.DEFINE_config_file(
            "config",
            None,
            "Config of the simulated runs (default configs/synthetic.py); with real data only its "
            "--config.a.b=v overrides are used, on every mouse's paper config.",
            flag_values=fv,
        ),
        root=flags.DEFINE_string(
            "root", "workdirs/reproduce", "Folder of the runs and the report.", flag_values=fv
        ),
        data_dir=flags.DEFINE_string(
            "data_dir", "", "Folder of the real recordings (README 'Data').", flag_values=fv
        ),
        synthetic=flags.DEFINE_integer(
            "synthetic",
            0,
            "Simulate this many mice instead of real data.",
            lower_bound=0,
            flag_values=fv,
        ),  # fmt: skip
        epochs=flags.DEFINE_integer(
            "epochs",
            0,
            "Override train.num_epochs (0: the config's).",
            lower_bound=0,
            flag_values=fv,
        ),  # fmt: skip
        models=flags.DEFINE_multi_enum(
            "models", list(MODELS), MODELS, "Models on natural images (repeatable).", flag_values=fv
        ),
        conditions=flags.DEFINE_multi_enum(
            "conditions", list(CONDITIONS), CONDITIONS, "Stimulus conditions.", flag_values=fv
        ),
        lpips_weights=flags.DEFINE_string(
            "lpips_weights", "", "Local LPIPS weights (.npz) for the map LPIPS.", flag_values=fv
        ),
        classes=flags.DEFINE_string(
            "classes",
            "",
            "Class-assignment file (default: stimuli_class_assignment_confident.mat beside the "
            "images).",
            flag_values=fv,
        ),
        cpu_baselines=flags.DEFINE_bool(
            "cpu_baselines", True, "Simulated data: CPU-sized baselines.", flag_values=fv
        ),
        report=flags.DEFINE_bool(
            "report", False, "Only aggregate the finished runs; train nothing.", flag_values=fv
        ),
    )
    flags.DEFINE_alias("data-dir", "data_dir", flag_values=fv)
    return holders


def options_from_flags(holders: dict, flag_values=None) -> Options:
    """The Options of parsed flags; ValueError for a contradictory command line."""
    fv = flags.FLAGS if flag_values is None else flag_values
    synthetic, data_dir = holders["synthetic"].value, holders["data_dir"].value
    if bool(synthetic) == bool(data_dir):
        raise ValueError("give either --data_dir (real recordings) or --synthetic N")
    config, overrides = None, {}
    if fv["config"].value is not None:  # --config FILE [--config.a.b=v ...]
        config = holders["config"].value
        try:
            config.seed  # noqa: B018 - a config file that failed to load raises on first access
        except Exception as error:  # noqa: BLE001 - any problem loading the file is a usage error
            reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
            raise ValueError(
                f"cannot load config {fv['config'].config_filename}: {reason}"
            ) from None
        overrides = dict(fv["config"].override_values)
    return Options(
        root=pathlib.Path(holders["root"].value),
        synthetic=synthetic,
        data_dir=data_dir,
        base_config=config if synthetic else None,
        overrides=overrides,
        epochs=holders["epochs"].value,
        models=tuple(holders["models"].value),
        conditions=tuple(holders["conditions"].value),
        lpips_weights=holders["lpips_weights"].value,
        classes=holders["classes"].value,
        cpu_baselines=holders["cpu_baselines"].value,
        report_only=holders["report"].value,
    )


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses the flags; a bad flag or config override is a one-line error (exit 2)."""
    try:
        return flags.FLAGS(argv)
    except SystemExit as done:  # absl exits 1 after printing --help: asked for, so a success.
        help_flags = {"--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"}
        sys.exit(0 if help_flags & set(argv[1:]) else done.code)
    except flags.Error as error:
        _fail(str(error).splitlines()[0])
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        bad = " ".join(a for a in argv[1:] if a.startswith("--config."))
        # ml_collections nests a KeyError's repr in an AttributeError: unescape it to one line.
        detail = " ".join(str(error).replace("\\n", " ").replace("\\'", "'").split())
        _fail(f"bad config override {bad}: {detail.strip(chr(34) + chr(39))}")
    return []


def enable_compilation_cache(runs: list[Run]) -> None:
    """XLA's persistent cache beside the data cache, as ``python -m dina_jax.main`` does."""
    import jax

    from dina_jax.data import pipeline

    if runs and runs[0].config.compilation_cache == "auto":
        folder = os.path.join(pipeline.cache_folder(runs[0].config), "xla")
        jax.config.update("jax_compilation_cache_dir", folder)


def main(argv, holders: dict | None = None) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO
    from dina_jax.checkpoint import CheckpointError
    from dina_jax.data.stringer import DataError

    try:
        options = options_from_flags(holders or _HOLDERS)
    except (ValueError, KeyError, AttributeError) as error:
        _fail(str(error).strip("\"'"))
    try:
        options.root = pathlib.Path(options.root).resolve()
        enable_compilation_cache(plan_runs(options))
        reproduce(options)
    except (DataError, CheckpointError) as error:
        _fail(str(error))
    except FileNotFoundError as error:
        _fail(f"{error.filename}: {error.strerror}")


_HOLDERS: dict = {}

if __name__ == "__main__":
    _HOLDERS = define_flags()
    app.run(main, flags_parser=_parse_flags)
