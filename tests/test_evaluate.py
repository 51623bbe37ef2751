"""Evaluation: retrieval against brute-force numpy, SSIM against scikit-image, the linear baseline
on a planted linear map, LPIPS plumbing and a float64 NumPy LPIPS, and an end-to-end ``evaluate`` on
a tiny trained run."""

import json
import math
import types

import numpy as np
import pytest
from numpy_reference import bilinear_matrix
from skimage.metrics import structural_similarity

from dina_jax import checkpoint
from dina_jax.data.stringer import DataError
from dina_jax.evaluation import baseline, lpips, retrieval
from dina_jax.evaluation import evaluate as evaluate_run
from dina_jax.evaluation.maps import map_similarity
from dina_jax.models import feature_fns


# ---------------------------------------------------------------------- brute-force oracles
def _cosine_numpy(a, b):
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = a[i] @ b[j] / (np.linalg.norm(a[i]) * np.linalg.norm(b[j]))
    return out


def _retrieval_numpy(similarity, topk):
    """similarity[q, c], true candidate c = q; the true match's position inside its tie group is
    uniform, so every position p = 0..ties is enumerated with weight 1 / (ties + 1)."""
    hits = {k: 0.0 for k in topk}
    ranks = []
    for q in range(len(similarity)):
        greater = sum(similarity[q, c] > similarity[q, q] for c in range(len(similarity)))
        ties = sum(similarity[q, c] == similarity[q, q] for c in range(len(similarity)) if c != q)
        positions = [greater + 1 + p for p in range(ties + 1)]
        for k in topk:
            hits[k] += sum(rank <= k for rank in positions) / len(positions)
        ranks.append(sum(positions) / len(positions))
    result = {f"top{k}": hits[k] / len(similarity) for k in topk}
    result["mean_rank"] = float(np.mean(ranks))
    result["median_rank"] = float(np.median(ranks))
    return result


def _paired_maps(n=40, seed=0, noise=1.5):
    rng = np.random.default_rng(seed)
    z_img = rng.standard_normal((n, 16, 64)).astype(np.float32)
    z_neu = (z_img + noise * rng.standard_normal((n, 16, 64))).astype(np.float32)
    return z_img, z_neu


# ---------------------------------------------------------------------------------- retrieval
def test_cosine_similarity_matrix_matches_numpy():
    z_img, z_neu = _paired_maps(12)
    np.testing.assert_allclose(
        retrieval.cosine_similarity_matrix(z_img, z_neu), _cosine_numpy(z_img, z_neu), atol=1e-5
    )


def test_correlation_matrix_matches_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((7, 30)) + 2.0, rng.standard_normal((9, 30))
    expected = np.corrcoef(a, b)[:7, 7:]
    np.testing.assert_allclose(retrieval.correlation_matrix(a, b), expected, atol=1e-5)


def test_retrieval_metrics_match_brute_force_in_both_directions():
    z_img, z_neu = _paired_maps(40, noise=25.0)  # Partly confusable: accuracies strictly in (0, 1).
    metrics = retrieval.retrieval_metrics(z_neu, z_img, (1, 5, 10))
    similarity = _cosine_numpy(z_img, z_neu)  # (image, neural)
    n2i = _retrieval_numpy(similarity.T, (1, 5, 10))
    i2n = _retrieval_numpy(similarity, (1, 5, 10))
    assert 0.0 < n2i["top1"] < 1.0
    assert n2i != i2n  # The two directions differ; each is checked separately.
    for key, value in n2i.items():
        assert metrics[key] == pytest.approx(value), key
    for key, value in i2n.items():
        assert metrics[f"i2n_{key}"] == pytest.approx(value), key
    assert metrics["n_candidates"] == 40


def test_ties_are_broken_in_expectation():
    rng = np.random.default_rng(2)
    similarity = rng.integers(0, 4, size=(25, 25)).astype(np.float32)  # Many ties.
    metrics = retrieval.retrieval_from_similarity(similarity, (1, 3, 10))
    for key, value in _retrieval_numpy(similarity, (1, 3, 10)).items():
        assert metrics[key] == pytest.approx(value), key


def test_collapsed_maps_score_chance_not_perfect():
    maps = np.ones((20, 16, 64), np.float32)
    metrics = retrieval.retrieval_metrics(maps, maps, (1, 5))
    chance = retrieval.chance_metrics(20, (1, 5))
    assert metrics["top1"] == pytest.approx(chance["top1"]) == pytest.approx(1 / 20)
    assert metrics["top5"] == pytest.approx(0.25)
    assert metrics["mean_rank"] == pytest.approx(chance["mean_rank"]) == pytest.approx(10.5)


