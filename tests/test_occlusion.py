"""Gaussian-occlusion RF maps (App. A.1) against a hand-built feature function and a numpy loop."""

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


def test_bad_arguments_raise(image):
    with pytest.raises(ValueError, match="measure"):
        occlusion.occlusion_map(region_features, image, measure="l2")
    with pytest.raises(ValueError, match="one"):
        occlusion.occlusion_map(region_features, image[None])
