"""What each addition to the paper's model buys, and the literal model against the demo (issue 13).

Runs a plan of (variant, simulated mouse, seed) trainings from ``configs/synthetic.py``, one
workdir each, and keeps one small JSON summary per finished run in ``--results`` (committed with
the code, so a later session resumes the sweep even on a fresh machine: a run whose summary
exists is skipped). An interrupted run resumes from its checkpoint where its workdir survives;
on a fresh machine it starts again, so a run must finish within one sitting (a 96-epoch run
pinned to one core takes ~1 h 50 min, one of 128 epochs on both cores ~2 h). ``--report``
aggregates the summaries (mean and sd over seeds per variant and mouse) into ``ablations.json``
beside them and prints the table for docs/decisions.md.

Variants (``VARIANTS``; each sets the recipe's toggles explicitly, so that a summary keeps its
meaning whatever configs/synthetic.py holds):

  demo             the demo's recipe (Eq. 7 without a skip, EMA, halves, weight decay on the
                   weight matrices only) at 24 epochs, the demo until 2026-12-06;
                   demo_skip / demo_no_ema / demo_no_weight_decay / demo_no_halves change one
                   addition; demo_e8/16/64/72/96/128 other budgets
  demo_e96         configs/synthetic.py: the same recipe at 96 epochs; demo_e96_skip / _no_ema /
                   _no_weight_decay / _no_halves change one addition (demo_e48_*: the same at
                   48 epochs, the demo from 2026-12-06 to 2026-12-07)
  skip             the previous demo: a skip around the attention, EMA, weight decay on every
                   neural leaf, halves, 8 epochs; skip_no_* switch one addition off
  literal          the paper's model (no skip, no EMA, no neural weight decay, stimulus means)
                   with the demo's rates, 8 epochs; literal_* vary what the paper leaves open
                   (rates, d_model, initialization scales, budget)

Mice (``MICE``): ``A`` (simulator seed 0, 80% complex cells, the demo's), ``B``-``G``
(simulator seeds 1-3, 50% and 80% complex cells).

Each summary holds the test retrieval (top-1/5/10, mean rank) beside ridge and the noise ceiling,
the best validation loss and epoch, the learning curve (validation loss and top-1 per epoch), the
spread of the attention (sd of ln P, relative entropy) and what it contributes (retrieval with the
attention uniform or removed).

  python experiments/ablations.py --root workdirs/ablations            # the whole plan, resumable
  python experiments/ablations.py --root workdirs/ablations --only literal --only demo
  python experiments/ablations.py --root workdirs/ablations --plan explore   # the recipe search
  python experiments/ablations.py --root workdirs/ablations --shard 1/2   # every 2nd run from 1
  python experiments/ablations.py --report                             # aggregate the summaries
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from dina_jax.config import apply_overrides

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "ablations"

# Every variant sets these toggles explicitly, so that a summary means the same whatever
# configs/synthetic.py holds. SKIP is the demo until issue 13: the skip around the attention,
# the parameter EMA, a weight decay on every neural leaf, the repeat halves, 8 epochs; all with
# DS-Net's image block (the demo's; the runs before model.image.block existed had it).
SKIP = {
    "model.image.block": "dsnet",
    "model.neural.residual": True,
    "train.ema_decay": 0.99,
    "optim.neural.weight_decay": 3.0,
    "optim.neural.weight_decay_on": "all",
    "train.responses": "halves",
    "train.neuron_dropout": 0.0,
    "train.num_epochs": 8,
    "train.patience": 3,
}
# The paper's model: Eq. 7 as printed, no EMA, no neural weight decay, stimulus means.
LITERAL = {
    **SKIP,
    "model.neural.residual": False,
    "train.ema_decay": 0.0,
    "optim.neural.weight_decay": 0.0,
    "train.responses": "mean",
}
# The demo's recipe: Eq. 7 as printed, so every neuron reaches the readout through the
# attention, with the EMA, the halves and a weight decay that spares the per-neuron embeddings
# (whose size scales the attention logits quadratically); 24 epochs, the demo until 2026-12-06.
DEMO = {
    **SKIP,
    "model.neural.residual": False,
    "optim.neural.weight_decay_on": "kernels",
    "train.num_epochs": 24,
    "train.patience": 6,
}
EIGHT_EPOCHS = {"train.num_epochs": 8, "train.patience": 3}
# The demo from 2026-12-06 to 2026-12-07: the recipe trained twice as long; at 24
# epochs it stops at the validation loss this schedule reaches by epoch 13 (mouse A, seed 0:
# 42.5% top-1 against 68.6% at 48 epochs).
DEMO_E48 = {**DEMO, "train.num_epochs": 48, "train.patience": 12}
# The demo (configs/synthetic.py since 2026-12-07): the smallest budget within a few points of
# the plateau (mouse A, seed 0, test top-1 by budget 48 / 64 / 72 / 96 / 128 epochs: 68.6 /
# 72.1 / 73.2 / 78.9 / 82.5%, with the same mean rank at 96 and 128).
DEMO_E96 = {**DEMO, "train.num_epochs": 96, "train.patience": 24}
# Each addition of the demo's recipe changed on its own: suffix -> overrides.
ADDITIONS = {
    "skip": {"model.neural.residual": True},
    "no_ema": {"train.ema_decay": 0.0},
    "no_weight_decay": {"optim.neural.weight_decay": 0.0},
    "no_halves": {"train.responses": "mean"},
}
# How a variant's description continues after its recipe's ("demo recipe 48 ep." + this).
ADDITION_DESCRIPTIONS = {
    "skip": " + skip",
    "no_ema": ", no EMA",
    "no_weight_decay": ", no neural weight decay",
    "no_halves": ", stimulus means",
}


def one_addition_changed(name: str, recipe: dict) -> dict:
    """``{name}_{addition}`` variants: ``recipe`` with one of its additions changed each."""
    return {f"{name}_{suffix}": {**recipe, **change} for suffix, change in ADDITIONS.items()}


VARIANTS = {
    "demo": DEMO,
    **one_addition_changed("demo", DEMO),
    # Budget: the learning curve to convergence, and shorter budgets (the schedule follows it).
    "demo_e48": DEMO_E48,
    **one_addition_changed("demo_e48", DEMO_E48),
    "demo_e16": {**DEMO, "train.num_epochs": 16, "train.patience": 4},
    # The 48-epoch curve was still falling when its cosine schedule ended (validation loss 0.38
    # at epoch 41): twice that, to see where the plateau is.
    "demo_e96": DEMO_E96,
    **one_addition_changed("demo_e96", DEMO_E96),
    # Seed 0 reached 78.9% top-1 at 96 epochs against 68.6% at 48, its validation top-1 flat
    # from epoch ~85: the budgets between, for the smallest within a few points of the plateau.
    "demo_e64": {**DEMO, "train.num_epochs": 64, "train.patience": 16},
    "demo_e72": {**DEMO, "train.num_epochs": 72, "train.patience": 18},
    # 64 and 72 epochs stopped 6.8 and 5.7 points of top-1 below 96 (seed 0), and 48 -> 64 ->
    # 72 -> 96 kept gaining (68.6, 72.1, 73.2, 78.9%): is 96 the plateau?
    "demo_e128": {**DEMO, "train.num_epochs": 128, "train.patience": 32},
    "demo_e8": {**DEMO, **EIGHT_EPOCHS},
    "demo_e8_d32": {**DEMO, **EIGHT_EPOCHS, "model.neural.d_model": 32},
    # W_Q, W_K at a tenth of LeCun's scale: the attention starts near uniform.
    "demo_e8_qk01": {**DEMO, **EIGHT_EPOCHS, "model.neural.qk_init_scale": 0.1},
    # Spare W_Q, W_K from the weight decay (it shrinks the logits towards a uniform
    # attention): faster early, then it memorizes (training loss 0.24 against validation 2.99
    # by epoch 6); the decay on W_Q, W_K is the regularizer that works.
    "demo_e8_readout": {**DEMO, **EIGHT_EPOCHS, "optim.neural.weight_decay_on": "readout"},
    # InfoNCE on batch-centred neural maps (loss.centre_neural): the demo's neural maps share
    # one pattern that makes hub images (seed 1: one image is the top-1 of 73% of the queries).
    "demo_centre": {**DEMO, "loss.centre_neural": True},
    # Against the seed-to-seed spread (seed 1 overfits: val loss plateaus at 2.0): a stronger
    # weight decay on the matrices, or neuron dropout on the training responses.
    "demo_wd10": {**DEMO, "optim.neural.weight_decay": 10.0},
    "demo_neuron_dropout": {**DEMO, "train.neuron_dropout": 0.2},
    # The previous demo and each of its additions off.
    "skip": SKIP,
    "skip_no_residual": {**SKIP, "model.neural.residual": False},
    "skip_no_ema": {**SKIP, "train.ema_decay": 0.0},
    "skip_no_weight_decay": {**SKIP, "optim.neural.weight_decay": 0.0},
    "skip_no_halves": {**SKIP, "train.responses": "mean"},
    "skip_decay_kernels": {**SKIP, "optim.neural.weight_decay_on": "kernels"},
    "skip_e24": {**SKIP, "train.num_epochs": 24, "train.patience": 6},
    # The literal model, and the settings the paper leaves open.
    "literal": LITERAL,
    "literal_lr3e4": {**LITERAL, "optim.neural.learning_rate": 3e-4},
    "literal_lr1e4": {**LITERAL, "optim.neural.learning_rate": 1e-4},
    "literal_d32": {**LITERAL, "model.neural.d_model": 32},
    "literal_qk01": {**LITERAL, "model.neural.qk_init_scale": 0.1},
    "literal_emb03": {**LITERAL, "model.neural.embedding_init_std": 0.3},
    "literal_e24": {**LITERAL, "train.num_epochs": 24, "train.patience": 6},
    # The image tower's block as Eq. 1-3 print it (model.image.block, the paper configs'
    # default since 2026-12-06; every other variant here keeps the demo's DS-Net block): the
    # literal model in full, and the demo with the paper's block.
    "literal_paper_block": {**LITERAL, "model.image.block": "paper"},
    "demo_paper_block": {**DEMO, "model.image.block": "paper"},
    # The real-data configs' schedule until 2026-12-07 (AdamW 1e-4, RMSprop 1e-5, 2 warmup
    # epochs) in the steps of their 100 epochs: does the literal model as they trained it decode?
    "literal_base_rates": {
        **LITERAL,
        "optim.image.learning_rate": 1e-4,
        "optim.image.warmup_epochs": 2.0,
        "optim.neural.learning_rate": 1e-5,
        "optim.neural.warmup_epochs": 2.0,
        "train.num_epochs": 24,
        "train.patience": 15,
    },
    "literal_b128": {
        **LITERAL,
        "train.batch_size": 128,
        "train.num_epochs": 24,
        "train.patience": 15,
    },
    # The real configs' model in full (the image block of Eq. 1-3, batch 128, the base config's
    # patience) with the demo's schedule (AdamW 2e-3, RMSprop 1e-3, half an epoch of warmup):
    # the real configs' rates since 2026-12-07 (the former ones stay at chance, above).
    "literal_paper_b128": {
        **LITERAL,
        "model.image.block": "paper",
        "train.batch_size": 128,
        "train.num_epochs": 24,
        "train.patience": 15,
    },
}
# Simulated mice: A is the demo's simulator (seed 0, 80% complex cells); the others differ in
# simulator seed and in cell mix (50% or 80% complex cells).
MICE = {
    "A": {"data.synthetic.seed": 0, "data.synthetic.frac_complex": 0.8},
    "B": {"data.synthetic.seed": 1, "data.synthetic.frac_complex": 0.5},
    "C": {"data.synthetic.seed": 1, "data.synthetic.frac_complex": 0.8},
    "D": {"data.synthetic.seed": 2, "data.synthetic.frac_complex": 0.5},
    "E": {"data.synthetic.seed": 2, "data.synthetic.frac_complex": 0.8},
    "F": {"data.synthetic.seed": 3, "data.synthetic.frac_complex": 0.5},
    "G": {"data.synthetic.seed": 3, "data.synthetic.frac_complex": 0.8},
}
# What each variant is, for the generated table in docs/decisions.md (--report).
DESCRIPTIONS = {
    "demo": "demo recipe (Eq. 7, EMA, halves, decay on kernels), 24 epochs",
    "demo_skip": "demo + skip around the attention",
    "demo_no_ema": "demo, no EMA",
    "demo_no_weight_decay": "demo, no neural weight decay",
    "demo_no_halves": "demo, stimulus means",
    "demo_e48": "demo recipe, 48 epochs (the demo 2026-12-06 to 12-07)",
    "demo_e96": "**demo** (configs/synthetic.py): demo recipe, 96 epochs",
    **{
        f"demo_e{epochs}_{suffix}": f"demo recipe {epochs} ep.{text}"
        for epochs in (48, 96)
        for suffix, text in ADDITION_DESCRIPTIONS.items()
    },
    "demo_e16": "demo recipe, 16 epochs",
    "demo_e64": "demo recipe, 64 epochs",
    "demo_e72": "demo recipe, 72 epochs",
    "demo_e128": "demo recipe, 128 epochs",
    "demo_e8": "demo recipe, 8 epochs",
    "demo_e8_d32": "demo recipe 8 ep., d_model 32",
    "demo_e8_qk01": "demo recipe 8 ep., W_Q/W_K init x 0.1",
    "demo_e8_readout": "demo recipe 8 ep., no decay on W_Q/W_K",
    "demo_centre": "demo, batch-centred neural maps",
    "demo_wd10": "demo, weight decay 10",
    "demo_neuron_dropout": "demo, neuron dropout 0.2",
    "demo_paper_block": "demo, the paper's image block",
    "skip": "skip (previous demo: skip, EMA, halves, decay on all)",
    "skip_no_residual": "skip, no skip",
    "skip_no_ema": "skip, no EMA",
    "skip_no_weight_decay": "skip, no neural weight decay",
    "skip_no_halves": "skip, stimulus means",
    "skip_decay_kernels": "skip, decay on kernels only",
    "skip_e24": "skip, 24 epochs",
    "literal": "literal (Eq. 7, no EMA/decay, means)",
    "literal_lr3e4": "literal, RMSprop 3e-4",
    "literal_lr1e4": "literal, RMSprop 1e-4",
    "literal_d32": "literal, d_model 32",
    "literal_qk01": "literal, W_Q/W_K init x 0.1",
    "literal_emb03": "literal, embeddings init sd 0.3",
    "literal_e24": "literal, 24 epochs",
    "literal_paper_block": "literal with the paper's image block",
    "literal_base_rates": "literal, DESIGN.md's starting rates",
    "literal_b128": "literal, batch 128",
    "literal_paper_b128": "literal with the paper's image block, batch 128",
}
TABLE_BEGIN = "<!-- ablations table: generated by experiments/ablations.py --report -->"
TABLE_END = "<!-- end of the generated ablations table -->"
# The demo against ridge across the simulated mice (issue 13, item 4): a second generated block.
MICE_BEGIN = "<!-- mice table: generated by experiments/ablations.py --report -->"
MICE_END = "<!-- end of the generated mice table -->"
# The demo budgets measured across the mice, the shipped demo first: one table each.
MICE_VARIANTS = ("demo_e96", "demo_e48")
DECISIONS = RESULTS.parents[2] / "docs" / "decisions.md"


# The main plan, in order of priority (finished runs stay listed: --shard counts positions in
# the whole list, so that a run always belongs to the same shard).
PLAN = (
    ("demo", "A", (0, 1, 2)),
    ("literal", "A", (0, 1, 2)),  # minutes each (early stopping): before the demo's half hours
    ("literal", "B", (0, 1, 2)),
    ("demo_e48", "A", (0,)),  # the learning curve to convergence sets the demo's budget
    ("literal_paper_block", "A", (0, 1, 2)),
    ("demo_paper_block", "A", (0, 1)),
    ("demo_e48", "A", (1, 2)),  # does the 48-epoch budget also carry seed 1 (6.1% at 24)?
    ("demo_e96", "A", (0,)),
    # 96 epochs gained 10 points on 48 (seed 0): the budget in between comes first, since the
    # mice and the additions below are meant to measure the chosen demo.
    ("demo_e64", "A", (0,)),
    ("demo_e72", "A", (0,)),
    # Neither 64 nor 72 epochs came within a few points of 96 (72.1 and 73.2% against 78.9%):
    # 128 epochs for where the plateau is, and 96 epochs on the other two seeds (seed 1 was the
    # weak one at 24 and 48 epochs), before the mice and the additions move to the new budget.
    ("demo_e128", "A", (0,)),
    ("demo_e96", "A", (1, 2)),
    # The real configs' model at their rates (literal_paper_b128, ~20 min each) on a second
    # mouse, other simulator seed and cell mix, before the long runs: issue 13, item 1 asks for
    # settings with which the literal model decodes on simulated mice, not on one.
    ("literal_paper_b128", "B", (0, 1, 2)),
    # 128 epochs gained 3.6 points of test top-1 on 96 (82.5 against 78.9%; mean rank 2.0 at
    # both, validation top-1 1 point): 96 is the demo since 2026-12-07. The demo against ridge
    # on six other mice (3 simulator seeds x 50% / 80% complex cells), 3 training seeds on B
    # for the literal model's comparison, and its additions changed one at a time. A 96-epoch
    # run takes ~1 h 50 min on one core: two per sitting, started at its beginning.
    ("demo_e96", "B", (0, 1, 2)),
    *(("demo_e96", mouse, (0,)) for mouse in "CDEFG"),
    *((f"demo_e96_{a}", "A", (0, 1)) for a in ADDITIONS),
    # The 48-epoch demo on mouse B (two seeds ran before the budget moved; the third completes
    # the literal model's comparison at 48 epochs).
    ("demo_e48", "B", (0, 1, 2)),
    ("demo_e16", "A", (0,)),
    # The 24-epoch demo's additions (superseded by the 96-epoch rows above) and the previous demo.
    *((f"demo_{a}", "A", (0, 1)) for a in ADDITIONS),
    ("skip", "A", (0, 1, 2)),
    ("skip", "B", (0, 1, 2)),
    *((variant, "A", (0, 1)) for variant in VARIANTS if variant.startswith("skip_no")),
    ("skip_decay_kernels", "A", (0, 1)),
)
# Recipe search (--plan explore): one seed on the demo's mouse.
EXPLORE = (
    ("demo_e8", "A", (0,)),
    ("demo_e8_d32", "A", (0,)),
    ("demo_e8_qk01", "A", (0,)),
    ("literal_lr3e4", "A", (0,)),
    ("literal_lr1e4", "A", (0,)),
    ("literal_d32", "A", (0,)),
    ("literal_qk01", "A", (0,)),
    ("literal_emb03", "A", (0,)),
    ("literal_e24", "A", (0,)),
    ("literal_base_rates", "A", (0,)),
    ("literal_b128", "A", (0,)),
    ("skip_e24", "A", (0,)),
    ("literal_paper_b128", "A", (0, 1)),  # the third seed: --plan recipe
)
# Recipe robustness (--plan robust): the seed on which the demo fails first.
ROBUST = (
    ("demo_wd10", "A", (1, 0)),
    # Seed 1 only: dropout 0.2 leaves its plateau where it was (best validation loss 1.98
    # against 2.00; training loss 0.09 by epoch 18), so it is not a candidate for the recipe.
    ("demo_neuron_dropout", "A", (1,)),
)
# Before the main plan (--plan recipe): the literal model's last seeds (minutes each), an
# 8-epoch proxy of the demo without the decay on W_Q, W_K, the demo with centred neural maps,
# then the third seed of the real configs' model at their rates and a second one with DS-Net's
# block (~20 min each, one per shard, before the main plan's long runs).
RECIPE = (
    ("literal", "B", (1, 2)),
    ("demo_e8_readout", "A", (0,)),
    ("demo_centre", "A", (1, 0)),  # the failing seed first
    ("literal_paper_b128", "A", (2,)),
    ("literal_b128", "A", (1,)),
)
PLANS = {"main": PLAN, "explore": EXPLORE, "robust": ROBUST, "recipe": RECIPE}
SPREAD_STIMULI = 32

# Command-line flags, defined only when run as a script (the tests import this module beside
# dina_jax.main, whose --config flag would collide).
_CONFIG = _ROOT = _RESULTS = _ONLY = _REPORT = _DRY_RUN = _PLAN = _SHARD = None


def _define_flags() -> None:
    global _CONFIG, _ROOT, _RESULTS, _ONLY, _REPORT, _DRY_RUN, _PLAN, _SHARD
    _CONFIG = config_flags.DEFINE_config_file(
        "config", "configs/synthetic.py", "The demo config the variants override."
    )
    _ROOT = flags.DEFINE_string("root", "workdirs/ablations", "Folder of the runs' workdirs.")
    _RESULTS = flags.DEFINE_string("results", str(RESULTS), "Folder of the per-run summaries.")
    _ONLY = flags.DEFINE_multi_string("only", [], "Run only these variants (repeatable).")
    _REPORT = flags.DEFINE_bool("report", False, "Aggregate the summaries; train nothing.")
    _DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs left to do; train nothing.")
    _PLAN = flags.DEFINE_enum("plan", "main", sorted(PLANS), "Which list of runs to work through.")
    _SHARD = flags.DEFINE_string(
        "shard", "0/1", "i/n: do the runs at positions i, i + n, ... of the plan (n processes)."
    )


def run_name(variant: str, mouse: str, seed: int) -> str:
    return f"{variant}-{mouse}-seed{seed}"


def shard_runs(plan, shard: str) -> list[tuple[str, str, int]]:
    """The (variant, mouse, seed) runs of ``plan`` at positions i, i + n, ... for ``shard`` "i/n".

    Positions count every run of the plan, finished or not, so the split is the same whenever a
    process starts: n processes (one per core: XLA:CPU keeps ~1.5 of 2 cores busy, two pinned
    runs train ~1.25x more examples per second between them) never share a workdir.
    """
    try:
        index, count = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be i/n with integers, got {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {shard}: i must be in [0, n)")
    runs = [(variant, mouse, seed) for variant, mouse, seeds in plan for seed in seeds]
    return runs[index::count]


def run_config(base, variant: str, mouse: str, seed: int, cache_dir: str):
    config = base.copy_and_resolve_references()
    apply_overrides(config, {**VARIANTS[variant], **MICE[mouse], "seed": seed})
    config.data.cache_dir = cache_dir
    return config


def summarize(config, workdir: str, seconds: float) -> dict:
    """The numbers of one finished run (see the module docstring)."""
    from dina_jax import checkpoint
    from dina_jax.analysis import attention_contribution as contribution
    from dina_jax.evaluation import retrieval as retrieval_lib
    from dina_jax.models.feature_fns import attention_qk_fn

    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        epochs = [r for r in map(json.loads, f) if r.get("kind") == "epoch"]
    model, params, run_config, dataset = checkpoint.load_run(workdir)
    test = dataset.split.test
    controls = contribution.attention_contribution(
        model, params, dataset.images[test], dataset.responses[test]
    )
    spread = contribution.attention_spread(
        attention_qk_fn(model, params),
        dataset.responses[test[:SPREAD_STIMULI]],
        block_size=run_config.model.neural.block_size,
    )
    best = min(epochs, key=lambda r: r["val_loss"])
    # Hubs and a shared map component: how retrieval fails while the maps still differ
    # (results.json has them since 2026-12-06; older workdirs get them from their test maps).
    hubs = results.get("hubs")
    if hubs is None:
        maps = np.load(os.path.join(workdir, "test_maps.npz"))
        hubs = retrieval_lib.retrieval_hubs(maps["similarity"], maps["z_img"], maps["z_neu"])

    def retrieval(metrics):
        return {k: metrics[k] for k in ("top1", "top5", "top10", "mean_rank") if k in metrics}

    return {
        "dina": retrieval(results["retrieval"]),
        "ridge": retrieval(results["linear_baseline"]),
        "ceiling": retrieval(results["noise_ceiling"]),
        "best_val_loss": best["val_loss"],
        "best_epoch": best["epoch"],
        "epochs_run": len(epochs),
        "curve": {
            "val_loss": [r["val_loss"] for r in epochs],
            "val_top1_neu_to_img": [r.get("val_top1_neu_to_img") for r in epochs],
            "val_retrieval_top1": [r.get("val_retrieval_top1") for r in epochs],
        },
        "attention": spread,
        "controls": controls,
        "hubs": hubs,
        "train_seconds": seconds,
    }


def run_plan(base) -> None:
    from dina_jax.training import train_and_evaluate

    root = pathlib.Path(_ROOT.value).resolve()
    results = pathlib.Path(_RESULTS.value)
    results.mkdir(parents=True, exist_ok=True)
    cache = str(root / "dina_cache")
    todo = shard_runs(PLANS[_PLAN.value], _SHARD.value)
    todo = [r for r in todo if not _ONLY.value or r[0] in _ONLY.value]
    todo = [r for r in todo if not (results / f"{run_name(*r)}.json").exists()]
    print(f"{len(todo)} runs to do: {', '.join(run_name(*r) for r in todo)}", flush=True)
    if _DRY_RUN.value:
        return
    for variant, mouse, seed in todo:
        name = run_name(variant, mouse, seed)
        config = run_config(base, variant, mouse, seed, cache)
        workdir = str(root / name)
        print(f"=== {name}", flush=True)
        start = time.time()
        train_and_evaluate(config, workdir)
        summary = {
            "name": name,
            "variant": variant,
            "mouse": mouse,
            "seed": seed,
            "overrides": {**VARIANTS[variant], **MICE[mouse]},
            "epochs_budget": int(config.train.num_epochs),
            **summarize(config, workdir, time.time() - start),
        }
        tmp = results / f".{name}.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, results / f"{name}.json")
        print(
            f"{name}: top-1 {100 * summary['dina']['top1']:.1f}% (ridge "
            f"{100 * summary['ridge']['top1']:.1f}%), uniform attention "
            f"{100 * summary['controls']['uniform']['top1']:.1f}%, sd ln P "
            f"{summary['attention']['sd_log_p']:.3g}",
            flush=True,
        )


def _stats(values) -> dict:
    """Mean and sample sd (ddof 1; NaN with fewer than two values) of the non-None values."""
    values = np.asarray([v for v in values if v is not None], np.float64)
    mean = float(values.mean()) if len(values) else float("nan")
    sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n": int(len(values))}


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (variant, mouse, epoch budget): mean and sd over its seeds."""
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["variant"], r["mouse"], r["epochs_budget"]), []).append(r)
    table = []
    for (variant, mouse, budget), members in sorted(groups.items()):
        row = {"variant": variant, "mouse": mouse, "epochs": budget, "seeds": []}
        row["seeds"] = sorted(m["seed"] for m in members)
        for source in ("dina", "ridge"):
            for key in ("top1", "top5", "top10", "mean_rank"):
                row[f"{source}_{key}"] = _stats(m[source][key] for m in members)
        row["best_val_loss"] = _stats(m["best_val_loss"] for m in members)
        row["sd_log_p"] = _stats(m["attention"]["sd_log_p"] for m in members)
        row["relative_entropy"] = _stats(m["attention"]["relative_entropy"] for m in members)
        row["uniform_top1"] = _stats(m["controls"]["uniform"]["top1"] for m in members)
        row["removed_top1"] = _stats(
            m["controls"]["removed"]["top1"] for m in members if "removed" in m["controls"]
        )
        # Summaries written before 2026-12-06 have no "hubs".
        row["hub_share_n2i"] = _stats(m["hubs"]["n2i"]["hub_share"] for m in members if "hubs" in m)
        row["coherence_neural"] = _stats(
            m["hubs"]["coherence_neural"] for m in members if "hubs" in m
        )
        # Neural -> image retrieval with the neural maps centred on their training mean: the
        # retrieval of a model trained with loss.centre_neural, a diagnostic for the others.
        centred = [m["hubs"]["n2i_centred"] for m in members if "n2i_centred" in m.get("hubs", {})]
        for key in ("top1", "top5"):
            row[f"centred_{key}"] = _stats(c[key] for c in centred)
        table.append(row)
    return table


