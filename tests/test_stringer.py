"""Loaders of the Stringer et al. (2019) files: formats, preprocessing, cache, bad input."""

from __future__ import annotations

import math
import os
import warnings

import h5py
import numpy as np
import pytest
import scipy.io

from dina_jax.data import mat_writer, stringer, synthetic
from dina_jax.data.stringer import DataError

N_SPONT_PCS = 4


# ------------------------------------------------------------------------------ helpers


def write_recording(path, resp, istim, spont, *, med=None, redcell=None, fmt="v5", stim=None):
    """Writes a recording file in the release's layout from explicit arrays."""
    n_neurons = resp.shape[1]
    med = np.zeros((n_neurons, 3)) if med is None else med
    redcell = np.zeros(n_neurons) if redcell is None else redcell
    if stim is None:
        stim = {"resp": resp, "istim": np.asarray(istim, dtype=np.float64), "spont": spont}
    variables = {"stim": stim, "med": med, "stat": mat_writer.StructArray({"redcell": redcell})}
    mat_writer.write_mat(os.fspath(path), variables, fmt)
    return os.fspath(path)


def random_recording(rng, n_images=6, n_neurons=9, n_spont=30):
    """Repeats 3, 1, 4, 2, 2, 5 (image 2 shown once: dropped) plus blanks, shuffled."""
    repeats = [3, 1, 4, 2, 2, 5][:n_images]
    blanks = [np.full(3, n_images + 1)]
    istim = np.concatenate([np.full(r, i + 1) for i, r in enumerate(repeats)] + blanks)
    istim = rng.permutation(istim)
    resp = rng.gamma(2.0, 1.0, (istim.size, n_neurons)).astype(np.float32)
    spont = rng.gamma(2.0, 1.0, (n_spont, n_neurons)).astype(np.float32)
    return resp, istim, spont


