"""SSIM in JAX against scikit-image, the independent oracle."""

import jax
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dina_jax.analysis.ssim import batched_ssim, ssim


def _pair(rng, shape=(16, 64)):
    x = rng.normal(size=shape).astype(np.float32)
    y = (0.7 * x + 0.5 * rng.normal(size=shape)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("win_size", [3, 7])
def test_matches_skimage_with_reference_range(win_size):
    rng = np.random.default_rng(0)
    x, y = _pair(rng)
    expected = structural_similarity(x, y, win_size=win_size, data_range=float(x.max() - x.min()))
    np.testing.assert_allclose(float(ssim(x, y, win_size=win_size)), expected, rtol=1e-5, atol=1e-6)


def test_matches_skimage_with_explicit_range_and_offset_maps():
    rng = np.random.default_rng(1)
    x, y = _pair(rng, shape=(20, 33))
    x, y = x + 3.0, 2.0 * y - 1.0
    expected = structural_similarity(x, y, win_size=5, data_range=4.0)
    np.testing.assert_allclose(float(ssim(x, y, win_size=5, data_range=4.0)), expected, rtol=1e-5)


def test_identical_maps_give_one_and_batched_form_is_per_pair():
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(4, 16, 64)).astype(np.float32)
    ys = xs + rng.normal(size=xs.shape).astype(np.float32) * np.arange(4)[:, None, None]
    values = np.asarray(jax.jit(batched_ssim)(xs, ys))
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    for i in range(4):
        expected = structural_similarity(xs[i], ys[i], data_range=float(np.ptp(xs[i])))
        assert values[i] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert np.all(np.diff(values) < 0)  # more noise, lower similarity


def test_gradient_is_finite_and_rejects_bad_window():
    rng = np.random.default_rng(3)
    x, y = _pair(rng)
    grad = jax.grad(lambda b: ssim(x, b, win_size=3))(y)
    assert np.all(np.isfinite(np.asarray(grad)))
    with pytest.raises(ValueError, match="win_size must be odd and at most 16, got 4"):
        ssim(x, y, win_size=4)