def test_hubness_counts_how_often_each_candidate_is_ranked_first():
    rng = np.random.default_rng(4)
    perfect = np.eye(10) + 0.01 * rng.random((10, 10))
    assert retrieval.retrieval_hubness(perfect) == {"hub_share": 0.1, "distinct_top1": 1.0}
    # A shared component that candidate 3 matches best: it is every query's top-1.
    shared = rng.random((10, 10)) * 0.1
    shared[:, 3] += 1.0
    assert retrieval.retrieval_hubness(shared) == {"hub_share": 1.0, "distinct_top1": 0.1}
    # 4 queries of 8 on candidate 0, the others on 1, 2 and 5 of 6 candidates.
    top = np.array([0, 0, 1, 0, 2, 0, 5, 1])
    picks = np.zeros((8, 6))
    picks[np.arange(8), top] = 1.0
    assert retrieval.retrieval_hubness(picks) == {"hub_share": 0.5, "distinct_top1": 4 / 6}


def test_map_coherence_is_the_mean_off_diagonal_cosine():
    rng = np.random.default_rng(5)
    maps = rng.standard_normal((6, 4, 3))
    flat = maps.reshape(6, -1)
    cos = [
        flat[i] @ flat[j] / np.linalg.norm(flat[i]) / np.linalg.norm(flat[j])
        for i in range(6)
        for j in range(6)
        if i != j
    ]
    assert retrieval.map_coherence(maps) == pytest.approx(np.mean(cos))
    common = np.ones((6, 12)) + 1e-3 * rng.standard_normal((6, 12))
    assert retrieval.map_coherence(common) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------- linear baseline
@pytest.mark.parametrize("n_inputs", [50, 12])  # The dual (N > S) and primal (N <= S) paths.
def test_ridge_fit_matches_normal_equations(n_inputs):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, n_inputs)) + 1.0, rng.standard_normal((30, 4))
    weights = baseline.ridge_fit(x, y, (0.5, 20.0))
    xc, yc = x - x.mean(0), y - y.mean(0)
    for w, alpha in zip(weights, (0.5, 20.0), strict=True):
        expected = np.linalg.solve(xc.T @ xc + alpha * np.eye(n_inputs), xc.T @ yc)
        np.testing.assert_allclose(w, expected, atol=1e-8)


def test_pixel_pcs_match_numpy_svd():
    images = np.random.default_rng(4).standard_normal((20, 6, 9))
    mean, components = baseline.pixel_pcs(images, 5)
    flat = images.reshape(20, -1)
    _, _, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    np.testing.assert_allclose(mean, flat.mean(0), atol=1e-6)
    np.testing.assert_allclose(np.abs(components @ vt[:5].T), np.eye(5), atol=1e-5)