def oracle(resp, istim, spont, n_pcs):
    """loadProc2800 + compute_means, written from the formulas with loops and a full SVD."""
    resp = np.array(resp, dtype=np.float64)
    blank = istim.max()
    resp, istim = resp[istim != blank], istim[istim != blank]
    resp[np.isnan(resp)] = 0.0
    mu = spont.mean(0)
    sd = np.sqrt(((spont - mu) ** 2).mean(0)) + 1e-6
    z = (resp - mu) / sd
    _, _, vt = np.linalg.svd((spont - mu) / sd, full_matrices=False)
    v = vt[:n_pcs].T
    z = z - z @ v @ v.T
    z = z - z.mean(0)
    rows, first, second, ids = [], [], [], []
    for image in sorted(set(istim.tolist())):
        trials = np.flatnonzero(istim == image)  # Presentation order.
        n = trials.size
        if n < 2:
            continue
        ids.append(image - 1)
        rows.append(z[trials].mean(0))
        first.append(z[trials[: n // 2]].mean(0))
        start = math.ceil(n / 2)
        second.append(z[trials[start : start + n // 2]].mean(0))
    return np.array(rows), np.array([first, second]), np.array(ids)


def assert_one_line_error(excinfo, path, fragment):
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{os.fspath(path)}: "), message
    assert fragment in message, message


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """The same small simulated recording written as v5 and as v7.3."""
    root = tmp_path_factory.mktemp("sim")
    out = {}
    for fmt in ("v5", "v73"):
        out[fmt] = synthetic.generate(root / fmt, n_neurons=40, n_images=60, seed=3, fmt=fmt)
    return out


# ------------------------------------------------------------------------------ formats


def test_v5_and_v73_files_give_identical_recordings(simulated):
    recordings = [
        stringer.load_recording(
            simulated[fmt]["recordings"][0], n_spont_pcs=N_SPONT_PCS, n_images=60
        )
        for fmt in ("v5", "v73")
    ]
    a, b = recordings
    assert a.name == b.name == "natimg2800_SIM0_2026-01-01"
    for field in ("responses", "halves", "image_index", "neuron_xyz", "neuron_index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    images = [stringer.load_images(simulated[fmt]["images"][0]) for fmt in ("v5", "v73")]
    np.testing.assert_array_equal(images[0], images[1])
    assert images[0].shape == (60, 68, 270) and images[0].dtype == np.float32


def test_v73_file_has_matlab_layout(simulated):
    path = simulated["v73"]["recordings"][0]
    with open(path, "rb") as f:
        header = f.read(128)
    assert header.startswith(b"MATLAB 7.3 MAT-file")
    assert scipy.io.matlab.matfile_version(path) == (2, 0)
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        assert f["stim"].attrs["MATLAB_class"] == b"struct"
        resp = f["stim/resp"]
        raw = scipy.io.loadmat(simulated["v5"]["recordings"][0])
        v5_resp = raw["stim"][0]["resp"][0]
        assert resp.shape == v5_resp.shape[::-1]  # Stored transposed.
        assert h5py.check_dtype(ref=f["stat/redcell"].dtype) is not None
        assert f["stat/redcell"].shape == (40, 1)  # A 1 x N struct array, transposed.


def test_release_access_pattern_works_on_simulated_v5(simulated):
    # The release notes' Python snippet, verbatim indexing.
    mt = scipy.io.loadmat(simulated["v5"]["recordings"][0])
    resp = mt["stim"][0]["resp"][0]
    istim = mt["stim"][0]["istim"][0]
    spont = mt["stim"][0]["spont"][0]
    assert resp.shape[1] == spont.shape[1] == 40
    assert istim.shape == (resp.shape[0], 1)
    assert mt["med"].shape == (40, 3)
    assert mt["stat"].shape == (1, 40)
    imgs = scipy.io.loadmat(simulated["v5"]["images"][0])["imgs"]
    assert imgs.shape == (68, 270, 60) and imgs.dtype == np.uint8


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"squeeze_me": True},
        {"struct_as_record": False},
        {"squeeze_me": True, "struct_as_record": False},
        {"simplify_cells": True},
    ],
)
def test_v5_parsing_is_robust_to_loadmat_nesting(simulated, options):
    path = simulated["v5"]["recordings"][0]
    reference = stringer.read_raw_recording(path)
    parsed = stringer._parse_v5_recording(scipy.io.loadmat(path, **options), path)
    np.testing.assert_array_equal(parsed.resp, reference.resp)
    np.testing.assert_array_equal(parsed.istim.reshape(-1), reference.istim)
    np.testing.assert_array_equal(parsed.spont, reference.spont)
    np.testing.assert_array_equal(parsed.redcell, reference.redcell)


# ------------------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_preprocessing_matches_numpy_oracle(tmp_path, fmt):
    rng = np.random.default_rng(0)
    resp, istim, spont = random_recording(rng)
    resp[2, 3] = np.nan
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont, fmt=fmt)
    with pytest.warns(UserWarning, match="1 NaN values in stim.resp set to 0"):
        recording = stringer.load_recording(path, n_spont_pcs=3, n_images=6)
    responses, halves, ids = oracle(resp, istim, spont.astype(np.float64), 3)
    np.testing.assert_array_equal(recording.image_index, ids)
    assert list(ids) == [0, 2, 3, 4, 5]  # Image 2 (shown once) dropped.
    np.testing.assert_allclose(recording.responses, responses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(recording.halves, halves, rtol=1e-5, atol=1e-5)
    assert recording.responses.dtype == np.float32 and recording.halves.dtype == np.float32


def test_preprocessing_oracle_on_simulated_recording(simulated):
    path = simulated["v5"]["recordings"][0]
    mt = scipy.io.loadmat(path)
    keep = np.array([float(x.item()) == 0 for x in mt["stat"]["redcell"][0]])
    resp = mt["stim"][0]["resp"][0][:, keep]
    spont = mt["stim"][0]["spont"][0][:, keep].astype(np.float64)
    istim = mt["stim"][0]["istim"][0].ravel().astype(int)
    recording = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS, n_images=60)
    responses, halves, ids = oracle(resp, istim, spont, N_SPONT_PCS)
    np.testing.assert_array_equal(recording.neuron_index, np.flatnonzero(keep))
    np.testing.assert_array_equal(recording.image_index, ids)
    np.testing.assert_allclose(recording.responses, responses, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(recording.halves, halves, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(recording.neuron_xyz, mt["med"][keep], rtol=1e-6)


def test_redcells_dropped_unless_asked(simulated):
    path = simulated["v5"]["recordings"][0]
    mt = scipy.io.loadmat(path)
    redcell = np.array([bool(x.item()) for x in mt["stat"]["redcell"][0]])
    assert redcell.any()
    dropped = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS)
    kept = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS, drop_redcells=False)
    np.testing.assert_array_equal(dropped.neuron_index, np.flatnonzero(~redcell))
    np.testing.assert_array_equal(kept.neuron_index, np.arange(40))


def test_blank_is_largest_id_without_images_file(simulated):
    path = simulated["v5"]["recordings"][0]
    with_count = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS, n_images=60)
    without = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS)
    np.testing.assert_array_equal(with_count.responses, without.responses)
    assert with_count.image_index.max() == 59


@pytest.mark.parametrize("shape", [(50, 12), (12, 50)])
def test_top_right_singular_vectors_match_full_svd(shape):
    x = np.random.default_rng(1).standard_normal(shape) * np.linspace(3, 0.1, shape[1])
    v = stringer.top_right_singular_vectors(x, 5)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(v @ v.T, vt[:5].T @ vt[:5], atol=1e-8)
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-10)


