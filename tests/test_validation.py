"""Ground-truth validation helpers (analysis/validation.py) on tiny hand-built cases whose answers
are worked out by hand: high-gain neurons, RF densities, drive footprints and the occlusion
footprint score with its shifted-footprint controls."""

import math

import numpy as np
import pytest

from dina_jax.analysis import validation

# ----------------------------------------------------------------------------- high-gain neurons


def test_high_gain_neurons_are_visual_and_above_the_gain_quantile():
    # Gains 1..10 in scrambled order; the neuron of gain 10 (index 4) is not visual.
    truth = {
        "gain": [5.0, 1.0, 9.0, 3.0, 10.0, 7.0, 2.0, 8.0, 4.0, 6.0],
        "is_visual": [True, True, True, True, False, True, True, True, True, True],
    }
    # Linear quantiles of 1..10: q0.8 = 1 + 0.8 * 9 = 8.2 (gains 9, 10); q0.5 = 5.5 (6..10);
    # q0.9 = 9.1 (gain 10 only, which is not visual).
    expected = {0.8: [2], 0.5: [2, 5, 7, 9], 0.9: []}
    for quantile, indices in expected.items():
        mask = validation.high_gain_neurons(truth, quantile)
        assert mask.dtype == bool and mask.shape == (10,)
        assert np.flatnonzero(mask).tolist() == indices, quantile
    assert not validation.high_gain_neurons(truth).any()  # default quantile 0.9


# ----------------------------------------------------------------------------------- RF density


def test_rf_density_is_a_weighted_sum_of_gaussians_in_row_col_order():
    # One neuron at row 1, column 2 (sigma 1, weight 2) on a 3 x 4 grid.
    density = validation.rf_density(
        np.array([[1.0, 2.0]]), np.array([1.0]), np.array([2.0]), (3, 4)
    )
    assert density.shape == (3, 4)
    assert density[1, 2] == pytest.approx(2.0)
    assert density[0, 2] == pytest.approx(2.0 * math.exp(-0.5))  # one row away
    assert density[1, 3] == pytest.approx(2.0 * math.exp(-0.5))  # one column away
    assert density[2, 0] == pytest.approx(2.0 * math.exp(-2.5))  # (1 + 4) / 2
    assert density[0, 0] == pytest.approx(2.0 * math.exp(-2.5))
    # A second neuron (row 0, column 0, sigma 2, weight 0.5) adds its own envelope.
    both = validation.rf_density(
        np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([1.0, 2.0]), np.array([2.0, 0.5]), (3, 4)
    )
    assert both[0, 0] == pytest.approx(2.0 * math.exp(-2.5) + 0.5)
    assert both[1, 2] == pytest.approx(2.0 + 0.5 * math.exp(-5.0 / 8.0))
    assert both[2, 3] == pytest.approx(2.0 * math.exp(-1.0) + 0.5 * math.exp(-13.0 / 8.0))


# ------------------------------------------------------------------------------ drive footprints

# Four neurons with narrow RFs (sigma 0.3: a neighbour one pixel away gets exp(-1 / 0.18) ~ 0.4%)
# on a 4 x 5 grid; neuron 3 is not visual and always responds most strongly.
TRUTH = {
    "rf_center": np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 0.0], [0.0, 4.0]]),
    "rf_sigma": np.array([0.3, 0.3, 0.3, 0.3]),
    "is_visual": np.array([True, True, True, False]),
}
SHAPE = (4, 5)


def _pixels(*coordinates):
    mask = np.zeros(SHAPE, bool)
    for row, col in coordinates:
        mask[row, col] = True
    return mask


def test_drive_footprint_of_the_top_visual_neuron():
    responses = np.array([[5.0, 1.0, 2.0, 9.0], [1.0, 6.0, 2.0, 9.0]])
    # top_fraction 1/3 of 3 visual neurons: one neuron per stimulus (0, then 1). footprint
    # 0.25 of 20 pixels: the RF centre and its four equidistant neighbours (the plus shape).
    footprints = validation.drive_footprints(
        responses, TRUTH, SHAPE, top_fraction=1 / 3, footprint_fraction=0.25
    )
    assert footprints.shape == (2, *SHAPE) and footprints.dtype == bool
    plus_0 = _pixels((1, 1), (0, 1), (2, 1), (1, 0), (1, 2))
    plus_1 = _pixels((2, 3), (1, 3), (3, 3), (2, 2), (2, 4))
    np.testing.assert_array_equal(footprints[0], plus_0)
    np.testing.assert_array_equal(footprints[1], plus_1)
    # The smallest footprint (5% of 20 pixels) is the single centre pixel.
    single = validation.drive_footprints(
        responses, TRUTH, SHAPE, top_fraction=1 / 3, footprint_fraction=0.05
    )
    np.testing.assert_array_equal(single[0], _pixels((1, 1)))
    np.testing.assert_array_equal(single[1], _pixels((2, 3)))


