"""The analysis stages of ``analyze`` (paper Sec. 4.4-4.5, Fig. 5-6), each described once:
:data:`STAGES`, in run order, and :func:`datasets_table`, the README's table of what they store.

Their code is in three modules:

  stage_framework  what a stage is (``Stage``, each field explained there) and what it is given
                   (``Inputs``, ``StageContext``); this module re-exports its names;
  image_stages     the ``compute`` and ``figures`` functions of the image-tower stages (Fig. 5);
  neural_stages    those of the neural-tower stages (Fig. 6) and of the ground-truth validation.

Adding an analysis: a module with the analysis itself, which knows nothing of HDF5 or figures;
its ``compute`` and ``figures`` functions, which connect it to the run and to ``plots``, beside
those of the tower it analyses; a block ``config.analysis.<name>`` in ``dina_jax/config.py``;
and one ``Stage(...)`` in :data:`STAGES` (with ``datasets`` describing its arrays; then
regenerate the README table, see :func:`datasets_table`). ``run.py`` stays as it is.
"""

from __future__ import annotations

from dina_jax.analysis import image_stages, neural_stages
from dina_jax.analysis.image_stages import occlusion_batch
from dina_jax.analysis.stage_framework import Inputs, Stage, StageContext, always, describe

# ------------------------------------------------------ the README's table, when a stage applies


def datasets_table(registry: tuple[Stage, ...] | None = None) -> str:
    """The Markdown table of every stage's group and datasets (the README's "Outputs").

    Regenerate the README's copy after changing a ``Stage``'s ``datasets``::

        python -c "from dina_jax.analysis import stages; print(stages.datasets_table())"
    """
    lines = ["| Group / dataset | Units | Description |", "|---|---|---|"]
    for stage in STAGES if registry is None else registry:
        lines.append(f"| **`{stage.name}/`** | | {stage.description} |")
        lines.extend(
            f"| `{stage.name}/{name}` | {units} | {description} |"
            for name, (units, description) in stage.datasets.items()
        )
    return "\n".join(lines)


def _dina_only(inputs: Inputs) -> bool:
    return inputs.is_dina


def _has_ground_truth(inputs: Inputs) -> bool:
    return inputs.dataset.ground_truth is not None


# --------------------------------------------------------------------------------- registry

