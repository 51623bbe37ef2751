"""Blobs, shape descriptors and STI (App. A.2-A.3) on images whose answer is known."""

import math

import numpy as np
import pytest
from skimage import measure

from dina_jax.analysis import blobs

H, W = 68, 270


def _blob_map(rows=slice(10, 58), cols=slice(100, 170)):
    rf = np.zeros((H, W))
    rf[rows, cols] = 1.0
    return rf


def _random_walk_texture(seed, n_walks=12, steps=150):
    """Lattice random walks inside the blob: many short, winding, differently oriented edges."""
    rng = np.random.default_rng(seed)
    image = np.zeros((H, W))
    moves = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])
    for _ in range(n_walks):
        p = np.array([rng.integers(12, 56), rng.integers(105, 165)])
        for _ in range(steps):
            p = np.clip(p + moves[rng.integers(4)], [10, 100], [57, 169])
            image[p[0], p[1]] = 1.0
    return image


def test_straight_edge_is_shape():
    image = np.zeros((H, W))
    image[:, 135:] = 1.0
    (blob,) = blobs.extract_blobs(_blob_map(), image)
    assert blob.area == 48 * 70
    assert blob.n_segments == 1
    assert blob.coherence == pytest.approx(1.0)
    assert blob.tortuosity == pytest.approx(1.0, abs=1e-6)
    assert blob.sti == pytest.approx(1.0, abs=1e-5)


def test_oblique_edge_is_shape():
    yy, xx = np.mgrid[0:H, 0:W]
    image = (xx - 100 > yy).astype(float)
    (blob,) = blobs.extract_blobs(_blob_map(), image)
    assert blob.coherence > 0.99 and blob.tortuosity < 1.05
    assert blob.sti > 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_walk_texture_is_texture(seed):
    (blob,) = blobs.extract_blobs(_blob_map(), _random_walk_texture(seed))
    assert blob.n_segments > 20  # Fragmented.
    assert blob.tortuosity > 1.2
    assert blob.coherence < 0.3
    assert blob.sti < -0.2


def test_polyline_tortuosity_is_exact():
    skeleton = np.zeros((40, 60), bool)
    # A "V" of two diagonals: path 20 sqrt 2, chord 20 -> T = sqrt 2.
    for i in range(11):
        skeleton[5 + i, 2 + i] = True
        skeleton[5 + i, 22 - i] = True
    # A horizontal run of 10 then a diagonal of 10: path 10 + 10 sqrt 2, chord sqrt(10^2 + 20^2).
    skeleton[25, 30:41] = True
    for i in range(1, 11):
        skeleton[25 + i, 40 + i] = True
    seg = blobs.skeleton_segments(skeleton)
    order = np.argsort(seg.path_length)
    t = blobs.tortuosity(seg.path_length, seg.chord, eps=0.0)[order]
    assert seg.n_components == 2 and not seg.is_cycle.any()
    np.testing.assert_allclose(seg.path_length[order], [10 + 10 * math.sqrt(2), 20 * math.sqrt(2)])
    np.testing.assert_allclose(t, [(10 + 10 * math.sqrt(2)) / math.sqrt(500), math.sqrt(2)])


def test_skeleton_segments_split_at_junctions():
    skeleton = np.zeros((30, 30), bool)
    skeleton[15, 2:28] = True  # A horizontal bar ...
    skeleton[2:15, 15] = True  # ... with a vertical branch: a T junction, three segments.
    seg = blobs.skeleton_segments(skeleton)
    assert len(seg.path_length) == 3
    assert seg.path_length.sum() == pytest.approx(25 + 13)


