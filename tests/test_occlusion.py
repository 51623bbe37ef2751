"""Gaussian-occlusion RF maps (App. A.1) against a hand-built feature function and a numpy loop;
the repeats of a stochastic feature function against the mean of per-key deterministic maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from dina_jax.analysis import occlusion

H, W = 68, 270
ROWS, COLS = slice(20, 40), slice(100, 140)  # The only image region the feature function reads.


def region_features(images):
    """(B, 68, 270) -> (B, 16, 64): a map that depends on the pixels of ROWS x COLS only."""
    patch = images[:, ROWS, COLS]
    return jax.image.resize(patch, (images.shape[0], 16, 64), "linear") ** 2


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((H, W)).astype(np.float32)


def _distance_to_region():
    outside = np.ones((H, W), bool)
    outside[ROWS, COLS] = False
    return ndimage.distance_transform_cdt(outside, metric="chessboard")


@pytest.mark.parametrize("measure", ["ssim", "cos"])
def test_map_peaks_in_region_and_is_zero_far_away(image, measure):
    rf = np.asarray(occlusion.occlusion_map(region_features, image, measure=measure))
    assert rf.shape == (H, W)
    assert rf.min() == 0.0 and rf.max() == pytest.approx(1.0)
    distance = _distance_to_region()
    peak = np.unravel_index(np.argmax(rf), rf.shape)
    assert distance[peak] == 0, f"peak {peak} outside the region"
    # A centre changes the features only if its 25 x 25 window (|d| <= 12) touches the region, and a
    # pixel is covered only by centres within 12 px: beyond 24 px the map must be exactly 0.
    assert np.all(rf[distance > 24] < 1e-6)
    assert rf[distance == 0].mean() > 0.3


@pytest.mark.parametrize("measure", ["ssim", "cos"])
def test_matches_per_centre_numpy_loop(image, measure):
    fast = np.asarray(occlusion.occlusion_map(region_features, image, stride=6, measure=measure))
    slow, _ = occlusion.occlusion_map_loop(region_features, image, stride=6, measure=measure)
    np.testing.assert_allclose(fast, slow, atol=2e-4)


def test_batch_size_does_not_change_the_result(image):
    a = occlusion.occlusion_map(region_features, image, stride=4, batch_size=7)
    b = occlusion.occlusion_map(region_features, image, stride=4, batch_size=1000)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_occlude_matches_equation_11():
    img = np.random.default_rng(1).random((H, W)).astype(np.float32)
    rows, cols = occlusion.occlusion_grid(H, W, 2)
    assert (len(rows), len(cols)) == (34, 135)  # 4,590 centres.
    gy, iny = occlusion.gaussian_profiles(rows, H, 4.0)
    gx, inx = occlusion.gaussian_profiles(cols, W, 4.0)
    r, c = 1, 3  # Centre (2, 6): the window is clipped by the top border.
    out = np.asarray(occlusion.occlude(jnp.asarray(img), gy[r], gx[c], iny[r], inx[c], 1.0))
    yy, xx = np.mgrid[0:H, 0:W]
    window = (np.abs(yy - 2) <= 12) & (np.abs(xx - 6) <= 12)
    gauss = np.exp(-((yy - 2) ** 2 + (xx - 6) ** 2) / 32.0) * window
    assert window.sum() == 15 * 19  # Omega = window n image.
    expected = (1 - gauss) * img + gauss * img[window].mean()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[2, 6] == pytest.approx(img[window].mean(), abs=1e-6)  # Peak fully occluded.


def test_batched_form_equals_single_maps(image):
    images = np.stack([image, image[::-1, ::-1].copy()])
    maps = np.asarray(occlusion.occlusion_maps(region_features, images, stride=8))
    for i in range(2):
        single = np.asarray(occlusion.occlusion_map(region_features, images[i], stride=8))
        np.testing.assert_allclose(maps[i], single, atol=1e-6)


def test_partial_feature_fn_keeps_params_traced(image):
    def apply(scale, images):
        return scale * region_features(images)

    fn = jax.tree_util.Partial(apply, jnp.float32(2.0))
    a = np.asarray(occlusion.occlusion_map(fn, image, stride=8))
    b = np.asarray(occlusion.occlusion_map(region_features, image, stride=8))
    np.testing.assert_allclose(a, b, atol=1e-5)  # SSIM and cos are scale-invariant here.


def test_stochastic_feature_fn_averages_repeats(image):
    def noisy(images, key):
        noise = 0.05 * jax.random.normal(key, (images.shape[0], 16, 64))
        return region_features(images) + noise

    rf = np.asarray(
        occlusion.occlusion_map(noisy, image, stride=8, repeats=3, rng=jax.random.key(0))
    )
    assert rf.min() == 0.0 and rf.max() == pytest.approx(1.0)
    peak = np.unravel_index(np.argmax(rf), rf.shape)
    assert _distance_to_region()[peak] <= 12


def _noisy_features(images, key):
    """region_features plus noise whose level is drawn per call, so the repeats' raw maps have
    clearly different ranges (normalizing before or after averaging then differs)."""
    k_scale, k_noise = jax.random.split(key)
    scale = jax.random.uniform(k_scale, (), minval=0.02, maxval=0.5)
    return region_features(images) + scale * jax.random.normal(k_noise, (images.shape[0], 16, 64))


def test_repeats_average_the_per_key_normalized_maps(image):
    """App. A.1: the map is the average of the N repeats' maps (each normalized by Eq. 15), min-max
    normalized again. The oracle rebuilds each repeat as a deterministic map with its key fixed.

    Key use (occlusion._occlusion_map_jit / _perturbation_grid): repeat r gets
    k_r = split(rng, repeats)[r]; inside a repeat split(k_r, n_chunks + 1) gives [0] to the intact
    image and [1 + c] to chunk c. One chunk here (batch_size >= centres): [0] and [1].
    """
    stride, repeats = 8, 3
    n_centres = len(range(0, H, stride)) * len(range(0, W, stride))  # 9 x 34 = 306
    key = jax.random.key(0)
    rf = np.asarray(
        occlusion.occlusion_map(
            _noisy_features, image, stride=stride, repeats=repeats, rng=key, batch_size=n_centres
        )
    )

    def fixed(intact_key, chunk_key, images):
        # Shapes are static: a batch of one is the intact image, the chunk has every centre.
        return _noisy_features(images, intact_key if images.shape[0] == 1 else chunk_key)

    per_key = []
    for k in jax.random.split(key, repeats):
        # A Partial keeps the keys traced: one compilation serves the three repeats.
        fn = jax.tree_util.Partial(fixed, *jax.random.split(k, 2))
        per_key.append(
            np.asarray(occlusion.occlusion_map(fn, image, stride=stride, batch_size=n_centres))
        )
    per_key = np.stack(per_key).astype(np.float64)
    for one in per_key:  # Eq. 15 per repeat
        assert one.min() == 0.0 and one.max() == pytest.approx(1.0)
    # The repeats differ (else the test could not tell a single repeat from their average).
    assert np.abs(per_key[0] - per_key[1]).max() > 0.05
    mean = per_key.mean(axis=0)
    expected = (mean - mean.min()) / (mean.max() - mean.min())
    np.testing.assert_allclose(rf, expected, atol=1e-5)
    assert np.abs(rf - per_key[0]).max() > 0.02


def test_bad_arguments_raise(image):
    with pytest.raises(ValueError, match="measure must be one of .* got 'l2'"):
        occlusion.occlusion_map(region_features, image, measure="l2")
    with pytest.raises(ValueError, match=r"expects one \(H, W\) image, got shape \(1, 68, 270\)"):
        occlusion.occlusion_map(region_features, image[None])
