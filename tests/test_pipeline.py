"""Dataset assembly, splits, batches, sharding and the repeat-decoding noise ceiling."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io

from dina_jax.data import pipeline, synthetic
from dina_jax.data.stringer import DataError

# ------------------------------------------------------------------------------ splits


def test_split_sizes_of_the_paper():
    split = pipeline.make_split(2800, 0)
    assert (split.test.size, split.val.size, split.train.size) == (280, 252, 2268)


@pytest.mark.parametrize("n_rows", [2800, 160, 37])
def test_split_is_disjoint_sorted_and_complete(n_rows):
    split = pipeline.make_split(n_rows, 4)
    parts = [split.train, split.val, split.test]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n_rows))  # Disjoint and complete.
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    assert split.n_rows == n_rows


def test_split_is_a_pure_function_of_rows_and_seed():
    a, b, c = (pipeline.make_split(2800, seed) for seed in (1, 1, 2))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.test, c.test)


def test_split_needs_rows():
    with pytest.raises(ValueError, match="cannot split 3 rows .* need at least one row"):
        pipeline.make_split(3, 0)


def test_split_roundtrip(tmp_path):
    split = pipeline.make_split(300, 7, test_fraction=0.2, val_fraction=0.25)
    assert (split.test.size, split.val.size) == (60, 60)
    path = tmp_path / "run" / "split.json"
    pipeline.save_split(path, split)
    loaded = pipeline.load_split(path)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(split, name))
        assert getattr(loaded, name).dtype == np.int64
    assert os.listdir(path.parent) == ["split.json"]


# ------------------------------------------------------------------------------ batches


def test_batches_are_a_pure_function_of_seed_and_epoch():
    indices = np.arange(100, 150)
    run = lambda seed, epoch: list(pipeline.iterate_batches(indices, 8, seed=seed, epoch=epoch))  # noqa: E731
    first, again, next_epoch = run(0, 0), run(0, 0), run(0, 1)
    assert len(first) == 6 and all(b.shape == (8,) and b.dtype == np.int64 for b in first)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(np.concatenate(first), np.concatenate(next_epoch))
    seen = np.concatenate(first)
    assert len(set(seen.tolist())) == 48 and set(seen.tolist()) <= set(indices.tolist())


def test_batches_without_drop_last_or_shuffle():
    indices = np.arange(10)
    batches = list(pipeline.iterate_batches(indices, 4, seed=0, epoch=0, drop_last=False))
    assert [b.size for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    ordered = list(pipeline.iterate_batches(indices, 5, seed=0, epoch=3, shuffle=False))
    np.testing.assert_array_equal(np.concatenate(ordered), indices)


def test_shard():
    x = np.arange(16 * 3).reshape(16, 3)
    sharded = pipeline.shard(x, 4)
    assert sharded.shape == (4, 4, 3)
    np.testing.assert_array_equal(sharded[1], x[4:8])
    with pytest.raises(ValueError, match="batch of 16 does not split over 3 devices"):
        pipeline.shard(x, 3)


# ------------------------------------------------------------------------------ decoding


def _brute_force_topk(halves, k, query_half):
    """Rank by np.corrcoef of neuron-z-scored responses, one query at a time."""
    z = [(h - h.mean(0)) / h.std(0) for h in halves]
    query, candidates = z[query_half], z[1 - query_half]
    hits = 0
    for i in range(query.shape[0]):
        scores = np.array([np.corrcoef(query[i], c)[0, 1] for c in candidates])
        hits += int(np.sum(scores > scores[i]) < k)
    return hits / query.shape[0]


def test_repeat_decoding_matches_brute_force():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((25, 12))
    halves = signal + 1.5 * rng.standard_normal((2, 25, 12))
    result = pipeline.repeat_decoding_accuracy(halves, topk=(1, 3))
    for k in (1, 3):
        assert result[f"top{k}_2to1"] == pytest.approx(_brute_force_topk(halves, k, 1))
        assert result[f"top{k}_1to2"] == pytest.approx(_brute_force_topk(halves, k, 0))
        assert result[f"top{k}"] == pytest.approx(
            0.5 * (result[f"top{k}_2to1"] + result[f"top{k}_1to2"])
        )
        assert result[f"chance_top{k}"] == pytest.approx(k / 25)
    assert 0 < result["top1"] < 1


def test_repeat_decoding_extremes_and_rows():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((40, 30))
    perfect = pipeline.repeat_decoding_accuracy(np.stack([signal, signal]))
    assert perfect["top1"] == 1.0
    rows = np.arange(0, 40, 2)
    subset = pipeline.repeat_decoding_accuracy(np.stack([signal, signal]), rows=rows)
    assert subset["n_stimuli"] == 20 and subset["chance_top1"] == pytest.approx(0.05)
    noise = pipeline.repeat_decoding_accuracy(rng.standard_normal((2, 400, 30)))
    assert noise["top1"] < 0.02 and noise["top10"] < 0.06


# ------------------------------------------------------------------------------ datasets


def test_tiny_dataset_is_consistent(tiny_config, tiny_dataset):
    ds = tiny_dataset
    n = ds.n_images
    assert ds.images.shape == (n, 68, 270) and ds.images.dtype == np.float32
    assert ds.responses.shape == (n, ds.n_neurons) and ds.halves.shape == (2, n, ds.n_neurons)
    assert n == tiny_config.data.synthetic.n_images  # Every simulated image is shown twice.
    assert (ds.split.test.size, ds.split.val.size, ds.split.train.size) == (16, 14, 130)
    # Row s shows the image file's row image_index[s]; read the file independently.
    folder = pipeline.ensure_synthetic(tiny_config)
    imgs = scipy.io.loadmat(os.path.join(folder, "images_natimg2800_all.mat"))["imgs"]
    np.testing.assert_array_equal(ds.images, imgs.transpose(2, 0, 1)[ds.recording.image_index])
    train = ds.images[ds.split.train].astype(np.float64)
    assert ds.image_mean == pytest.approx(train.mean(), rel=1e-9)
    assert ds.image_std == pytest.approx(train.std(), rel=1e-9)


def test_ground_truth_aligned_after_redcells_dropped(tiny_config, tiny_dataset):
    folder = pipeline.ensure_synthetic(tiny_config)
    truth = np.load(os.path.join(folder, "natimg2800_SIM0_2026-01-01_groundtruth.npz"))
    mt = scipy.io.loadmat(os.path.join(folder, "natimg2800_SIM0_2026-01-01.mat"))
    redcell = np.array([bool(x.item()) for x in mt["stat"]["redcell"][0]])
    assert redcell.any() or tiny_config.data.synthetic.n_neurons < 20
    index = tiny_dataset.recording.neuron_index
    np.testing.assert_array_equal(index, np.flatnonzero(~redcell))
    aligned = tiny_dataset.ground_truth
    assert not aligned["redcell"].any()
    for key in ("rf_center", "rf_sigma", "gain", "is_visual"):
        assert aligned[key].shape[0] == tiny_dataset.n_neurons
        np.testing.assert_array_equal(aligned[key], truth[key][index])
    assert aligned["stimset"] == "natimg2800"


def test_files_source_reads_the_same_files(tiny_config, tiny_dataset):
    config = tiny_config.copy_and_resolve_references()
    config.data.source = "files"
    config.data.dir = pipeline.ensure_synthetic(tiny_config)
    ds = pipeline.load_dataset(config)
    np.testing.assert_array_equal(ds.responses, tiny_dataset.responses)
    np.testing.assert_array_equal(ds.split.test, tiny_dataset.split.test)
    assert ds.ground_truth is not None  # The truth file sits beside the recording.


def test_generated_once_then_reused(tiny_config, tiny_dataset, monkeypatch):
    def no_generation(*args, **kwargs):
        raise AssertionError("the simulated data should have been reused")

    monkeypatch.setattr(synthetic, "generate", no_generation)
    ds = pipeline.load_dataset(tiny_config)
    np.testing.assert_array_equal(ds.responses, tiny_dataset.responses)
    leftovers = [n for n in os.listdir(tiny_config.data.cache_dir) if n.startswith(".tmp")]
    assert leftovers == []


def test_missing_real_file_says_where_to_get_it(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.data.source = "files"
    config.data.dir = str(tmp_path)
    config.data.recording = "natimg2800_M160825_MP027_2016-12-14.mat"
    with pytest.raises(DataError) as excinfo:
        pipeline.load_dataset(config)
    message = str(excinfo.value)
    assert message.startswith(os.path.join(str(tmp_path), config.data.recording) + ": ")
    assert "figshare" in message and "\n" not in message


def test_synthetic_into_data_dir_and_cache_locations(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.data.dir = str(tmp_path / "data")
    config.data.synthetic.n_neurons = 10
    config.data.synthetic.n_images = 30
    config.data.synthetic.format = "v73"
    ds = pipeline.load_dataset(config)
    assert ds.n_images == 30 and ds.ground_truth is not None
    names = sorted(os.listdir(tmp_path / "data"))
    assert names == sorted(
        [
            "images_natimg2800_all.mat",
            "natimg2800_SIM0_2026-01-01.mat",
            "natimg2800_SIM0_2026-01-01_groundtruth.npz",
            "stimuli_class_assignment_confident.mat",  # Each image's source photograph.
        ]
    )
    config.data.cache_dir = ""
    workdir = tmp_path / "runs" / "m1"
    expected = os.path.normpath(str(tmp_path / "runs" / "dina_cache"))
    assert pipeline.cache_folder(config, workdir) == expected
    assert pipeline.cache_folder(config).endswith(os.path.join(".cache", "dina_jax"))


def test_cell_mix_makes_another_simulated_mouse(tiny_config, tmp_path):
    """data.synthetic.frac_complex reaches the simulator and keys the cache: two mixes, two
    datasets, each with its own fraction of complex cells among the simulated neurons."""
    fractions = {}
    for frac in (0.2, 0.9):
        config = tiny_config.copy_and_resolve_references()
        config.data.cache_dir = str(tmp_path)
        config.data.synthetic.n_neurons = 400
        config.data.synthetic.n_images = 30
        config.data.synthetic.frac_complex = frac
        folder = pipeline.ensure_synthetic(config)
        assert f"-c{frac:g}-" in os.path.basename(folder)
        truth = np.load(os.path.join(folder, "natimg2800_SIM0_2026-01-01_groundtruth.npz"))
        fractions[frac] = truth["is_complex"].mean()
    assert abs(fractions[0.2] - 0.2) < 0.06 and abs(fractions[0.9] - 0.9) < 0.06


def test_lost_generation_race_keeps_the_winner(tiny_config, tmp_path, monkeypatch):
    config = tiny_config.copy_and_resolve_references()
    config.data.cache_dir = str(tmp_path)
    config.data.synthetic.n_neurons = 8
    config.data.synthetic.n_images = 12
    real_generate = synthetic.generate

    def racing_generate(outdir, **kwargs):
        written = real_generate(outdir, **kwargs)
        # Another process finishes first and renames its copy into place.
        winner = os.path.join(str(tmp_path), os.path.basename(str(outdir)).split("-", 1)[1])
        winner = winner.rsplit("-", 1)[0]
        real_generate(winner, **kwargs)
        return written

    monkeypatch.setattr(synthetic, "generate", racing_generate)
    folder = pipeline.ensure_synthetic(config)
    assert os.path.isdir(folder)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp")] == []


def test_summary_mentions_the_numbers(tiny_dataset):
    text = pipeline.summarize(tiny_dataset)
    assert "natimg2800_SIM0_2026-01-01" in text
    assert f"neurons: {tiny_dataset.n_neurons}" in text
    assert "train 130, validation 14, test 16" in text
    assert "top-1" in text and "chance 6.25%" in text