# ------------------------------------------------------------------------------ cache


def test_cache_hit_returns_identical_data_without_reparsing(simulated, tmp_path, monkeypatch):
    path = simulated["v73"]["recordings"][0]
    first = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS, cache_dir=tmp_path)
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".h5")]) == 1

    def no_parse(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(stringer, "read_raw_recording", no_parse)
    second = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS, cache_dir=tmp_path)
    assert second.name == first.name
    for field in ("responses", "halves", "image_index", "neuron_xyz", "neuron_index"):
        a, b = getattr(first, field), getattr(second, field)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # Other options: another cache entry, so the file is parsed again.
    with pytest.raises(AssertionError, match="the cache should have been used"):
        stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS + 1, cache_dir=tmp_path)


def test_cache_key_follows_file_content(tmp_path):
    rng = np.random.default_rng(2)
    resp, istim, spont = random_recording(rng)
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont)
    cache = tmp_path / "cache"
    before = stringer.load_recording(path, n_spont_pcs=2, cache_dir=cache)
    write_recording(tmp_path / "rec.mat", resp * 2 + 1, istim, spont)  # Same name, new content.
    after = stringer.load_recording(path, n_spont_pcs=2, cache_dir=cache)
    assert len(os.listdir(cache)) == 2
    assert not np.allclose(before.responses, after.responses)


def test_crash_while_writing_cache_leaves_no_partial_file(simulated, tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(stringer.os, "replace", failing_replace)
    with pytest.warns(UserWarning, match="could not write cache"):
        recording = stringer.load_recording(
            simulated["v5"]["recordings"][0], n_spont_pcs=N_SPONT_PCS, cache_dir=tmp_path
        )
    assert recording.n_neurons > 0
    assert os.listdir(tmp_path) == []


def test_damaged_cache_is_recomputed(simulated, tmp_path):
    path = simulated["v5"]["recordings"][0]
    good = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS, cache_dir=tmp_path)
    (cache_file,) = os.listdir(tmp_path)
    with open(tmp_path / cache_file, "wb") as f:
        f.write(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = stringer.load_recording(path, n_spont_pcs=N_SPONT_PCS, cache_dir=tmp_path)
    np.testing.assert_array_equal(good.responses, again.responses)


# ------------------------------------------------------------------------------ bad input


def _truncate(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 2])
    return dst


def test_missing_file(tmp_path):
    path = tmp_path / "natimg2800_nope.mat"
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path, cache_dir=tmp_path / "cache")
    assert_one_line_error(excinfo, path, "file not found")
    assert not (tmp_path / "cache").exists()


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("these are not the responses you are looking for\n" * 20)
    for load in (stringer.load_recording, stringer.load_images):
        with pytest.raises(DataError) as excinfo:
            load(path)
        assert_one_line_error(excinfo, path, "not a MATLAB")


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_truncated_files(simulated, tmp_path, fmt):
    cache = tmp_path / "cache"
    rec = _truncate(simulated[fmt]["recordings"][0], tmp_path / "rec.mat")
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(rec, cache_dir=cache)
    assert_one_line_error(excinfo, rec, "truncated or corrupt")
    img = _truncate(simulated[fmt]["images"][0], tmp_path / "img.mat")
    with pytest.raises(DataError) as excinfo:
        stringer.load_images(img)
    assert_one_line_error(excinfo, img, "truncated or corrupt")
    assert not cache.exists() or os.listdir(cache) == []


@pytest.mark.parametrize("fmt", ["v5", "v73"])
@pytest.mark.parametrize("missing", ["resp", "istim", "spont"])
def test_stim_without_field(tmp_path, fmt, missing):
    resp, istim, spont = random_recording(np.random.default_rng(3))
    stim = {"resp": resp, "istim": istim.astype(np.float64), "spont": spont}
    del stim[missing]
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont, fmt=fmt, stim=stim)
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path, cache_dir=tmp_path / "cache")
    assert_one_line_error(excinfo, path, f"no field '{missing}'")
    assert os.listdir(tmp_path) == ["rec.mat"]  # No cache folder, no partial file.


def test_no_stim_variable(tmp_path):
    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"x": np.ones(3)})
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path)
    assert_one_line_error(excinfo, path, "no variable 'stim'")


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_resp_and_spont_neuron_counts_differ(tmp_path, fmt):
    resp, istim, spont = random_recording(np.random.default_rng(4))
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont[:, :-1], fmt=fmt)
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path)
    assert_one_line_error(excinfo, path, "stim.spont")


def test_istim_beyond_images_file(tmp_path):
    resp, istim, spont = random_recording(np.random.default_rng(5))
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont)
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path, n_images=4)
    assert_one_line_error(excinfo, path, "only 4 images")


