"""Validates the interpretability analyses against known answers and the simulator's ground truth.

  python -m experiments.validate_analyses                 # the known-answer checks only
  python -m experiments.validate_analyses --workdir DIR   # + a run trained on simulated V1
  python -m experiments.validate_analyses --workdir DIR \
      --config.analysis.n_images=24 --config.analysis.occlusion.stride=6   # CPU-sized

(``--config.<section>.<field>`` overrides the run's config, as in ``dina_jax.main``;
``python experiments/validate_analyses.py`` works too.)

Known answers (seconds, no model needed):
  occlusion   a feature function that reads only the image rows 20-40, cols 100-140: the map must
              peak inside that region and be exactly 0 more than 24 px from it (a 25 x 25 window
              cannot reach it);
  STI         a straight edge gives R = 1, T = 1, STI = +1; lattice random-walk textures give a
              negative STI; a pixel polyline of known geometry gives its exact tortuosity;
  attention   the streamed (blockwise) attention histogram equals np.histogram of the
              materialized probabilities at small N.
With ``--workdir`` (a run of ``configs/synthetic.py``; ``--mode analyze`` results are reused or
computed), against the simulator's ground truth:
  occlusion   mass of the occlusion maps inside the footprint of the receptive fields of the
              visual neurons that respond most to each stimulus, vs the same footprint moved to
              random places;
  ablation    response-ranked subsets reach SSIM 0.9 with fewer neurons than random subsets, and
              the top-ranked neurons overlap the simulator's high-gain visual neurons above chance.
Prints every number and exits 1 if a check fails.
"""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dina_jax import cli
from dina_jax.analysis import attention_stats, blobs, occlusion
from dina_jax.models.attention import attention_histogram, attention_probabilities

H, W = 68, 270
FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def occlusion_known_region() -> None:
    rows, cols = slice(20, 40), slice(100, 140)

    def features(images):
        return jax.image.resize(images[:, rows, cols], (images.shape[0], 16, 64), "linear") ** 2

    image = np.random.default_rng(0).random((H, W)).astype(np.float32)
    outside = np.ones((H, W), bool)
    outside[rows, cols] = False
    from scipy import ndimage

    distance = ndimage.distance_transform_cdt(outside, metric="chessboard")
    for measure in ("ssim", "cos"):
        rf = np.asarray(occlusion.occlusion_map(features, image, measure=measure))
        peak = np.unravel_index(np.argmax(rf), rf.shape)
        far = float(rf[distance > 24].max())
        inside = float(rf[distance == 0].mean())
        check(
            f"occlusion/{measure}: known region",
            distance[peak] == 0 and far < 1e-6,
            f"peak at {tuple(int(p) for p in peak)} (inside: {distance[peak] == 0}), "
            f"mean inside {inside:.3f}, max beyond 24 px {far:.1e}",
        )


def _random_walks(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((H, W))
    moves = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])
    for _ in range(12):
        p = np.array([rng.integers(12, 56), rng.integers(105, 165)])
        for _ in range(150):
            p = np.clip(p + moves[rng.integers(4)], [10, 100], [57, 169])
            image[p[0], p[1]] = 1.0
    return image


def sti_known_shapes() -> None:
    rf = np.zeros((H, W))
    rf[10:58, 100:170] = 1.0
    edge = np.zeros((H, W))
    edge[:, 135:] = 1.0
    (blob,) = blobs.extract_blobs(rf, edge)
    check(
        "STI: straight edge",
        abs(blob.sti - 1) < 1e-4,
        f"R = {blob.coherence:.4f}, T = {blob.tortuosity:.4f}, STI = {blob.sti:+.4f}",
    )
    values = []
    for seed in range(5):
        (blob,) = blobs.extract_blobs(rf, _random_walks(seed))
        literal = blobs.extract_blobs(rf, _random_walks(seed), orientation="literal")[0]
        values.append((blob.sti, blob.coherence, blob.tortuosity, literal.coherence))
    sti, r, t, r_literal = np.asarray(values).T
    check(
        "STI: random-walk textures",
        bool(np.all(sti < 0)),
        f"STI {np.round(sti, 2).tolist()}, R {np.round(r, 2).tolist()}, "
        f"T {np.round(t, 2).tolist()} (literal R would be {np.round(r_literal, 2).tolist()})",
    )
    skeleton = np.zeros((40, 60), bool)
    for i in range(11):
        skeleton[5 + i, 2 + i] = skeleton[5 + i, 22 - i] = True
    seg = blobs.skeleton_segments(skeleton)
    t = float(blobs.tortuosity(seg.path_length, seg.chord, eps=0.0)[0])
    check(
        "tortuosity: V polyline",
        abs(t - math.sqrt(2)) < 1e-9,
        f"T = {t:.12f}, exact sqrt 2 = {math.sqrt(2):.12f}",
    )


