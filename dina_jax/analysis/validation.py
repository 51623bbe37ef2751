"""Checks of the analyses against the simulator's ground truth (simulated V1 only).

The simulated neurons have known Gaussian receptive fields (``rf_center`` (row, col) in stimulus
pixels, ``rf_sigma``), gains and a visual / non-visual flag (``dina_jax.data.synthetic``). Two
questions can then be answered exactly, which real data cannot:

* Do the occlusion maps of the image tower point at the image regions that drive the recorded
  population? For stimulus s, the *drive footprint* is the region covered by the receptive fields
  of the visual neurons that respond most strongly to s (the top ``top_fraction`` by response,
  each RF a Gaussian of its simulated sigma, weighted by the response); the footprint is the
  ``footprint_fraction`` of pixels where that drive density is highest. The score is the fraction
  of the occlusion map's mass inside the footprint; the control moves the same footprint to random
  places (circular shifts of the mask, so its area and shape are kept). A map that ignores where
  the drive comes from scores like the control (about ``footprint_fraction``).
* Does the neuron ablation find the strongly responsive neurons? See
  :func:`dina_jax.analysis.ablation.ground_truth_overlap` with :func:`high_gain_neurons`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def high_gain_neurons(ground_truth: dict, quantile: float = 0.9) -> np.ndarray:
    """Visual neurons whose simulated gain is in the top (1 - quantile) of the population: (N,)."""
    gain = np.asarray(ground_truth["gain"], np.float64)
    return np.asarray(ground_truth["is_visual"], bool) & (gain >= np.quantile(gain, quantile))


def rf_density(
    rf_center: np.ndarray, rf_sigma: np.ndarray, weights: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Sum of weighted Gaussian RF envelopes: sum_i w_i exp(-|x - c_i|^2 / (2 sigma_i^2)), (H, W).

    Args: rf_center (n, 2) (row, col); rf_sigma (n,); weights (n,); shape (H, W).
    """
    rows = np.arange(shape[0])[:, None, None] - np.asarray(rf_center)[None, None, :, 0]
    cols = np.arange(shape[1])[None, :, None] - np.asarray(rf_center)[None, None, :, 1]
    sigma2 = 2.0 * np.asarray(rf_sigma, np.float64) ** 2
    return np.exp(-(rows**2 + cols**2) / sigma2) @ np.asarray(weights, np.float64)


def drive_footprints(
    responses: np.ndarray,
    ground_truth: dict,
    shape: tuple[int, int],
    *,
    top_fraction: float = 0.05,
    footprint_fraction: float = 0.2,
) -> np.ndarray:
    """Per-stimulus footprint of the RFs of the most strongly responding visual neurons.

    Args:
      responses: (S, N) responses to the stimuli (aligned with ``ground_truth``'s neurons).
      ground_truth: simulator truth with ``rf_center``, ``rf_sigma``, ``is_visual``.
      shape: (H, W) of the stimuli.
      top_fraction: fraction of the visual neurons taken per stimulus (largest responses).
      footprint_fraction: fraction of the pixels in each footprint.

    Returns:
      (S, H, W) bool footprints.
    """
    visual = np.nonzero(np.asarray(ground_truth["is_visual"], bool))[0]
    n_top = max(1, int(round(top_fraction * visual.size)))
    centres = np.asarray(ground_truth["rf_center"])[visual]
    sigmas = np.asarray(ground_truth["rf_sigma"])[visual]
    footprints = np.zeros((len(responses),) + tuple(shape), bool)
    for s, response in enumerate(np.asarray(responses)[:, visual]):
        top = np.argsort(-response)[:n_top]
        density = rf_density(centres[top], sigmas[top], np.maximum(response[top], 0.0), shape)
        footprints[s] = density >= np.quantile(density, 1.0 - footprint_fraction)
    return footprints


def occlusion_footprint_score(
    rf_maps: np.ndarray, footprints: np.ndarray, *, n_controls: int = 200, seed: int = 0
) -> dict:
    """Occlusion mass inside the drive footprints against randomly shifted footprints.

    Args:
      rf_maps: (S, H, W) normalized occlusion maps.
      footprints: (S, H, W) bool, from :func:`drive_footprints`.
      n_controls: random circular shifts of each footprint.
      seed: seed of the shifts.

    Returns:
      dict with ``score`` (S,) mass fraction inside the footprint, ``control`` (S, n_controls)
      the same for shifted footprints, ``mean_score``, ``mean_control``, ``area_fraction`` and
      ``percentile`` (S,): the percentile of each score among its controls, and ``p_value``:
      one-sided Wilcoxon signed-rank test of score > mean control across stimuli.
    """
    rng = np.random.default_rng(seed)
    maps = np.asarray(rf_maps, np.float64)
    total = maps.sum(axis=(1, 2))
    total = np.where(total > 0, total, 1.0)
    score = (maps * footprints).sum(axis=(1, 2)) / total
    height, width = maps.shape[1:]
    control = np.empty((len(maps), n_controls))
    for c in range(n_controls):
        dy, dx = rng.integers(0, height), rng.integers(0, width)
        shifted = np.roll(footprints, (dy, dx), axis=(1, 2))
        control[:, c] = (maps * shifted).sum(axis=(1, 2)) / total
    percentile = 100.0 * (control < score[:, None]).mean(axis=1)
    excess = score - control.mean(axis=1)
    # A map whose score equals every control (a flat map) has an excess of rounding noise (the
    # mean of n equal numbers is not exactly that number): count it as no excess, which the
    # signed-rank test leaves out, instead of testing the noise.
    excess = np.where(np.abs(excess) <= 1e-12, 0.0, excess)
    p_value = (
        float(stats.wilcoxon(excess, alternative="greater").pvalue) if np.any(excess != 0) else 1.0
    )
    return dict(
        p_value=p_value,
        score=score,
        control=control,
        mean_score=float(score.mean()),
        mean_control=float(control.mean()),
        area_fraction=float(footprints.mean()),
        percentile=percentile,
    )
