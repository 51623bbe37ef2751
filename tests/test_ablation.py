"""Neuron ablation (Fig. 6a) against a numpy/scikit-image brute force on a linear toy tower."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from skimage.metrics import structural_similarity

from dina_jax.analysis import ablation

S, N = 6, 50


def _linear_tower(weights, responses, neuron_mask):
    """A toy neural tower: (B, N) responses -> (B, 16, 64) maps from the kept neurons only."""
    return jnp.tanh((responses * neuron_mask) @ weights).reshape(-1, 16, 64)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    gains = np.exp(rng.normal(0.0, 1.2, size=N))  # Log-normal gains: a few neurons dominate.
    responses = (rng.normal(size=(S, N)) * gains).astype(np.float32)
    weights = jnp.asarray(rng.normal(size=(N, 1024)) * 0.1, jnp.float32)
    return jax.tree_util.Partial(_linear_tower, weights), responses, gains


def test_masked_ssim_matches_brute_force(toy):
    fn, responses, _ = toy
    rng = np.random.default_rng(1)
    masks = rng.random((5, N)) < 0.5
    masks[0] = True
    got = np.asarray(ablation.masked_map_ssim(fn, responses, masks, win_size=7, mask_batch=2))
    full = np.asarray(fn(jnp.asarray(responses), jnp.ones(N)))
    for m, mask in enumerate(masks):
        sub = np.asarray(fn(jnp.asarray(responses), jnp.asarray(mask, jnp.float32)))
        for s in range(S):
            expected = structural_similarity(
                full[s], sub[s], win_size=7, data_range=full[s].max() - full[s].min()
            )
            assert got[m, s] == pytest.approx(expected, abs=1e-4)
    np.testing.assert_allclose(got[0], 1.0, atol=1e-6)


def test_subset_masks_sizes_nesting_and_ranking():
    order = np.array([3, 0, 4, 1, 2])
    ranked, random = ablation.subset_masks(order, [0.2, 0.6, 1.0], 3, jax.random.key(0))
    np.testing.assert_array_equal(ranked.sum(1), [1, 3, 5])
    assert ranked[0, 3] and ranked[1][[3, 0, 4]].all()
    assert random.shape == (3, 3, 5)
    np.testing.assert_array_equal(random.sum(2), [[1, 3, 5]] * 3)
    assert (random[:, 0] <= random[:, 1]).all()  # Nested within a draw.
    again = ablation.subset_masks(order, [0.2, 0.6, 1.0], 3, jax.random.key(0))[1]
    np.testing.assert_array_equal(random, again)  # Explicit keys: reproducible.


def test_rank_by_mean_absolute_response():
    responses = np.array([[1.0, -5.0, 0.1], [-1.0, 4.0, 0.2]])
    np.testing.assert_array_equal(ablation.rank_neurons(responses), [1, 0, 2])


def test_fraction_to_reach_interpolates():
    fractions = [0.1, 0.2, 0.5]
    assert ablation.fraction_to_reach(fractions, [0.5, 0.8, 1.0], 0.9) == pytest.approx(0.35)
    assert ablation.fraction_to_reach(fractions, [0.95, 0.99, 1.0], 0.9) == 0.1
    assert np.isnan(ablation.fraction_to_reach(fractions, [0.1, 0.2, 0.3], 0.9))


def test_ranked_subsets_beat_random_ones(toy):
    fn, responses, gains = toy
    fractions = [0.04, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    result = ablation.neuron_ablation(
        fn, responses, fractions=fractions, n_random=4, key=jax.random.key(0), stimulus_batch=4
    )
    assert result["ranked_ssim"].shape == (7, S)
    assert result["random_ssim"].shape == (4, 7, S)
    np.testing.assert_allclose(result["ranked_curve"][-1], 1.0, atol=1e-6)
    assert np.all(result["ranked_curve"][:-1] > result["random_curve"].mean(0)[:-1])
    assert result["ranked_fraction"] < result["random_fraction"]
    # The ranking recovers the high-gain neurons far above chance.
    truth = gains >= np.quantile(gains, 0.8)
    overlap = ablation.ground_truth_overlap(result["order"], truth)
    assert overlap["overlap"] >= 7 and overlap["expected"] == pytest.approx(2.0)
    assert overlap["p_value"] < 1e-3


def test_ground_truth_overlap_chance_level():
    truth = np.zeros(100, bool)
    truth[:10] = True
    order = np.arange(100)[::-1]  # The worst possible ranking.
    result = ablation.ground_truth_overlap(order, truth, k=20)
    assert result["overlap"] == 0 and result["expected"] == pytest.approx(2.0)
    assert result["p_value"] == pytest.approx(1.0)
    best = ablation.ground_truth_overlap(np.arange(100), truth)
    assert best["overlap"] == 10
    assert best["p_value"] == pytest.approx(stats.hypergeom.pmf(10, 100, 10, 10))


def test_bad_fractions_raise():
    with pytest.raises(ValueError, match=r"fractions must lie in \(0, 1\], got \[0.0, 0.5\]"):
        ablation.subset_sizes(10, [0.0, 0.5])