def test_drive_footprint_of_two_neurons_and_clipped_negative_responses():
    # top_fraction 0.67 of 3: two neurons (0 and 1, responses 5 and 4); 10% of 20 pixels = the
    # two RF centres.
    two = validation.drive_footprints(
        np.array([[5.0, 4.0, 1.0, 9.0]]), TRUTH, SHAPE, top_fraction=0.67, footprint_fraction=0.1
    )
    np.testing.assert_array_equal(two[0], _pixels((1, 1), (2, 3)))
    # The top visual response is negative: its weight is clipped to 0, the density is 0
    # everywhere and every pixel reaches the quantile (an unclipped negative weight would carve
    # the RF out of the footprint instead).
    clipped = validation.drive_footprints(
        np.array([[-1.0, -2.0, -3.0, 9.0]]), TRUTH, SHAPE, top_fraction=1 / 3
    )
    assert clipped[0].all()


# ----------------------------------------------------------------------- occlusion footprint score


def test_occlusion_footprint_score_and_shifted_controls():
    # One-row maps: every circular shift is a column shift dx in 0..3 (dy is always 0).
    maps = np.array([[[4.0, 3.0, 2.0, 1.0]], [[1.0, 6.0, 2.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]]])
    footprints = np.array([[[1, 0, 0, 0]], [[0, 1, 0, 0]], [[0, 0, 1, 1]]], bool)
    result = validation.occlusion_footprint_score(maps, footprints, n_controls=400, seed=3)
    np.testing.assert_allclose(result["score"], [0.4, 0.6, 1.0])
    assert result["mean_score"] == pytest.approx(2.0 / 3.0)
    assert result["area_fraction"] == pytest.approx(4.0 / 12.0)
    # The control of a shift dx, for the three stimuli at once (the same shift for all):
    by_shift = {
        0: (0.4, 0.6, 1.0),
        1: (0.3, 0.2, 0.5),  # stimulus 2: columns 3, 0
        2: (0.2, 0.1, 0.0),
        3: (0.1, 0.1, 0.5),  # stimulus 2: columns 1, 2
    }
    control = result["control"]
    assert control.shape == (3, 400)
    shifts = []
    for column in control.T:
        match = [dx for dx, values in by_shift.items() if np.allclose(column, values)]
        assert len(match) == 1, column
        shifts.append(match[0])
    assert set(shifts) == {0, 1, 2, 3}  # 400 draws visit every shift
    # Percentile: controls strictly below the score (a zero shift ties, it does not count).
    unshifted = np.mean(np.array(shifts) == 0)
    np.testing.assert_allclose(result["percentile"], 100.0 * (1.0 - unshifted) * np.ones(3))
    # Averaged over all shifts the control is the footprint's share of the mass: 1/4, 1/4, 1/2.
    assert result["mean_control"] == pytest.approx(1.0 / 3.0, abs=0.05)
    # Three positive, distinct excesses: the exact one-sided signed-rank p-value is 1 / 2^3.
    assert result["p_value"] == pytest.approx(0.125)


def test_occlusion_footprint_score_of_flat_and_empty_maps():
    footprints = np.zeros((2, 3, 4), bool)
    footprints[0, 0, :2] = True
    footprints[1, 1:, 3] = True
    flat = validation.occlusion_footprint_score(np.ones((2, 3, 4)), footprints, n_controls=20)
    # A flat map puts the footprint's area share inside it, wherever the footprint is moved.
    np.testing.assert_allclose(flat["score"], [2 / 12, 2 / 12])
    np.testing.assert_allclose(flat["control"], 2 / 12)
    np.testing.assert_array_equal(flat["percentile"], [0.0, 0.0])
    empty = validation.occlusion_footprint_score(np.zeros((2, 3, 4)), footprints, n_controls=5)
    np.testing.assert_array_equal(empty["score"], [0.0, 0.0])
    assert np.all(empty["control"] == 0.0) and empty["p_value"] == 1.0


def test_flat_maps_carry_no_evidence_whatever_the_number_of_controls():
    # Eight flat maps: the score equals every shifted control exactly (2 / 12), so the excess
    # over the controls is 0 and nothing is significant.
    footprints = np.zeros((8, 3, 4), bool)
    footprints[:, 0, :2] = True
    for n_controls in (5, 20, 200):
        result = validation.occlusion_footprint_score(
            np.ones((8, 3, 4)), footprints, n_controls=n_controls
        )
        np.testing.assert_allclose(result["control"], 2 / 12)
        np.testing.assert_array_equal(result["percentile"], 0.0)
        assert result["p_value"] == 1.0, n_controls  # 1 / 2^8 for 20 and 200 controls