def _planted_linear_data(seed, n_rows=300, n_neurons=80, n_factors=12):
    """Images built from n_factors basis images; responses a noisy linear map of the factors."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n_rows, n_factors)) * np.linspace(3, 1, n_factors)
    basis = rng.standard_normal((n_factors, 8, 20))
    images = np.einsum("sk,khw->shw", factors, basis) + 0.1 * rng.standard_normal((n_rows, 8, 20))
    mixing = rng.standard_normal((n_factors, n_neurons))
    responses = factors @ mixing + 0.5 * rng.standard_normal((n_rows, n_neurons))
    rows = rng.permutation(n_rows)
    split = types.SimpleNamespace(
        train=np.sort(rows[:200]), val=np.sort(rows[200:250]), test=np.sort(rows[250:])
    )
    return images.astype(np.float32), responses.astype(np.float32), split


def test_linear_baseline_recovers_a_planted_linear_map():
    images, responses, split = _planted_linear_data(5)
    alphas = (1e-2, 1e1, 1e3, 1e6)
    result = baseline.linear_baseline(images, responses, split, n_pcs=20, alphas=alphas)
    assert result["top1"] > 0.9
    assert result["alpha"] in alphas and result["n_pcs"] == 20
    # Responses unrelated to the images leave the same pipeline near chance (1/50 top-1).
    shuffled = responses[np.random.default_rng(6).permutation(len(responses))]
    control = baseline.linear_baseline(images, shuffled, split, n_pcs=20, alphas=alphas)
    assert control["top1"] < 0.2
    assert control["mean_rank"] > 15


# ----------------------------------------------------------------------------- map similarity
def test_map_ssim_matches_scikit_image():
    z_img, z_neu = _paired_maps(6, seed=7, noise=0.7)
    z_neu = 5.0 * z_neu + 2.0  # A scale and offset the normalization removes.
    result = map_similarity(z_img, z_neu, win_size=7)

    def unit(m):
        return (m - m.min()) / (m.max() - m.min())

    expected = [
        structural_similarity(unit(a), unit(b), win_size=7, data_range=1.0)
        for a, b in zip(z_img.astype(np.float64), z_neu.astype(np.float64), strict=True)
    ]
    np.testing.assert_allclose(result["per_pair"], expected, atol=1e-4)
    assert result["mean"] == pytest.approx(np.mean(expected), abs=1e-4)
    assert result["std"] == pytest.approx(np.std(expected), abs=1e-4)
    unpaired = [
        structural_similarity(unit(z_img[i]), unit(z_neu[(i - 3) % 6]), win_size=7, data_range=1)
        for i in range(6)
    ]
    assert result["unpaired_mean"] == pytest.approx(np.mean(unpaired), abs=1e-4)
    raw = [
        structural_similarity(a, b, win_size=7, data_range=a.max() - a.min())
        for a, b in zip(z_img, z_neu, strict=True)
    ]
    assert result["raw_mean"] == pytest.approx(np.mean(raw), abs=1e-4)
    assert result["mean"] > result["unpaired_mean"]


# --------------------------------------------------------------------------------------- LPIPS
def _random_lpips_weights(path, seed=0, **changes):
    rng = np.random.default_rng(seed)
    arrays = {
        key: (
            np.abs(rng.standard_normal(shape))
            if key.startswith("lin")
            else 0.05 * rng.standard_normal(shape)
        ).astype(np.float32)
        for key, shape in lpips.lpips_expected_shapes().items()
    }
    arrays.update(changes)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez(path, **arrays)
    return path


def test_lpips_without_weights_says_so():
    z_img, z_neu = _paired_maps(3)
    assert lpips.map_lpips(z_img, z_neu, "", resize_hw=(64, 256)) == {"status": lpips.LPIPS_MISSING}


def test_lpips_loader_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        lpips.load_lpips_weights(tmp_path / "absent.npz")
    missing = _random_lpips_weights(tmp_path / "missing.npz", conv3_weight=None)
    with pytest.raises(DataError, match="conv3_weight"):
        lpips.load_lpips_weights(missing)
    wrong = _random_lpips_weights(tmp_path / "wrong.npz", lin2_weight=np.ones((1, 7, 1, 1)))
    with pytest.raises(DataError, match="lin2_weight"):
        lpips.load_lpips_weights(wrong)
    (tmp_path / "garbage.npz").write_text("not an archive")
    with pytest.raises(DataError, match="garbage.npz"):
        lpips.load_lpips_weights(tmp_path / "garbage.npz")


def test_lpips_first_layer_is_a_pytorch_style_convolution(tmp_path):
    weights = lpips.load_lpips_weights(_random_lpips_weights(tmp_path / "w.npz"))
    x = np.random.default_rng(8).standard_normal((1, 3, 24, 40)).astype(np.float32)
    relu1 = np.asarray(lpips.lpips_features(weights, x)[0])
    # Brute-force cross-correlation, stride 4, zero padding 2, for two output channels.
    padded = np.pad(x[0].astype(np.float64), ((0, 0), (2, 2), (2, 2)))
    w, b = weights["conv1_weight"].astype(np.float64), weights["conv1_bias"]
    assert relu1.shape == (1, 64, (24 + 4 - 11) // 4 + 1, (40 + 4 - 11) // 4 + 1)
    for o in (0, 37):
        for i in range(relu1.shape[2]):
            for j in range(relu1.shape[3]):
                patch = padded[:, 4 * i : 4 * i + 11, 4 * j : 4 * j + 11]
                value = max(0.0, float(np.sum(patch * w[o]) + b[o]))
                assert relu1[0, o, i, j] == pytest.approx(value, abs=1e-4)


def test_lpips_is_zero_on_identical_maps_and_grows_with_difference(tmp_path):
    path = _random_lpips_weights(tmp_path / "w.npz")
    z_img, _ = _paired_maps(4, seed=9)
    rng = np.random.default_rng(10)
    near = z_img + 0.1 * rng.standard_normal(z_img.shape).astype(np.float32)
    far = rng.standard_normal(z_img.shape).astype(np.float32)
    same = lpips.map_lpips(z_img, z_img, str(path), resize_hw=(64, 256))
    close = lpips.map_lpips(z_img, near, str(path), resize_hw=(64, 256))
    distant = lpips.map_lpips(z_img, far, str(path), resize_hw=(64, 256))
    assert same["status"] == "computed" and same["mean"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < close["mean"] < distant["mean"]


def _np_conv2d(x, weight, bias, stride, padding):
    """PyTorch Conv2d (cross-correlation) by explicit patches: (C, H, W) -> (O, h, w), float64."""
    out_c, _, kh, kw = weight.shape
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    h = (x.shape[1] - kh) // stride + 1
    w = (x.shape[2] - kw) // stride + 1
    out = np.empty((out_c, h, w))
    for i in range(h):
        for j in range(w):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, i, j] = np.tensordot(weight, patch, axes=3) + bias
    return out


def _np_max_pool(x, size=3, stride=2):
    """PyTorch MaxPool2d(3, stride=2), no padding: (C, H, W) -> (C, h, w)."""
    h = (x.shape[1] - size) // stride + 1
    w = (x.shape[2] - size) // stride + 1
    out = np.empty((x.shape[0], h, w))
    for i in range(h):
        for j in range(w):
            out[:, i, j] = x[:, i * stride : i * stride + size, j * stride : j * stride + size].max(
                axis=(1, 2)
            )
    return out


def _np_lpips(weights, map0, map1, resize_hw):
    """LPIPS (alex, v0.1) of two (H, W) maps in float64, from Zhang et al. 2018 and torchvision's
    AlexNet: min-max to [0, 1], to [-1, 1], bilinear resize, 3 channels, scaling layer, the five
    conv + ReLU taps (max-pool 3 / 2 before conv2 and conv3), channel unit-normalization
    (+1e-10), lin weights, spatial mean, sum over layers."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    shift = np.array([-0.030, -0.088, -0.188])[:, None, None]
    scale = np.array([0.458, 0.448, 0.450])[:, None, None]
    layers = [  # name, stride, padding, max-pool before
        ("conv1", 4, 2, False),
        ("conv2", 1, 2, True),
        ("conv3", 1, 1, True),
        ("conv4", 1, 1, False),
        ("conv5", 1, 1, False),
    ]

    def taps(m):
        m = np.asarray(m, np.float64)
        m = 2.0 * (m - m.min()) / (m.max() - m.min()) - 1.0
        rows = bilinear_matrix(m.shape[0], resize_hw[0])
        cols = bilinear_matrix(m.shape[1], resize_hw[1])
        x = (np.repeat((rows @ m @ cols.T)[None], 3, axis=0) - shift) / scale
        out = []
        for name, stride, padding, pool in layers:
            if pool:
                x = _np_max_pool(x)
            x = np.maximum(
                _np_conv2d(x, w[f"{name}_weight"], w[f"{name}_bias"], stride, padding), 0.0
            )
            out.append(x)
        return out

    total = 0.0
    for j, (a, b) in enumerate(zip(taps(map0), taps(map1), strict=True)):
        a = a / (np.sqrt((a**2).sum(axis=0, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b**2).sum(axis=0, keepdims=True)) + 1e-10)
        lin = w[f"lin{j}_weight"][0, :, 0, 0]
        total += np.einsum("chw,c->hw", (a - b) ** 2, lin).mean()
    return total