def attention_blockwise_vs_materialized() -> None:
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 37, 2, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 37, 2, 8)), jnp.float32)
    mask = jnp.arange(37) % 5 != 0
    edges = attention_stats.attention_bin_edges(37, 80)
    counts, _ = attention_histogram(q, k, edges, key_mask=mask, query_mask=mask, block_size=8)
    probs = np.asarray(attention_probabilities(q, k, key_mask=mask))
    keep = np.asarray(mask)
    expected, _ = np.histogram(
        probs[:, :, keep][:, :, :, keep].ravel(), bins=edges.astype(np.float32)
    )
    counts = np.asarray(counts).sum(0)
    check(
        "attention: blockwise histogram",
        bool(np.array_equal(counts, expected)),
        f"{int(counts.sum())} entries, max bin difference {int(np.abs(counts - expected).max())}",
    )


def ground_truth_checks(workdir: str, overrides: dict | None = None) -> None:
    """Analyses ``workdir`` (its config with ``overrides``) and checks the result."""
    from dina_jax.analysis.run import analyze
    from dina_jax.checkpoint import run_config
    from dina_jax.config import apply_overrides

    config = run_config(workdir)
    apply_overrides(config, overrides or {})
    summary = analyze(config, workdir)
    if "validation" not in summary:
        check("ground truth", False, f"{workdir} is not a run on simulated data")
        return
    v, ab = summary["validation"], summary["ablation"]
    check(
        "occlusion vs simulated RFs",
        v["occlusion_p_value"] < 0.01,
        f"mass inside the drive footprint {v['occlusion_mean_score']:.3f} vs random-location "
        f"control {v['occlusion_mean_control']:.3f} (footprint: "
        f"{v['occlusion_area_fraction']:.2f} of the image; median percentile among controls "
        f"{v['occlusion_median_percentile']:.0f}; Wilcoxon p = {v['occlusion_p_value']:.1e})",
    )
    ranked, random = ab["ranked_fraction"], ab["random_fraction"]
    check(
        "ablation: ranked vs random",
        np.isfinite(ranked) and (not np.isfinite(random) or ranked < random),
        f"SSIM >= 0.9 reached at {100 * ranked:.1f}% of neurons (ranked) vs "
        f"{100 * random:.1f}% (random, mean of draws)",
    )
    check(
        "ablation: high-gain overlap",
        v["ablation_p_value"] < 1e-3,
        f"top {v['ablation_k']} ranked neurons contain {v['ablation_overlap']} of the "
        f"{v['ablation_n_truth']} high-gain visual neurons (chance {v['ablation_expected']:.1f}, "
        f"{v['ablation_enrichment']:.1f}x, hypergeometric p = {v['ablation_p_value']:.1e})",
    )


def define_flags() -> None:
    """The command line (defined only when run as a script: absl flags are global)."""
    flags.DEFINE_string("workdir", "", "A run trained on simulated data (optional).")
    cli.define_config_overrides("Overrides of the run's config.")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    occlusion_known_region()
    sti_known_shapes()
    attention_blockwise_vs_materialized()
    if flags.FLAGS.workdir:
        ground_truth_checks(flags.FLAGS.workdir, cli.config_overrides())
    print(f"{len(FAILURES)} check(s) failed" + (f": {FAILURES}" if FAILURES else ""))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
