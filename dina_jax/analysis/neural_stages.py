"""The stages that analyse the neural tower (paper Sec. 4.5, Fig. 6): neuron ablation, the
population attention's scores and what the attention contributes, and the validation of the
occlusion maps and the ablation ranking against the simulator's ground truth (simulated V1 only),
each as the ``compute`` and ``figures`` functions of its ``Stage``.

They connect the analysis functions (``ablation``, ``attention_stats``,
``attention_contribution``, ``validation``), which know nothing of HDF5 or figures, to the run's
``analysis.h5`` and to ``plots``. Each stage is listed, with its settings block and its stored
datasets, in :data:`dina_jax.analysis.stages.STAGES`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from dina_jax import plots, progress
from dina_jax.analysis import ablation, attention_contribution, attention_stats, validation
from dina_jax.analysis.stage_framework import StageContext


def _progress(description: str, unit: str) -> Callable:
    return lambda iterable: progress.bar(iterable, desc=description, unit=unit, leave=False)


# ---------------------------------------------------------- neuron ablation (Sec. 4.5, Fig. 6a)


def ablation_compute(ctx: StageContext) -> tuple[dict, dict]:
    """Response-ranked vs random neuron subsets, SSIM to the full-population neural map."""
    from dina_jax.models.feature_fns import neural_feature_fn

    run, block = ctx.inputs, ctx.block
    result = ablation.neuron_ablation(
        neural_feature_fn(run.model, run.params),
        run.responses,
        fractions=block.fractions,
        n_random=block.random_draws,
        # A stream of the run's seed of its own; the constant is the first version's (another
        # one would draw other random subsets than the stored results).
        key=jax.random.fold_in(jax.random.key(run.config.seed), 6),
        target=block.ssim_target,
        win_size=block.ssim_window,
        mask_batch=block.mask_batch,
        progress=_progress("neuron ablation", "chunk"),
    )
    scalars = {k: v for k, v in result.items() if np.ndim(v) == 0}
    arrays = {k: v for k, v in result.items() if np.ndim(v) > 0}
    return arrays, scalars


def ablation_figures(ctx: StageContext) -> list[str]:
    group = ctx.group
    return [
        ctx.save(
            plots.plot_ablation(
                group["fractions"][...],
                group["ranked_curve"][...],
                group["random_curve"][...],
                target=ctx.block.ssim_target,
            ),
            "fig6a_ablation.png",
        )
    ]


# ------------------------------------------------------ attention scores (Sec. 4.5, Fig. 6b)


def attention_compute(ctx: StageContext) -> tuple[dict, dict]:
    """Histogram of the population attention's probabilities, streamed, and its log-normal fit."""
    from dina_jax.models.feature_fns import attention_qk_fn

    run, block = ctx.inputs, ctx.block
    responses = run.responses[: block.samples]
    edges = attention_stats.attention_bin_edges(responses.shape[1], block.bins)
    counts, moments = attention_stats.attention_histogram_stream(
        attention_qk_fn(run.model, run.params),
        responses,
        edges,
        batch_size=1,  # One stimulus per call: its N x N scores are the memory.
        block_size=run.config.model.neural.block_size,
        progress=_progress("attention scores", "stimulus"),
    )
    summary = attention_stats.attention_summary(counts, moments, edges)
    return dict(bin_edges=edges, counts=counts), summary


def attention_figures(ctx: StageContext) -> list[str]:
    group = ctx.group
    return [
        ctx.save(
            plots.plot_attention_distribution(
                group["bin_edges"][...],
                group["counts"][...],
                mu=float(group.attrs["mu"]),
                sigma=float(group.attrs["sigma"]),
                ks=float(group.attrs["ks"]),
            ),
            "fig6b_attention.png",
        )
    ]


# ------------------------------------------------------------ what the attention contributes


def contribution_compute(ctx: StageContext) -> tuple[dict, dict]:
    """Retrieval over every test stimulus and map SSIM with the attention uniform or removed;
    the spread of the attention scores over the first ``samples`` analysed stimuli."""
    from dina_jax.models.feature_fns import attention_qk_fn

    run, block = ctx.inputs, ctx.block
    test = run.dataset.split.test
    result = attention_contribution.attention_contribution(
        run.model,
        run.params,
        run.dataset.images[test],
        run.dataset.responses[test],
        topk=tuple(run.config.eval.topk),
        ssim_window=block.ssim_window,
        batch_size=block.batch_size,
    )
    spread = attention_contribution.attention_spread(
        attention_qk_fn(run.model, run.params),
        run.responses[: block.samples],
        block_size=run.config.model.neural.block_size,
        progress=_progress("attention spread", "stimulus"),
    )
    scalars = {f"{name}_{key}": value for name, m in result.items() for key, value in m.items()}
    scalars["uniform_top1_cost"] = result["intact"]["top1"] - result["uniform"]["top1"]
    scalars.update(spread)
    return {}, scalars


# ------------------------------------------------- ground-truth validation (simulated V1 only)


def validation_compute(ctx: StageContext) -> tuple[dict, dict]:
    """Occlusion maps vs the simulated drive footprints; ablation ranking vs high-gain neurons."""
    run = ctx.inputs
    truth = run.dataset.ground_truth
    rf_maps = ctx.h5["occlusion/maps"][...]
    footprints = validation.drive_footprints(run.responses, truth, rf_maps.shape[1:])
    occ = validation.occlusion_footprint_score(rf_maps, footprints)
    high_gain = validation.high_gain_neurons(truth, ctx.block.gain_quantile)
    overlap = ablation.ground_truth_overlap(ctx.h5["ablation/order"][...], high_gain)
    arrays = dict(
        occlusion_score=occ["score"],
        occlusion_control=occ["control"],
        occlusion_percentile=occ["percentile"],
        high_gain=high_gain,
    )
    scalars = dict(
        occlusion_mean_score=occ["mean_score"],
        occlusion_mean_control=occ["mean_control"],
        occlusion_area_fraction=occ["area_fraction"],
        occlusion_median_percentile=float(np.median(occ["percentile"])),
        occlusion_p_value=occ["p_value"],
        **{f"ablation_{k}": v for k, v in overlap.items()},
    )
    return arrays, scalars
