"""PCA variance spectra (Fig. 4b): eigenvalues against numpy's covariance, exponents against a
planted power law."""

import numpy as np
import pytest

from dina_jax.analysis import spectra


def _power_law_samples(n_samples, n_features, alpha, seed):
    """Gaussian samples whose covariance has eigenvalues k^-alpha in a random orthonormal basis."""
    rng = np.random.default_rng(seed)
    eigenvalues = np.arange(1, n_features + 1, dtype=np.float64) ** -alpha
    basis, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    z = rng.standard_normal((n_samples, n_features)) * np.sqrt(eigenvalues)
    return z @ basis.T + 3.0  # An offset the centring must remove.


@pytest.mark.parametrize("shape", [(40, 15), (12, 30)])  # Both the n > d and n < d paths.
def test_spectrum_matches_numpy_covariance(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    expected = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    expected = expected[: min(shape[0] - 1, shape[1])]
    np.testing.assert_allclose(spectra.pca_spectrum(x), expected / expected.sum(), atol=1e-12)


def test_spectrum_flattens_trailing_axes():
    x = np.random.default_rng(1).standard_normal((20, 4, 6))
    np.testing.assert_allclose(spectra.pca_spectrum(x), spectra.pca_spectrum(x.reshape(20, 24)))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_recovers_planted_power_law_exponent(alpha):
    x = _power_law_samples(4000, 200, alpha, seed=2)
    var, fitted = spectra.variance_spectrum(x, fit_range=(5, 60))
    assert var.shape == (200,)
    assert abs(fitted - alpha) < 0.05
    np.testing.assert_allclose(var.sum(), 1.0)
    assert np.all(np.diff(var) <= 0)


def test_fit_power_law_is_exact_on_a_pure_power_law_and_clips_the_range():
    var = np.arange(1, 51, dtype=np.float64) ** -1.3
    alpha, intercept, used = spectra.fit_power_law(var, (10, 500))
    assert used == (10, 50)
    assert alpha == pytest.approx(1.3, abs=1e-10)
    assert intercept == pytest.approx(0.0, abs=1e-9)


def test_degenerate_input_gives_finite_values():
    var, alpha = spectra.variance_spectrum(np.ones((10, 5)))
    assert np.all(var == 0) and alpha == 0.0


def test_round_off_eigenvalues_of_a_low_rank_sample_are_zero():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((60, 5)) @ rng.standard_normal((5, 40))).astype(np.float32)
    var = spectra.pca_spectrum(x)
    assert np.all(var[:5] > 1e-3) and np.all(var[5:] == 0)