def _cell(stat: dict, percent: bool = True, digits: int = 1) -> str:
    """mean ± sd (sd only with two or more seeds), "-" without values."""
    if not stat["n"]:
        return "-"
    scale = 100 if percent else 1
    text = f"{scale * stat['mean']:.{digits}f}"
    return text + (f" ± {scale * stat['sd']:.{digits}f}" if stat["n"] > 1 else "")


def _topk_cells(row: dict, source: str) -> str:
    """Top-1 / top-5 / top-10 of ``source`` ("dina" or "ridge") in an aggregated row."""
    return " / ".join(_cell(row[f"{source}_{k}"]) for k in ("top1", "top5", "top10"))


def markdown_table(table: list[dict]) -> str:
    """The aggregated rows as the markdown table of docs/decisions.md, in the order of VARIANTS."""
    order = {variant: i for i, variant in enumerate(VARIANTS)}
    rows = sorted(table, key=lambda r: (order.get(r["variant"], len(order)), r["mouse"]))
    head = (
        "| variant | mouse | epochs | seeds | top-1 / top-5 / top-10 % | mean rank | ridge top-1 %"
        " | best val loss | sd ln P | rel. entropy | top-1 %, uniform attention |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        retrieval = _topk_cells(r, "dina")
        lines.append(
            f"| {DESCRIPTIONS.get(r['variant'], r['variant'])} (`{r['variant']}`) | {r['mouse']} "
            f"| {r['epochs']} | {','.join(map(str, r['seeds']))} | {retrieval} "
            f"| {_cell(r['dina_mean_rank'], percent=False)} | {_cell(r['ridge_top1'])} "
            f"| {_cell(r['best_val_loss'], percent=False, digits=2)} "
            f"| {_cell(r['sd_log_p'], percent=False, digits=3)} "
            f"| {_cell(r['relative_entropy'], percent=False, digits=4)} "
            f"| {_cell(r['uniform_top1'])} |"
        )
    return head + "\n".join(lines) + "\n"


def replace_generated_table(
    text: str, table_md: str, begin: str = TABLE_BEGIN, end: str = TABLE_END
) -> str:
    """``text`` with the block between the markers ``begin`` and ``end`` replaced by
    ``table_md``."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{DECISIONS}: no '{begin}' ... '{end}' block")
    return text[: start + len(begin)] + "\n\n" + table_md + "\n" + text[stop:]


def mice_table(table: list[dict], variant: str) -> str:
    """``variant`` against ridge on every simulated mouse it ran on, then per cell mix the mean
    ± sd over the mice other than the demo's own A (each mouse: the mean over its training
    seeds), as markdown.

    Chance is 1/280 (0.36%) top-1 on every mouse; "DINA - ridge" is the top-1 difference.
    """
    rows = {r["mouse"]: r for r in table if r["variant"] == variant}
    head = (
        "| mouse | simulator seed | complex cells | training seeds | DINA top-1 / top-5 / top-10 %"
        " | ridge top-1 / top-5 / top-10 % | DINA - ridge top-1 (points) | mean rank"
        " | top-1 %, uniform attention |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )

    def gap(row):
        return row["dina_top1"]["mean"] - row["ridge_top1"]["mean"]

    lines, mixes = [], {}
    for mouse in sorted(rows):
        r, sim = rows[mouse], MICE[mouse]
        frac = sim["data.synthetic.frac_complex"]
        if mouse != "A":  # the demo's own mouse: shown, not averaged with the others
            mixes.setdefault(frac, []).append(mouse)
        lines.append(
            f"| {mouse} | {sim['data.synthetic.seed']} | {100 * frac:.0f}% "
            f"| {','.join(map(str, r['seeds']))} | {_topk_cells(r, 'dina')} "
            f"| {_topk_cells(r, 'ridge')} | {100 * gap(r):+.1f} "
            f"| {_cell(r['dina_mean_rank'], percent=False)} | {_cell(r['uniform_top1'])} |"
        )
    keys = [f"{s}_{k}" for s in ("dina", "ridge") for k in ("top1", "top5", "top10", "mean_rank")]
    for frac, mice in sorted(mixes.items()):
        # Over the mice: the mean and sd of their per-mouse means.
        mix = {key: _stats(rows[m][key]["mean"] for m in mice) for key in [*keys, "uniform_top1"]}
        lines.append(
            f"| **{100 * frac:.0f}% complex, mean ± sd over {len(mice)} "
            f"{'mouse' if len(mice) == 1 else 'mice'} ({', '.join(mice)})** "
            f"| | | | {_topk_cells(mix, 'dina')} | {_topk_cells(mix, 'ridge')} "
            f"| {_cell(_stats(gap(rows[m]) for m in mice))} "
            f"| {_cell(mix['dina_mean_rank'], percent=False)} | {_cell(mix['uniform_top1'])} |"
        )
    return head + "\n".join(lines) + "\n"


def mice_tables(table: list[dict]) -> str:
    """``mice_table`` of each of ``MICE_VARIANTS`` that has runs, under its description."""
    measured = {r["variant"] for r in table}
    return "\n".join(
        f"{DESCRIPTIONS[v]} (`{v}`):\n\n{mice_table(table, v)}"
        for v in MICE_VARIANTS
        if v in measured
    )


# The demo's budgets, for the learning-curve figure of docs/decisions.md (mouse A), in order,
# with their colours.
CURVE_COLOURS = {
    "demo_e8": "C0",
    "demo_e16": "C1",
    "demo": "C2",
    "demo_e48": "C3",
    "demo_e64": "C5",
    "demo_e72": "C6",
    "demo_e96": "C4",
    "demo_e128": "C7",
}
CURVE_VARIANTS = tuple(CURVE_COLOURS)
CURVE_FIGURE = DECISIONS.parent / "figures" / "demo_learning_curves.png"


def plot_learning_curves(runs: list[dict], path: pathlib.Path) -> list[str]:
    """Validation loss and whole-split validation top-1 per epoch of the demo's budgets on
    mouse A, one line per run; returns the names of the runs drawn."""
    from matplotlib.figure import Figure

    drawn = [r for r in runs if r["variant"] in CURVE_VARIANTS and r["mouse"] == "A"]
    drawn.sort(key=lambda r: (CURVE_VARIANTS.index(r["variant"]), r["seed"]))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, top1_ax = fig.subplots(1, 2)
    styles = ("-", "--", ":")
    for r in drawn:
        curve = r["curve"]
        epochs = np.arange(1, len(curve["val_loss"]) + 1)
        top1 = [np.nan if v is None else 100 * v for v in curve["val_retrieval_top1"]]
        kw = {"color": CURVE_COLOURS[r["variant"]], "linestyle": styles[r["seed"] % 3], "lw": 1.2}
        label = f"{r['epochs_budget']} epochs, seed {r['seed']}"
        loss_ax.plot(epochs, curve["val_loss"], label=label, **kw)
        top1_ax.plot(epochs, top1, **kw)
    loss_ax.set(xlabel="epoch", ylabel="validation loss (InfoNCE)", title="Demo, mouse A")
    top1_ax.set(xlabel="epoch", ylabel="validation top-1 % (whole split)")
    loss_ax.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return [r["name"] for r in drawn]


def report() -> dict:
    """Aggregates the summaries in ``--results`` into ablations.json, prints the table,
    rewrites the generated table in docs/decisions.md and draws the demo's learning curves."""
    results = pathlib.Path(_RESULTS.value)
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    runs = [r for r in runs if "variant" in r]
    table = aggregate(runs)
    out = results / "ablations.json"
    out.write_text(json.dumps({"runs": len(runs), "groups": table}, indent=1) + "\n")
    table_md = markdown_table(table)
    print(table_md)
    if DECISIONS.exists():
        text = replace_generated_table(DECISIONS.read_text(), table_md)
        text = replace_generated_table(text, mice_tables(table), MICE_BEGIN, MICE_END)
        DECISIONS.write_text(text)
        plot_learning_curves(runs, CURVE_FIGURE)
    return {"groups": table}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO
    if _REPORT.value:
        report()
    else:
        run_plan(_CONFIG.value)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