def test_lpips_distance_matches_a_numpy_reference(tmp_path):
    weights = lpips.load_lpips_weights(_random_lpips_weights(tmp_path / "w.npz", seed=3))
    rng = np.random.default_rng(11)
    maps0 = rng.standard_normal((2, 8, 12)).astype(np.float32)
    maps1 = (maps0 + rng.standard_normal((2, 8, 12))).astype(np.float32)
    # 35 x 47 -> conv1 8 x 11 -> pool 3 x 5 -> pool 1 x 2: every layer has more than one output
    # in some direction, and the resize upsamples both axes (no antialiasing involved).
    resize_hw = (35, 47)
    got = np.asarray(lpips.lpips_distance(weights, maps0, maps1, resize_hw=resize_hw))
    expected = [_np_lpips(weights, a, b, resize_hw) for a, b in zip(maps0, maps1, strict=True)]
    assert got.shape == (2,) and min(expected) > 0.05
    np.testing.assert_allclose(got, expected, rtol=1e-4)


# -------------------------------------------------------------------------------- end to end
def _all_finite(tree):
    if isinstance(tree, dict):
        return all(_all_finite(v) for v in tree.values())
    if isinstance(tree, list):
        return all(_all_finite(v) for v in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


def test_evaluate_writes_results_and_figures_reproducibly(tiny_config, trained_workdir, capsys):
    first = json.loads((trained_workdir / "results.json").read_text())  # From the training run.
    capsys.readouterr()
    returned = evaluate_run(tiny_config, trained_workdir)
    printed = capsys.readouterr().out
    written = json.loads((trained_workdir / "results.json").read_text())
    # A second evaluation of the same checkpoint gives the same numbers (the split, the encoder
    # and the baseline are deterministic).
    assert written == first == json.loads(json.dumps(returned))
    for key in (
        "retrieval",
        "chance",
        "linear_baseline",
        "noise_ceiling",
        "ssim",
        "lpips",
        "spectra",
        "figures",
    ):
        assert key in written, key
    n_test = written["n_test"]
    assert n_test == len(json.loads((trained_workdir / "split.json").read_text())["test"])
    for key in ("top1", "top5", "top10", "mean_rank", "i2n_top1"):
        assert key in written["retrieval"]
    assert written["chance"]["top1"] == pytest.approx(1 / n_test)
    assert written["lpips"] == {"status": lpips.LPIPS_MISSING}
    assert _all_finite(written)
    assert "LPIPS: weights not provided" in printed and "Noise ceiling" in printed
    for name in ("similarity_matrix", "feature_maps", "top5_retrieval", "variance_spectra"):
        path = trained_workdir / "figures" / f"{name}.png"
        assert path.exists() and path.read_bytes()[:4] == b"\x89PNG", name
    maps = np.load(trained_workdir / "test_maps.npz")
    assert maps["z_img"].shape == (n_test, 16, 64)
    np.testing.assert_allclose(
        maps["similarity"], _cosine_numpy(maps["z_img"], maps["z_neu"]), atol=1e-5
    )
    # Hubs of the neural queries: an independent count from the written similarity matrix.
    top = maps["similarity"].argmax(axis=0)  # each neural query's (column's) best image
    counts = np.bincount(top, minlength=n_test)
    assert written["hubs"]["n2i"]["hub_share"] == pytest.approx(counts.max() / n_test)
    assert written["hubs"]["n2i"]["distinct_top1"] == pytest.approx((counts > 0).mean())
    assert -1.0 <= written["hubs"]["coherence_neural"] <= 1.0
    assert "Hubs: the most retrieved image" in printed
    # The centred diagnostic: the same retrieval on the normalized neural maps minus their mean
    # over the training responses.
    model, params, _, dataset = checkpoint.load_run(trained_workdir, config=tiny_config)
    train_maps = feature_fns.encode_neurons(model, params, dataset.responses[dataset.split.train])

    def unit(z):
        flat = z.reshape(len(z), -1).astype(np.float64)
        return flat / np.linalg.norm(flat, axis=1, keepdims=True)

    centred = unit(maps["z_neu"]) - unit(train_maps).mean(axis=0)
    expected = retrieval.retrieval_from_similarity(_cosine_numpy(centred, maps["z_img"]), (1, 5))
    for key in ("top1", "top5", "mean_rank"):
        assert written["hubs"]["n2i_centred"][key] == pytest.approx(expected[key], abs=1e-6), key


def test_encode_does_not_depend_on_the_batch_size(tiny_config, trained_workdir):
    model, params, _, dataset = checkpoint.load_run(trained_workdir, config=tiny_config)
    maps = np.load(trained_workdir / "test_maps.npz")  # Encoded in one batch by evaluate.
    rows = maps["test_rows"]
    assert len(rows) % 5 != 0  # The last batch of 5 is padded.
    z_img, z_neu = feature_fns.encode(
        model, params, dataset.images[rows], dataset.responses[rows], batch_size=5
    )
    np.testing.assert_allclose(z_img, maps["z_img"], atol=1e-5)
    np.testing.assert_allclose(z_neu, maps["z_neu"], atol=1e-5)