def test_axial_and_literal_orientation_differ_for_opposite_directions():
    # Two parallel edges whose endpoints happen to be listed in opposite order.
    theta = np.array([0.0, math.pi])
    assert blobs.orientation_coherence(theta, "axial") == pytest.approx(1.0)
    assert blobs.orientation_coherence(theta, "literal") == pytest.approx(0.0, abs=1e-12)
    # Perpendicular edges are incoherent in the axial form only.
    theta = np.array([0.0, math.pi / 2])
    assert blobs.orientation_coherence(theta, "axial") == pytest.approx(0.0, abs=1e-12)
    assert blobs.orientation_coherence(theta, "literal") == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError, match="orientation must be one of .* got 'circular'"):
        blobs.orientation_coherence(theta, "circular")


def test_tex_alpha_default_gives_half_texture_at_sqrt2():
    assert blobs.texture_strength(math.sqrt(2.0)) == pytest.approx(0.5)
    assert blobs.texture_strength(1.0) == 0.0
    from dina_jax.config import get_base_config

    assert get_base_config().analysis.blobs.tex_alpha == pytest.approx(
        blobs.DEFAULT_TEX_ALPHA, abs=1e-4
    )


def test_blobs_are_connected_components_above_threshold():
    rng = np.random.default_rng(3)
    rf = rng.random((H, W))
    found = blobs.extract_blobs(rf, rng.random((H, W)), threshold=0.95)
    labels = measure.label(rf > 0.95, connectivity=2)
    assert len(found) == labels.max()
    assert sum(b.area for b in found) == int((rf > 0.95).sum())
    union = np.zeros((H, W), bool)
    for b in found:
        assert not (union & b.mask).any()
        union |= b.mask
    np.testing.assert_array_equal(union, rf > 0.95)


def test_flat_blob_has_nan_descriptors_and_table_counts():
    rf = np.zeros((H, W))
    rf[5:15, 5:25] = 1.0
    rf[40:60, 200:260] = 0.8
    image = np.zeros((H, W))
    image[:, 230:] = 1.0  # Edges only in the second blob.
    found = blobs.extract_blobs(rf, image)
    assert [b.area for b in found] == [200, 1200]
    assert np.isnan(found[0].sti) and found[0].n_segments == 0 and found[0].edge_length == 0
    assert found[1].sti == pytest.approx(1.0, abs=1e-5)
    table = blobs.blob_table([found, [], found[1:]])
    np.testing.assert_array_equal(table["count"], [2, 0, 1])
    np.testing.assert_array_equal(table["image"], [0, 0, 2])
    np.testing.assert_array_equal(table["area"], [200, 1200, 1200])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"one \(H, W\) shape, got \(68, 270\) and \(68, 269\)"):
        blobs.extract_blobs(np.zeros((H, W)), np.zeros((H, W - 1)))


def test_blob_otsu_finds_weak_texture_next_to_strong_contour():
    rf = np.zeros((H, W))
    rf[10:58, 100:170] = 1.0  # Blob over a faint texture ...
    image = 0.05 * _random_walk_texture(0)
    image[:, 220:] += 10.0  # ... in an image with one very strong contour elsewhere.
    per_blob = blobs.extract_blobs(rf, image)[0]
    image_wide = blobs.extract_blobs(rf, image, edge_binarization="image_otsu")[0]
    assert per_blob.n_segments > 20 and per_blob.sti < 0
    assert image_wide.n_segments == 0 and np.isnan(image_wide.sti)


def test_blob_otsu_floor_rejects_blobs_flatter_than_the_image():
    rng = np.random.default_rng(4)
    image = rng.random((H, W))  # Strong gradients everywhere ...
    image[10:58, 100:170] = 0.5 + 1e-3 * rng.random((48, 70))  # ... but a nearly flat patch.
    magnitude = blobs.sobel_magnitude(image)
    mask = np.zeros((H, W), bool)
    mask[15:53, 105:165] = True
    assert not blobs.binarize_edges(magnitude, mask).any()
    with pytest.raises(ValueError, match="edge_binarization must be one of .* got 'canny'"):
        blobs.binarize_edges(magnitude, mask, "canny")
