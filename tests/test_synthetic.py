"""The simulated V1: files in the release's formats, stimulus controls, ground truth, signal."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from dina_jax.data import pipeline, simulated_images, simulated_neurons, stringer, synthetic
from dina_jax.evaluation import baseline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """200 neurons x 300 images, 2 mice, natural images, v5."""
    out = tmp_path_factory.mktemp("small")
    return synthetic.generate(out, n_neurons=200, n_images=300, n_mice=2, seed=1)


def test_cli_writes_loadable_v73_files(tmp_path):
    out = tmp_path / "sim"
    command = [sys.executable, "-m", "dina_jax.data.synthetic", str(out), "--neurons", "12"]
    command += ["--images", "20", "--mice", "2", "--stimset", "8D", "--format", "v73"]
    command += ["--seed", "5"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = {
        "images_natimg2800_8D_SIM0_2026-01-01.mat",
        "images_natimg2800_8D_SIM1_2026-01-01.mat",
        "natimg2800_8D_SIM0_2026-01-01.mat",
        "natimg2800_8D_SIM1_2026-01-01.mat",
        "natimg2800_8D_SIM0_2026-01-01_groundtruth.npz",
        "natimg2800_8D_SIM1_2026-01-01_groundtruth.npz",
        stringer.CLASS_ASSIGNMENT_FILE,  # Each image's source photograph as its class.
    }
    assert set(os.listdir(out)) == expected  # No temp files left behind.
    for name in expected:
        assert str(out / name) in result.stdout
    images = stringer.load_images(out / "images_natimg2800_8D_SIM1_2026-01-01.mat")
    recording = stringer.load_recording(
        out / "natimg2800_8D_SIM1_2026-01-01.mat", n_spont_pcs=2, n_images=len(images)
    )
    assert images.shape == (20, 68, 270)
    assert recording.n_images == 20  # Every image shown twice.


@pytest.mark.parametrize(
    ("stimset", "recording", "images"),
    [
        ("natimg2800", "natimg2800_SIM3_2026-01-01.mat", "images_natimg2800_all.mat"),
        ("white", "natimg2800_white_SIM3_2026-01-01.mat", "images_natimg2800_white_all.mat"),
        ("8D", "natimg2800_8D_SIM3_2026-01-01.mat", "images_natimg2800_8D_SIM3_2026-01-01.mat"),
    ],
)
def test_file_names_follow_the_release(stimset, recording, images):
    assert synthetic.recording_filename(stimset, 3) == recording
    assert synthetic.images_filename(stimset, 3) == images
    assert synthetic.groundtruth_filename(recording) == recording[:-4] + "_groundtruth.npz"


def test_files_in_release_format(small):
    assert len(small["recordings"]) == 2 and small["images"][0] == small["images"][1]
    mt = scipy.io.loadmat(small["recordings"][1])
    resp = mt["stim"][0]["resp"][0]
    istim = mt["stim"][0]["istim"][0].ravel()
    spont = mt["stim"][0]["spont"][0]
    assert resp.shape[1] == spont.shape[1] == 200 and resp.dtype == np.float32
    assert resp.min() >= 0  # Deconvolved activity is non-negative.
    counts = np.bincount(istim.astype(int), minlength=302)
    assert np.all(counts[1:301] == 2) and counts[301] > 0  # Two repeats, blanks = 301.
    assert counts[0] == 0 and counts.size == 302
    assert not np.all(np.diff(istim) >= 0)  # Presentation order is shuffled.
    redcell = np.array([x.item() for x in mt["stat"]["redcell"][0]])
    assert 0 < redcell.sum() < 40
    imgs = scipy.io.loadmat(small["images"][0])["imgs"]
    assert imgs.shape == (68, 270, 300) and imgs.dtype == np.uint8
    assert 110 < imgs.mean() < 145 and 35 < imgs.std() < 65


def test_mice_differ_but_share_images(small):
    a, b = (scipy.io.loadmat(p)["stim"][0]["resp"][0] for p in small["recordings"])
    assert a.shape[1] == b.shape[1]
    assert not np.allclose(a[: min(len(a), len(b))], b[: min(len(a), len(b))])


def test_generation_is_deterministic(tmp_path):
    kwargs = dict(n_neurons=15, n_images=12, seed=9)
    paths = [synthetic.generate(tmp_path / str(i), **kwargs) for i in range(2)]
    arrays = [stringer.read_raw_recording(p["recordings"][0]) for p in paths]
    np.testing.assert_array_equal(arrays[0].resp, arrays[1].resp)
    np.testing.assert_array_equal(arrays[0].istim, arrays[1].istim)
    np.testing.assert_array_equal(
        stringer.load_images(paths[0]["images"][0]), stringer.load_images(paths[1]["images"][0])
    )
    other = synthetic.generate(tmp_path / "other", n_neurons=15, n_images=12, seed=10)
    assert not np.array_equal(
        stringer.read_raw_recording(other["recordings"][0]).resp, arrays[0].resp
    )


def _radial_amplitude(images):
    spectrum = np.abs(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True))).mean(0)
    fy = np.fft.fftfreq(images.shape[1])[:, None]
    fx = np.fft.fftfreq(images.shape[2])[None, :]
    radius = np.hypot(fy, fx)
    low = spectrum[(radius > 0.01) & (radius < 0.05)].mean()
    high = spectrum[(radius > 0.2) & (radius < 0.4)].mean()
    return low / high


def test_whitening_flattens_the_mean_amplitude_spectrum():
    rng = np.random.default_rng(0)
    natural = simulated_images.natural_images(120, rng).astype(np.float64)
    white = simulated_images.whiten_images(natural).astype(np.float64)
    assert _radial_amplitude(natural) > 10  # Natural images: ~1/f amplitude.
    assert 0.7 < _radial_amplitude(white) < 1.4  # Whitened: flat.
    assert abs(white.mean() - 128) < 3 and 40 < white.std() < 60


def test_8d_images_live_in_8_dimensions():
    rng = np.random.default_rng(0)
    natural = simulated_images.natural_images(60, rng)
    low = simulated_images.low_dim_images(natural, 8, rng).reshape(60, -1).astype(np.float64)
    singular = np.linalg.svd(low - low.mean(0), compute_uv=False)
    assert singular[8] / singular[0] < 0.03  # Only uint8 rounding/rare clipping beyond 8 PCs.
    assert singular[7] / singular[0] > 0.05
    # The 8 dimensions are the top PCs of the natural set: the projection explains the images
    # better than any other 8-dimensional subspace would, so it beats a random one by far.
    x = natural.reshape(60, -1).astype(np.float64)
    x -= x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    top = vt[:8].T
    captured = np.linalg.norm((low - low.mean(0)) @ top) / np.linalg.norm(low - low.mean(0))
    assert captured > 0.99


def test_ground_truth_contents(small):
    truth = np.load(synthetic.groundtruth_filename(small["recordings"][0]))
    n = 200
    for key in ("rf_center", "rf_sigma", "gain", "is_visual", "redcell", "is_complex"):
        assert truth[key].shape[0] == n
    assert truth["rf_center"].shape == (n, 2)
    rows, cols = truth["rf_center"].T
    assert rows.min() >= 0 and rows.max() <= 67 and cols.min() >= 0 and cols.max() <= 269
    assert cols.max() - cols.min() > 150  # Spread over the three screens.
    assert truth["is_visual"].dtype == bool and 0.5 < truth["is_visual"].mean() < 0.9
    assert np.all(truth["gain"][~truth["is_visual"]] == 0)
    visual_gain = truth["gain"][truth["is_visual"]]
    assert np.all(visual_gain > 0)
    assert np.mean(visual_gain) > 1.3 * np.median(visual_gain)  # Log-normal: heavy right tail.


def test_gabor_filters_sit_at_their_rf_centres():
    rng = np.random.default_rng(2)
    neurons = simulated_neurons.make_neurons(30, rng, simulated_neurons.SimulationParams())
    bank = simulated_neurons.gabor_bank(neurons, step=1)  # (2, N, 68 * 270)
    energy = (bank[0] ** 2 + bank[1] ** 2).reshape(30, 68, 270)
    rows, cols = np.mgrid[0:68, 0:270]
    weight = energy / energy.sum(axis=(1, 2), keepdims=True)
    centroid = np.stack([(weight * rows).sum((1, 2)), (weight * cols).sum((1, 2))], axis=1)
    inside = np.all((neurons["rf_center"] > 12) & (neurons["rf_center"] < [55, 257]), axis=1)
    np.testing.assert_allclose(centroid[inside], neurons["rf_center"][inside], atol=0.6)


def test_reliable_neurons_are_the_strong_visual_ones(small):
    recording = stringer.load_recording(small["recordings"][0], n_spont_pcs=8, n_images=300)
    truth = pipeline.load_ground_truth(small["recordings"][0], recording.neuron_index)
    a, b = recording.halves - recording.halves.mean(axis=1, keepdims=True)
    reliability = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))  # Per neuron.
    strong = truth["is_visual"] & (truth["gain"] > np.quantile(truth["gain"], 0.8))
    assert reliability[strong].mean() > 0.15
    assert abs(reliability[~truth["is_visual"]].mean()) < 0.05
    assert np.corrcoef(truth["gain"], reliability)[0, 1] > 0.5


def test_default_size_decodes_far_above_chance_but_not_perfectly(tmp_path):
    # The realism target of the simulator: 2,000 neurons x 2,800 images, 280 test images.
    paths = synthetic.generate(tmp_path, n_neurons=2000, n_images=2800, seed=0)
    recording = stringer.load_recording(paths["recordings"][0], n_images=2800)
    split = pipeline.make_split(recording.n_images, 0)
    accuracy = pipeline.repeat_decoding_accuracy(recording.halves, split.test)
    assert 0.2 < accuracy["top1"] < 0.7, accuracy
    assert accuracy["top10"] > 0.6
    # Mostly complex cells (layer 2/3): a linear read-out of the pixels recovers only part of what
    # the responses carry, well under the repeat-to-repeat ceiling (docs/decisions.md).
    images = stringer.load_images(paths["images"][0])[recording.image_index]
    linear = baseline.linear_baseline(
        images, recording.responses, split, n_pcs=100, alphas=(1e1, 1e2, 1e3), topk=(1, 5, 10)
    )
    assert 0.05 < linear["top1"] < 0.7 * accuracy["top1"], (linear["top1"], accuracy["top1"])