# In run order: a stage comes after the stages it depends on. Every version went up by one when
# the settings moved into per-stage config blocks (the keys changed; occlusion now keys repeats).
STAGES: tuple[Stage, ...] = (
    Stage(
        name="pathways",
        version=3,
        config_block="pathways",
        compute=image_stages.pathways_compute,
        figures=image_stages.pathways_figures,
        applies=_dina_only,
        description="SSIM of the image-tower feature map of one pathway alone to the full map "
        "(Sec. 4.4, Fig. 5a); DINA only",
        datasets={
            "local": (
                "SSIM",
                "(n_images,) SSIM(full map, map with the local pathway only) per analysed stimulus",
            ),
            "global": (
                "SSIM",
                "(n_images,) SSIM(full map, map with the global pathway only) per "
                "analysed stimulus",
            ),
        },
    ),
    Stage(
        name="occlusion",
        version=3,
        config_block="occlusion",
        compute=image_stages.occlusion_compute,
        figures=image_stages.occlusion_figures,
        memory_fields=("batch",),
        resumable=True,  # Hours for 280 stimuli at stride 2: stored image by image.
        description="Gaussian-occlusion importance maps of the image tower (App. A.1, Eq. 10-15, "
        "Fig. 5b-c), stored image by image",
        datasets={
            "maps": (
                "1 (normalized importance, 0 to 1)",
                "(n_images, 68, 270) importance map per analysed stimulus: the feature-map "
                "change 1 - SSIM (Eq. 13; 1 - cos with measure 'cos') of each occlusion, "
                "spread over the pixels by its Gaussian (Eq. 14) and min-max normalized "
                "(Eq. 15); 0 where done is False",
            ),
            "done": (
                "bool",
                "(n_images,) whether the map of each stimulus is computed (a resumed "
                "run continues at the first False)",
            ),
        },
    ),
    Stage(
        name="blobs",
        version=3,
        config_block="blobs",
        compute=image_stages.blobs_compute,
        figures=image_stages.blobs_figures,
        depends_on=("occlusion",),
        description="Blobs of the occlusion maps (map >= threshold, connected) and the shape "
        "descriptors of the image edges inside them (App. A.2-A.3, Eq. 16-21, Fig. 5d-h); one row "
        "per blob, images in order, blobs in label order",
        datasets={
            "count": ("blobs", "(n_images,) blobs per occlusion map (Fig. 5e)"),
            "image": (
                "index (0-based)",
                "(n_blobs,) the blob's stimulus: index into rows, image_index and occlusion/maps",
            ),
            "centroid": (
                "pixels",
                "(n_blobs, 2) (row, col) centroid of the blob in the 68 x 270 image",
            ),
            "area": ("pixels", "(n_blobs,) pixels in the blob (Fig. 5f)"),
            "edge_length": (
                "pixels",
                "(n_blobs,) total skeleton path length of the image edges inside the blob",
            ),
            "n_segments": (
                "segments",
                "(n_blobs,) skeleton segments between junctions and endpoints (fragmentation)",
            ),
            "n_valid_segments": (
                "segments",
                "(n_blobs,) segments long enough to enter the tortuosity and coherence",
            ),
            "n_components": ("components", "(n_blobs,) connected skeleton pieces in the blob"),
            "tortuosity": (
                "1",
                "(n_blobs,) mean tortuosity T of the valid segments (Eq. 19); NaN without any",
            ),
            "coherence": (
                "1",
                "(n_blobs,) orientation coherence R of the valid segments, 0 to 1 "
                "(Eq. 18); NaN without any",
            ),
            "tex": ("1", "(n_blobs,) texture strength Tex(T) (Eq. 20)"),
            "sti": (
                "1",
                "(n_blobs,) Shape-Texture Index R - Tex, in (-1, 1] (Eq. 21); NaN for a "
                "blob without edges (Fig. 5g-h)",
            ),
        },
    ),
    Stage(
        name="ablation",
        version=3,
        config_block="ablation",
        compute=neural_stages.ablation_compute,
        figures=neural_stages.ablation_figures,
        memory_fields=("mask_batch",),
        description="Neural-tower maps from response-ranked vs random neuron subsets, SSIM to the "
        "full-population map (Sec. 4.5, Fig. 6a); F = len(analysis.ablation.fractions), "
        "R = analysis.ablation.random_draws",
        datasets={
            "fractions": (
                "fraction of neurons",
                "(F,) subset sizes as fractions of the population, increasing",
            ),
            "sizes": ("neurons", "(F,) neurons kept at each fraction: max(1, round(fraction N))"),
            "order": (
                "index (0-based)",
                "(N,) neurons (positions in neuron_index) by decreasing "
                "mean absolute response to the analysed stimuli; the ranked subset of size k "
                "is its first k",
            ),
            "ranked_ssim": (
                "SSIM",
                "(F, n_images) SSIM(full map, map of the top-ranked subset) "
                "per fraction and stimulus",
            ),
            "random_ssim": (
                "SSIM",
                "(R, F, n_images) SSIM(full map, map of a random subset) per "
                "draw, fraction and stimulus",
            ),
            "ranked_curve": ("SSIM", "(F,) ranked_ssim averaged over the stimuli (Fig. 6a)"),
            "random_curve": ("SSIM", "(R, F) random_ssim averaged over the stimuli (Fig. 6a)"),
            "random_fraction_draws": (
                "fraction of neurons",
                "(R,) smallest fraction at which "
                "each random curve reaches ssim_target, linearly "
                "interpolated; NaN if never",
            ),
        },
    ),
    Stage(
        name="attention",
        version=3,
        config_block="attention",
        compute=neural_stages.attention_compute,
        figures=neural_stages.attention_figures,
        applies=_dina_only,
        description="Histogram of the population attention's probabilities (Eq. 7) over the "
        "first analysis.attention.samples stimuli, with its log-normal fit (Sec. 4.5, Fig. 6b); "
        "DINA only",
        datasets={
            "bin_edges": ("probability", "(bins + 1,) log-spaced bin edges from 1e-6 / N to 1"),
            "counts": (
                "count",
                "(bins,) attention probabilities (every head, query and key) falling in each bin",
            ),
        },
    ),
    Stage(
        name="attention_contribution",
        version=1,
        config_block="attention_contribution",
        compute=neural_stages.contribution_compute,
        applies=_dina_only,
        memory_fields=("batch_size",),
        description="Retrieval over every test stimulus and map SSIM with the attention intact, "
        "uniform or removed, and the spread of the attention scores; scalars only; DINA only",
    ),
    Stage(
        name="validation",
        version=4,
        config_block="validation",
        compute=neural_stages.validation_compute,
        applies=_has_ground_truth,
        depends_on=("occlusion", "ablation"),
        description="Simulated data only: occlusion maps vs the footprints of the simulated RFs "
        "that drive the population, and the ablation ranking vs the simulator's high-gain neurons",
        datasets={
            "occlusion_score": (
                "fraction of map mass",
                "(n_images,) share of each occlusion "
                "map's mass inside its drive footprint (RFs of the most strongly "
                "responding visual neurons)",
            ),
            "occlusion_control": (
                "fraction of map mass",
                "(n_images, 200) the same share for randomly shifted footprints (the control)",
            ),
            "occlusion_percentile": (
                "percent",
                "(n_images,) percentile of occlusion_score among its controls",
            ),
            "high_gain": (
                "bool",
                "(N,) visual neurons whose simulated gain is in the top "
                "1 - gain_quantile, in neuron_index order",
            ),
        },
    ),
)


__all__ = [
    "STAGES",
    "Inputs",
    "Stage",
    "StageContext",
    "always",
    "datasets_table",
    "describe",
    "occlusion_batch",
]