def test_istim_not_integer_ids(tmp_path):
    resp, istim, spont = random_recording(np.random.default_rng(5))
    path = write_recording(tmp_path / "rec.mat", resp, istim + 0.5, spont)
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path)
    assert_one_line_error(excinfo, path, "integer")


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_images_not_68_by_270(tmp_path, fmt):
    path = tmp_path / "images.mat"
    mat_writer.write_mat(os.fspath(path), {"imgs": np.zeros((64, 256, 3), np.uint8)}, fmt)
    with pytest.raises(DataError) as excinfo:
        stringer.load_images(path)
    assert_one_line_error(excinfo, path, "imgs is 64 x 256 x 3, expected 68 x 270")


def test_nan_responses_are_zeroed_with_a_warning(tmp_path):
    resp, istim, spont = random_recording(np.random.default_rng(6))
    clean = write_recording(tmp_path / "clean.mat", np.where(resp > 3, 0, resp), istim, spont)
    dirty = write_recording(tmp_path / "dirty.mat", np.where(resp > 3, np.nan, resp), istim, spont)
    n_nan = int(np.sum(resp[istim != istim.max()] > 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = stringer.load_recording(clean, n_spont_pcs=2)
    with pytest.warns(UserWarning, match=f"{n_nan} NaN values in stim.resp set to 0"):
        got = stringer.load_recording(dirty, n_spont_pcs=2)
    np.testing.assert_array_equal(got.responses, expected.responses)


@pytest.mark.parametrize("field", ["resp", "spont"])
def test_infinite_values_are_an_error(tmp_path, field):
    resp, istim, spont = random_recording(np.random.default_rng(7))
    arrays = {"resp": resp, "spont": spont}
    arrays[field][1, 1] = np.inf
    path = write_recording(tmp_path / "rec.mat", arrays["resp"], istim, arrays["spont"])
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path, cache_dir=tmp_path / "cache")
    assert_one_line_error(excinfo, path, f"stim.{field} contains 1 infinite values")
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_every_image_shown_once(tmp_path):
    rng = np.random.default_rng(8)
    istim = np.array([1, 2, 3, 4, 5, 5])  # 5 is the blank.
    path = write_recording(tmp_path / "rec.mat", rng.random((6, 4)), istim, rng.random((20, 4)))
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path, n_spont_pcs=2)
    assert_one_line_error(excinfo, path, "no image was shown at least twice")


def test_istim_length_differs_from_trials(tmp_path):
    resp, istim, spont = random_recording(np.random.default_rng(9))
    path = write_recording(tmp_path / "rec.mat", resp, istim[:-1], spont)
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path)
    assert_one_line_error(excinfo, path, "ids for")


def test_huge_values_that_overflow_float32_are_an_error_naming_the_file(tmp_path):
    resp, istim, spont = random_recording(np.random.default_rng(10))
    resp = resp.astype(np.float64)
    resp[istim == 1, 2] = 1e300  # finite in the file, not after preprocessing (random bytes)
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont)
    with pytest.raises(DataError) as excinfo:
        stringer.load_recording(path, n_spont_pcs=2, cache_dir=tmp_path / "cache")
    assert_one_line_error(excinfo, path, "non-finite values")
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_a_neuron_without_spontaneous_variance_is_not_scaled_by_a_million(tmp_path):
    resp, istim, spont = random_recording(np.random.default_rng(11))
    spont[:, 4] = 2.0  # a constant spontaneous trace
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont)
    with pytest.warns(UserWarning, match="1 neurons have no variance in stim.spont .*column 4"):
        recording = stringer.load_recording(path, n_spont_pcs=0)
    kept = istim != istim.max()
    by_responses = resp[kept, 4].std()  # z-scored by the std of its responses instead
    expected = oracle(resp, istim, spont, n_pcs=0)[0][:, 4] * (1e-6 / (by_responses + 1e-6))
    np.testing.assert_allclose(recording.responses[:, 4], expected, rtol=1e-4, atol=1e-6)
    assert np.abs(recording.responses).max() < 100


def test_blank_is_the_largest_id_with_a_larger_images_file(tmp_path):
    resp, istim, spont = random_recording(np.random.default_rng(12))  # blank id 7, 6 images
    path = write_recording(tmp_path / "rec.mat", resp, istim, spont)
    with_more_images = stringer.load_recording(path, n_spont_pcs=2, n_images=10)
    as_recorded = stringer.load_recording(path, n_spont_pcs=2, n_images=6)
    np.testing.assert_array_equal(with_more_images.image_index, [0, 2, 3, 4, 5])
    np.testing.assert_array_equal(with_more_images.responses, as_recorded.responses)
