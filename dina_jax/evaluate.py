"""Evaluation of a trained image-neural alignment model (paper Sec. 4.2-4.3, App. B).

``evaluate(config, workdir)`` restores the best checkpoint of a run and computes, on the held-out
test images of its saved split:

* 280-way retrieval (Sec. 4.2): every neural response is a query and the test images are ranked
  by the cosine similarity of the flattened feature maps; top-1/5/10 accuracy and mean rank, in
  both directions (neural -> image, the paper's, and image -> neural);
* the numbers that put it in context: chance, a linear baseline (ridge regression from responses
  to the leading pixel PCs of the images, retrieval by correlation) and the repeat-to-repeat noise
  ceiling (Stringer et al.'s correlation decoder between the two halves of the repeats);
* the 280 x 280 image-vs-neural cosine similarity matrix (Fig. A.1);
* SSIM, and LPIPS when local weights are given, between paired image- and neural-tower maps
  (Sec. 4.3);
* PCA variance spectra of the test images and both towers' maps with power-law exponents
  (Fig. 4b);

and writes ``results.json``, ``test_maps.npz`` and ``figures/*.png`` (Fig. 3, Fig. 4a, Fig. 4b,
Fig. A.1) into the workdir, and prints a table.

Ranks and ties. A query's rank is 1 + the number of candidates strictly more similar than its true
match, when there are no ties. Candidates tied with the true match are broken uniformly at random
*in expectation*: the rank is 1 + #greater + #tied / 2 and top-k is the probability that the true
match lands in the first k, clip((k - #greater) / (#tied + 1), 0, 1). Without ties this is the
usual rule; with ties it keeps a collapsed model whose maps are all identical at chance level
instead of crediting it with 100 % (the optimistic "strictly greater" rule would). The result is
deterministic.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.linalg

from dina_jax import plots
from dina_jax.analysis import spectra
from dina_jax.analysis import ssim as ssim_lib
from dina_jax.config import get_base_config
from dina_jax.data import pipeline
from dina_jax.data.stringer import DataError

# Smallest norm / standard deviation used when normalizing a feature vector; a zero map then
# has similarity 0 to everything instead of NaN.
_EPS = 1e-12
LPIPS_MISSING = "LPIPS: weights not provided"


# ------------------------------------------------------------------------------------ encoding
def encode(
    model,
    params,
    images: np.ndarray,
    responses: np.ndarray,
    *,
    batch_size: int,
    pathways: Sequence[str] = ("local", "global"),
    neuron_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature maps of both towers for paired inputs, with one compiled batched forward pass.

    Args:
      model: a dual-tower module from ``dina_jax.models.build_model``.
      params: its parameter tree.
      images: (S, 68, 270) raw pixels; responses: (S, N) stimulus-averaged responses.
      batch_size: rows per compiled call; the last batch is zero-padded to this size so that one
        program serves every batch (the towers treat rows independently: no batch statistics).
      pathways, neuron_mask: passed to the model (pathway masking, neuron ablation).

    Returns:
      (z_img, z_neu), each (S, 16, 64) float32 numpy, the raw (un-normalized) feature maps.
    """
    images = np.asarray(images, np.float32)
    responses = np.asarray(responses, np.float32)
    if len(images) != len(responses):
        raise ValueError(f"{len(images)} images but {len(responses)} responses")
    pathways = tuple(pathways)
    batch_size = max(1, min(batch_size, len(images)))

    @jax.jit
    def forward(params, images, responses):
        z_img, z_neu, _ = model.apply(
            {"params": params}, images, responses, neuron_mask=neuron_mask, pathways=pathways
        )
        return z_img, z_neu

    n = len(images)
    z_img, z_neu = [], []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        batch_images = np.pad(images[start:stop], ((0, pad), (0, 0), (0, 0)))
        batch_responses = np.pad(responses[start:stop], ((0, pad), (0, 0)))
        a, b = forward(params, batch_images, batch_responses)
        z_img.append(np.asarray(a)[: stop - start])
        z_neu.append(np.asarray(b)[: stop - start])
    return np.concatenate(z_img), np.concatenate(z_neu)


# ----------------------------------------------------------------------------------- retrieval
@jax.jit
def cosine_similarity_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity of every row of a with every row of b: (n, ...) x (m, ...) -> (n, m).

    Trailing axes are flattened (a 1 x 16 x 64 feature map is a 1024-vector), as in the InfoNCE
    loss. Fig. A.1 uses a = image-tower maps (rows), b = neural-tower maps (columns).
    """
    a = a.reshape(a.shape[0], -1).astype(jnp.float32)
    b = b.reshape(b.shape[0], -1).astype(jnp.float32)
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=1, keepdims=True), _EPS)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=1, keepdims=True), _EPS)
    return a @ b.T  # (n, d) x (d, m) -> (n, m)


@jax.jit
def correlation_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlation across features of every row of a with every row of b -> (n, m).

    The cosine similarity of the rows after subtracting each row's own mean.
    """
    a = a.reshape(a.shape[0], -1).astype(jnp.float32)
    b = b.reshape(b.shape[0], -1).astype(jnp.float32)
    return cosine_similarity_matrix(
        a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    )


def retrieval_from_similarity(
    similarity: jax.Array, topk: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Top-k accuracy and ranks of queries against candidates, the true match on the diagonal.

    Args:
      similarity: (Q, Q) with similarity[q, c] the score of candidate c for query q; the correct
        candidate of query q is c = q.
      topk: the k of the top-k accuracies.

    Returns:
      {"top{k}": fraction in [0, 1], ..., "mean_rank", "median_rank"} with the expected-rank tie
      rule of the module docstring (rank 1 is the best).
    """
    similarity = jnp.asarray(similarity)
    target = jnp.diagonal(similarity)[:, None]  # (Q, 1)
    greater = jnp.sum(similarity > target, axis=1)  # (Q, Q) -> (Q,)
    tied = jnp.sum(similarity == target, axis=1) - 1  # The true match is not a tie of itself.
    ranks = 1.0 + greater + tied / 2.0
    metrics = {
        f"top{k}": float(jnp.mean(jnp.clip((k - greater) / (tied + 1.0), 0.0, 1.0))) for k in topk
    }
    metrics["mean_rank"] = float(jnp.mean(ranks))
    metrics["median_rank"] = float(jnp.median(ranks))
    return metrics


def retrieval_metrics(
    z_neu: np.ndarray,
    z_img: np.ndarray,
    topk: Sequence[int] = (1, 5, 10),
    *,
    similarity: str = "cosine",
) -> dict[str, float]:
    """280-way retrieval between paired feature maps (Sec. 4.2), both directions.

    Args:
      z_neu: (Q, ...) neural-tower maps; z_img: (Q, ...) image-tower maps; row q of both belongs
        to the same stimulus.
      topk: accuracies reported.
      similarity: "cosine" (the towers, as trained by InfoNCE) or "correlation" (the linear
        baseline, as Stringer et al.'s decoders).

    Returns:
      A flat dict of floats: "top{k}", "mean_rank", "median_rank" for neural query -> image
      candidates (the paper's Table 1), the same prefixed "i2n_" for image query -> neural
      candidates, and "n_candidates". Accuracies are fractions in [0, 1].
    """
    measure = {"cosine": cosine_similarity_matrix, "correlation": correlation_matrix}[similarity]
    matrix = measure(jnp.asarray(z_img), jnp.asarray(z_neu))  # (img, neu)
    metrics = retrieval_from_similarity(matrix.T, topk)  # Rows: neural queries.
    reverse = retrieval_from_similarity(matrix, topk)  # Rows: image queries.
    metrics.update({f"i2n_{key}": value for key, value in reverse.items()})
    metrics["n_candidates"] = int(matrix.shape[0])
    return metrics


def chance_metrics(n_candidates: int, topk: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval of a random ranking: top-k = k / n, mean rank = (n + 1) / 2."""
    metrics = {f"top{k}": min(k, n_candidates) / n_candidates for k in topk}
    metrics["mean_rank"] = metrics["median_rank"] = (n_candidates + 1) / 2
    return metrics


# ----------------------------------------------------------------------------- linear baseline
def pixel_pcs(images: np.ndarray, n_pcs: int) -> tuple[np.ndarray, np.ndarray]:
    """Leading principal components of flattened images (S, H, W).

    Returns (mean (H*W,), components (K, H*W)) in float64, K = min(n_pcs, S - 1), components
    orthonormal and ordered by decreasing variance, each with a fixed sign (largest-magnitude
    loading positive) so that results do not depend on the eigensolver.
    """
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    mean = x.mean(axis=0, dtype=np.float64)
    x = x - mean.astype(np.float32)
    n_pcs = min(n_pcs, len(x) - 1)
    # The top eigenvectors of the S x S Gram matrix give the components without a D x D matrix;
    # the Gram product (the cost) runs in float32, the eigensolver in float64.
    gram = (x @ x.T).astype(np.float64)
    eigenvalues, eigenvectors = scipy.linalg.eigh(
        gram, subset_by_index=(len(x) - n_pcs, len(x) - 1)
    )
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]  # Decreasing variance.
    components = (eigenvectors.T @ x).astype(np.float64)  # (K, S) x (S, D) -> (K, D)
    components /= np.sqrt(np.maximum(eigenvalues, _EPS))[:, None]
    signs = np.sign(components[np.arange(n_pcs), np.argmax(np.abs(components), axis=1)])
    return mean, components * signs[:, None]


def ridge_fit(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Closed-form ridge regression for several regularization strengths at once.

    W_alpha = argmin ||Xc W - Yc||^2 + alpha ||W||^2 with Xc, Yc the centred inputs and targets.
    One eigendecomposition of the smaller Gram matrix serves every alpha: with N <= S,
    Xc^T Xc = V diag(l) V^T and W = V diag(1 / (l + alpha)) V^T Xc^T Yc (primal); with N > S,
    Xc Xc^T = U diag(l) U^T and W = Xc^T U diag(1 / (l + alpha)) U^T Yc (dual), so the cost is
    O(min(S, N)^2 max(S, N)).

    Args:
      x: (S, N) inputs (responses); y: (S, K) targets (pixel-PC scores); alphas: (A,) strengths.

    Returns:
      (A, N, K) float64 weights; predictions are (x - x.mean(0)) @ W + y.mean(0).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    primal = xc.shape[1] <= xc.shape[0]
    gram = xc.T @ xc if primal else xc @ xc.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projected = eigenvectors.T @ (xc.T @ yc if primal else yc)  # (R, K)
    weights = []
    for alpha in alphas:
        solved = eigenvectors @ (projected / (eigenvalues + alpha)[:, None])
        weights.append(solved if primal else xc.T @ solved)
    return np.stack(weights)


def linear_baseline(
    images: np.ndarray,
    responses: np.ndarray,
    split: pipeline.Split,
    *,
    n_pcs: int,
    alphas: Sequence[float],
    topk: Sequence[int] = (1, 5, 10),
) -> dict:
    """Ridge regression from responses to pixel PCs, retrieval by correlation in PC space.

    The image PCs and the regression are fitted on the training split; alpha is the one with the
    best validation retrieval (top-1, then lower mean rank) among the validation images; the test
    responses' predicted PC scores are then matched to the test images' PC scores by Pearson
    correlation across the K components (the PC scores are not whitened, so this is the
    correlation of the predicted and true low-pass images). Deterministic.

    Args:
      images: (S, H, W) the image shown for each row; responses: (S, N).
      split: the run's train/val/test rows.
      n_pcs: K, the number of pixel PCs predicted; alphas: the ridge grid.

    Returns:
      {"top{k}", "mean_rank", "median_rank", "i2n_...", "alpha", "n_pcs",
       "val_top1": {alpha: ...}} for the test split.
    """
    mean, components = pixel_pcs(images[split.train], n_pcs)

    def pc_scores(rows):
        return (np.asarray(images[rows], np.float64).reshape(len(rows), -1) - mean) @ components.T

    train_x = np.asarray(responses[split.train], np.float64)
    train_y = pc_scores(split.train)
    weights = ridge_fit(train_x, train_y, alphas)  # (A, N, K)

    def predict(rows, w):
        return (np.asarray(responses[rows], np.float64) - train_x.mean(axis=0)) @ w + train_y.mean(
            axis=0
        )

    def scores(rows, w):
        # Image PCs as candidates (rows of the matrix built image x neural, as for the towers).
        return retrieval_metrics(predict(rows, w), pc_scores(rows), topk, similarity="correlation")

    val = [scores(split.val, w) for w in weights]
    best = max(range(len(alphas)), key=lambda a: (val[a]["top1"], -val[a]["mean_rank"]))
    result = scores(split.test, weights[best])
    result["alpha"] = float(alphas[best])
    result["n_pcs"] = int(components.shape[0])
    result["val_top1"] = {f"{alpha:g}": v["top1"] for alpha, v in zip(alphas, val, strict=True)}
    return result


# ------------------------------------------------------------------------------ map similarity
@jax.jit
def minmax_normalize(maps: jax.Array) -> jax.Array:
    """Rescales every map (B, H, W) to [0, 1] by its own min and max (a constant map -> zeros).

    The contrastive loss fixes neither the scale nor the offset of either tower's maps (only the
    direction of the flattened map matters), so SSIM/LPIPS compare the maps as images after this
    normalization; raw-map SSIM is reported beside it.
    """
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return jnp.where(span > 0, (maps - low) / jnp.maximum(span, _EPS), 0.0)


def map_similarity(z_img: np.ndarray, z_neu: np.ndarray, *, win_size: int = 7) -> dict:
    """SSIM between each image-tower map and its paired neural-tower map (Sec. 4.3).

    Args:
      z_img, z_neu: (B, 16, 64) (or (B, 1, 16, 64)) paired maps.
      win_size: SSIM window.

    Returns:
      {"mean", "std", "per_pair" (B,) list} on min-max normalized maps (data range 1), the image
      map as reference; "unpaired_mean"/"unpaired_std", the same between each image map and the
      neural map of the stimulus B // 2 positions further (a non-matching pair: the level the
      paired value must be compared with); "raw_mean"/"raw_std" on the raw maps with the image
      map's range as data range.
    """
    hw = z_img.shape[-2:]
    z_img = jnp.asarray(z_img, jnp.float32).reshape(-1, *hw)
    z_neu = jnp.asarray(z_neu, jnp.float32).reshape(-1, *hw)
    img, neu = minmax_normalize(z_img), minmax_normalize(z_neu)
    paired = np.asarray(ssim_lib.batched_ssim(img, neu, win_size=win_size, data_range=1.0))
    shifted = jnp.roll(neu, len(neu) // 2, axis=0)
    unpaired = np.asarray(ssim_lib.batched_ssim(img, shifted, win_size=win_size, data_range=1.0))
    raw = np.asarray(ssim_lib.batched_ssim(z_img, z_neu, win_size=win_size))
    return {
        "mean": float(paired.mean()),
        "std": float(paired.std()),
        "unpaired_mean": float(unpaired.mean()),
        "unpaired_std": float(unpaired.std()),
        "raw_mean": float(raw.mean()),
        "raw_std": float(raw.std()),
        "win_size": int(win_size),
        "per_pair": paired.tolist(),
    }


# ----------------------------------------------------------------------------------------- LPIPS
# LPIPS (Zhang et al. 2018) with the AlexNet trunk ("alex", v0.1). The weights are read from a local
# .npz file (config.eval.lpips_weights) holding PyTorch-layout float arrays:
#   conv{i}_weight (O, I, kh, kw), conv{i}_bias (O,), i = 1..5: the five AlexNet convolutions
#       (torchvision alexnet.features[0, 3, 6, 8, 10]); shapes in LPIPS_CONVS below;
#   lin{j}_weight (1, C_j, 1, 1), j = 0..4: LPIPS' non-negative per-channel weights of the five
#       ReLU taps (lin{j}.model.1.weight in the lpips package's alex.pth, v0.1).
# Such a file is made, where the weights can be downloaded, with e.g.
#   f = torchvision.models.alexnet(weights="IMAGENET1K_V1").features
#   lin = torch.load("lpips/weights/v0.1/alex.pth")
#   np.savez(path, **{f"conv{i+1}_weight": f[k].weight.detach().numpy() ... for i, k in ...},
#            **{f"lin{j}_weight": lin[f"lin{j}.model.1.weight"].numpy() for j in range(5)})
LPIPS_CONVS = (  # name, weight shape (O, I, kh, kw), stride, padding, max-pool before it
    ("conv1", (64, 3, 11, 11), 4, 2, False),
    ("conv2", (192, 64, 5, 5), 1, 2, True),
    ("conv3", (384, 192, 3, 3), 1, 1, True),
    ("conv4", (256, 384, 3, 3), 1, 1, False),
    ("conv5", (256, 256, 3, 3), 1, 1, False),
)
# LPIPS' input scaling layer: x in [-1, 1] -> (x - shift) / scale, per RGB channel.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def lpips_expected_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes an LPIPS weights .npz must hold (see the comment above)."""
    shapes = {}
    for j, (name, shape, *_) in enumerate(LPIPS_CONVS):
        shapes[f"{name}_weight"] = shape
        shapes[f"{name}_bias"] = (shape[0],)
        shapes[f"lin{j}_weight"] = (1, shape[0], 1, 1)
    return shapes


def load_lpips_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads and validates an LPIPS weights .npz; raises DataError with one line on a bad file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: LPIPS weights file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key], np.float32) for key in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    for key, shape in lpips_expected_shapes().items():
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} of shape {shape}")
        if arrays[key].shape != shape:
            raise DataError(
                f"{path}: array {key!r} has shape {arrays[key].shape}, expected {shape}"
            )
        if not np.all(np.isfinite(arrays[key])):
            raise DataError(f"{path}: array {key!r} holds non-finite values")
    return {key: arrays[key] for key in lpips_expected_shapes()}


def lpips_features(weights: dict, x: jax.Array) -> list[jax.Array]:
    """AlexNet ReLU taps relu1..relu5 of scaled images x (B, 3, H, W) -> 5 arrays (B, C, h, w)."""
    features = []
    for name, _, stride, padding, pool in LPIPS_CONVS:
        if pool:  # PyTorch MaxPool2d(3, stride=2), no padding.
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "VALID")
        x = jax.lax.conv_general_dilated(
            x,
            jnp.asarray(weights[f"{name}_weight"]),
            window_strides=(stride, stride),
            padding=((padding, padding), (padding, padding)),
            dimension_numbers=("NCHW", "OIHW", "NCHW"),  # PyTorch layout, cross-correlation.
        )
        x = jax.nn.relu(x + jnp.asarray(weights[f"{name}_bias"])[None, :, None, None])
        features.append(x)
    return features


def lpips_from_features(weights: dict, f0: list[jax.Array], f1: list[jax.Array]) -> jax.Array:
    """LPIPS distance (B,) from two lists of taps: sum over layers of the spatial mean of
    w_l . (f0_hat - f1_hat)^2, f_hat the features unit-normalized across channels."""

    def unit(f):
        return f / (jnp.sqrt(jnp.sum(f**2, axis=1, keepdims=True)) + 1e-10)

    distance = 0.0
    for j, (a, b) in enumerate(zip(f0, f1, strict=True)):
        w = jnp.asarray(weights[f"lin{j}_weight"])[0, :, 0, 0]  # (C,)
        per_pixel = jnp.einsum("bchw,c->bhw", (unit(a) - unit(b)) ** 2, w)
        distance = distance + per_pixel.mean(axis=(1, 2))
    return distance


@functools.partial(jax.jit, static_argnames=("resize_hw",))
def lpips_distance(
    weights: dict, maps0: jax.Array, maps1: jax.Array, *, resize_hw: tuple[int, int]
) -> jax.Array:
    """LPIPS between paired 1-channel maps (B, H, W) -> (B,).

    Each map is min-max normalized to [0, 1], mapped to [-1, 1] (LPIPS' input range), resized
    bilinearly to resize_hw (AlexNet's stride-4 11 x 11 stem and two pools need more than the
    16 x 64 grid; 64 x 256 keeps the 1:4 aspect) and replicated to 3 channels.
    """

    def prepare(maps):
        x = 2.0 * minmax_normalize(maps) - 1.0
        x = jax.image.resize(x, (x.shape[0], *resize_hw), method="bilinear")
        x = jnp.repeat(x[:, None], 3, axis=1)  # (B, H, W) -> (B, 3, H, W)
        shift = jnp.asarray(LPIPS_SHIFT)[None, :, None, None]
        scale = jnp.asarray(LPIPS_SCALE)[None, :, None, None]
        return (x - shift) / scale

    return lpips_from_features(
        weights,
        lpips_features(weights, prepare(maps0)),
        lpips_features(weights, prepare(maps1)),
    )


def map_lpips(
    z_img: np.ndarray, z_neu: np.ndarray, weights_path: str, *, resize_hw: tuple[int, int]
) -> dict:
    """LPIPS between paired image/neural maps, or {"status": LPIPS_MISSING} without weights."""
    if not weights_path:
        return {"status": LPIPS_MISSING}
    weights = load_lpips_weights(weights_path)
    hw = z_img.shape[-2:]
    distances = np.asarray(
        lpips_distance(
            weights,
            jnp.asarray(z_img, jnp.float32).reshape(-1, *hw),
            jnp.asarray(z_neu, jnp.float32).reshape(-1, *hw),
            resize_hw=tuple(resize_hw),
        )
    )
    return {
        "status": "computed",
        "weights": str(weights_path),
        "mean": float(distances.mean()),
        "std": float(distances.std()),
    }


# ------------------------------------------------------------------------------------- spectra
def map_spectra(
    images: np.ndarray, z_img: np.ndarray, z_neu: np.ndarray, fit_range: tuple[int, int]
) -> dict:
    """PCA variance spectra and power-law exponents of images and both towers' maps (Fig. 4b)."""
    result = {}
    for name, x in (("images", images), ("image_maps", z_img), ("neural_maps", z_neu)):
        var, alpha = spectra.variance_spectrum(x, fit_range=fit_range)
        _, _, used = spectra.fit_power_law(var, fit_range)
        result[name] = {"alpha": alpha, "fit_range": list(used), "variance": var.tolist()}
    return result


# ---------------------------------------------------------------------------------- evaluation
def noise_ceiling(halves: np.ndarray, rows: np.ndarray, topk: Sequence[int]) -> dict[str, float]:
    """Repeat-to-repeat decoding of the test images (Stringer et al.'s correlation decoder)."""
    ceiling = pipeline.repeat_decoding_accuracy(halves, rows=rows, topk=tuple(topk))
    return {key: float(value) for key, value in ceiling.items() if np.isscalar(value)}


def _run_config(config: ml_collections.ConfigDict | None, saved) -> ml_collections.ConfigDict:
    """The config an evaluation runs with: the caller's (data paths, eval settings; the base
    config when None) with the ``model`` section of the checkpoint merged over it key by key.

    The checkpoint's model fields fix the architecture of the saved parameters; fields added to
    the code after the run was trained keep the caller's (default) values.
    """
    saved = ml_collections.ConfigDict(saved.to_dict() if hasattr(saved, "to_dict") else saved)
    if config is None:
        run_config = get_base_config()
        run_config.update(saved)  # Recursive: every saved field over the defaults.
        return run_config
    run_config = ml_collections.ConfigDict(config.to_dict())
    run_config.model.update(saved.model)
    return run_config


def example_rows(n_test: int, n_examples: int) -> np.ndarray:
    """Evenly spaced positions in the test set: a fixed, unselected choice of example stimuli."""
    return np.unique(np.linspace(0, n_test - 1, num=min(n_examples, n_test)).round().astype(int))


def _finite(tree, where="results"):
    """Replaces non-finite floats by None (JSON null) so results.json never holds NaN, warning."""
    if isinstance(tree, dict):
        return {key: _finite(value, f"{where}.{key}") for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [_finite(value, where) for value in tree]
    if isinstance(tree, float | np.floating) and not math.isfinite(tree):
        logging.warning("evaluate: non-finite value at %s replaced by null", where)
        return None
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def evaluate(config: ml_collections.ConfigDict | None, workdir: str | os.PathLike) -> dict:
    """Evaluates the best checkpoint of ``workdir`` on its test split (Sec. 4.2-4.3, App. B).

    Restores ``train.restore(workdir, "best")``, rebuilds the model from the checkpoint's config,
    loads the dataset and the run's saved split, encodes the test set and computes retrieval (and
    its context: chance, linear baseline, noise ceiling), the similarity matrix, paired-map SSIM /
    LPIPS and the variance spectra. Writes ``workdir/results.json`` (every number, no NaN),
    ``workdir/test_maps.npz`` (z_img, z_neu, similarity, test rows) and ``workdir/figures/*.png``,
    prints the table and returns the results dict. Deterministic: the same checkpoint gives the
    same numbers.

    Args:
      config: the run's config (data paths and the ``eval`` section are taken from it; None uses
        the checkpoint's config).
      workdir: a training workdir with ``checkpoints/best``.
    """
    from dina_jax import train  # Imported here: train may import this module for its metrics.
    from dina_jax.models import build_model

    workdir = pathlib.Path(workdir)
    params, saved_config, stats = train.restore(str(workdir), "best")
    config = _run_config(config, saved_config)
    ev = config.eval
    topk = tuple(ev.topk)

    dataset = pipeline.load_dataset(config, workdir=str(workdir))
    split = dataset.split
    if (workdir / "split.json").exists():
        split = pipeline.load_split(str(workdir / "split.json"))
    if split.test.max(initial=-1) >= len(dataset.responses):
        raise DataError(
            f"{workdir / 'split.json'}: split rows exceed the {len(dataset.responses)} "
            "rows of the dataset; was the run trained on other data?"
        )
    test = split.test
    stats = stats or {}
    model = build_model(
        config,
        dataset.n_neurons,
        image_mean=float(stats.get("image_mean", dataset.image_mean)),
        image_std=float(stats.get("image_std", dataset.image_std)),
    )
    z_img, z_neu = encode(
        model, params, dataset.images[test], dataset.responses[test], batch_size=ev.batch_size
    )
    similarity = np.asarray(cosine_similarity_matrix(z_img, z_neu))  # (image, neural)

    results = {
        "model": config.model.name,
        "workdir": str(workdir),
        "n_test": int(len(test)),
        "n_neurons": int(dataset.n_neurons),
        "checkpoint": {k: v for k, v in stats.items() if np.isscalar(v)},
        "retrieval": retrieval_metrics(z_neu, z_img, topk),
        "chance": chance_metrics(len(test), topk),
        "linear_baseline": linear_baseline(
            dataset.images,
            dataset.responses,
            split,
            n_pcs=ev.ridge_n_pcs,
            alphas=tuple(ev.ridge_alphas),
            topk=topk,
        ),
        "noise_ceiling": noise_ceiling(dataset.halves, test, topk),
        "ssim": map_similarity(z_img, z_neu, win_size=ev.ssim_win_size),
        "lpips": map_lpips(z_img, z_neu, ev.lpips_weights, resize_hw=tuple(ev.lpips_resize_hw)),
        "spectra": map_spectra(dataset.images[test], z_img, z_neu, tuple(ev.spectrum_fit_range)),
    }
    results["figures"] = write_figures(
        workdir / "figures", dataset.images[test], z_img, z_neu, similarity, results, config
    )
    results = _finite(results)

    np.savez_compressed(
        workdir / "test_maps.npz",
        z_img=z_img,
        z_neu=z_neu,
        similarity=similarity,
        test_rows=test,
        image_index=np.asarray(dataset.recording.image_index)[test],
    )
    tmp = workdir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, workdir / "results.json")
    print(format_table(results), flush=True)
    return results


def write_figures(
    folder: pathlib.Path,
    images: np.ndarray,
    z_img: np.ndarray,
    z_neu: np.ndarray,
    similarity: np.ndarray,
    results: dict,
    config: ml_collections.ConfigDict,
) -> list[str]:
    """Fig. A.1 (similarity matrix), Fig. 4a (paired maps), Fig. 3 (top-5), Fig. 4b (spectra)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = _MODEL_LABELS.get(config.model.name, config.model.name)
    examples = example_rows(len(images), config.eval.n_example_stimuli)
    top1 = results["retrieval"]["top1"]
    paths = [
        plots.plot_similarity_matrix(
            similarity,
            folder / "similarity_matrix.png",
            title=f"{name}: image-neural cosine similarity (test, top-1 {100 * top1:.1f}%)",
        ),
        plots.plot_feature_maps(
            images[examples],
            {name: (z_img[examples], z_neu[examples])},
            folder / "feature_maps.png",
        ),
        plots.plot_topk_retrieval(
            images,
            similarity,
            examples,
            folder / "top5_retrieval.png",
            n_retrieved=config.eval.n_retrieved,
        ),
        plots.plot_variance_spectra(
            {
                "test images (pixels)": results["spectra"]["images"],
                "image-tower maps": results["spectra"]["image_maps"],
                "neural-tower maps": results["spectra"]["neural_maps"],
            },
            folder / "variance_spectra.png",
            title=f"PCA variance spectra of the {len(images)} test stimuli (dashed: power-law fit"
            f" over PC ranks {'-'.join(map(str, results['spectra']['images']['fit_range']))})",
        ),
    ]
    return [str(path) for path in paths]


# --------------------------------------------------------------------------------------- table
_MODEL_LABELS = {"dina": "DINA", "vgg16_mlp": "VGG-16-MLP", "vit_mlp": "ViT-MLP"}


def _row(label: str, metrics: dict, topk: Sequence[int], prefix: str = "") -> str:
    cells = [f"{100 * metrics[f'{prefix}top{k}']:8.2f}" for k in topk]
    rank = metrics.get(f"{prefix}mean_rank")
    cells.append(f"{rank:10.1f}" if rank is not None else f"{'-':>10}")
    return f"{label:<34}" + "".join(cells)


def format_table(results: dict) -> str:
    """The evaluation as text: retrieval next to its context, then map similarity and spectra."""
    retrieval = results["retrieval"]
    topk = [int(key[3:]) for key in retrieval if key.startswith("top")]
    name = _MODEL_LABELS.get(results["model"], results["model"])
    linear = results["linear_baseline"]
    header = f"{'':<34}" + "".join(f"{f'top-{k}':>8}" for k in topk) + f"{'mean rank':>10}"
    lines = [
        f"{results['n_test']}-way retrieval on the test images (accuracy %, neural query -> image)",
        header,
        _row(f"{name} (cosine of feature maps)", retrieval, topk),
        _row(f"Linear ridge -> {linear['n_pcs']} pixel PCs", linear, topk),
        _row("Noise ceiling (repeat halves)", results["noise_ceiling"], topk),
        _row("Chance", results["chance"], topk),
        _row(f"{name}, image query -> neural", retrieval, topk, prefix="i2n_"),
        f"(linear baseline: alpha = {linear['alpha']:g} chosen on validation top-1)",
        "",
        "Paired image/neural feature maps (Sec. 4.3)",
        f"  SSIM (min-max normalized, win {results['ssim']['win_size']}): "
        f"{results['ssim']['mean']:.3f} ± {results['ssim']['std']:.3f}"
        f"   [unpaired {results['ssim']['unpaired_mean']:.3f} ± "
        f"{results['ssim']['unpaired_std']:.3f}; raw maps {results['ssim']['raw_mean']:.3f}]",
    ]
    lpips = results["lpips"]
    if lpips.get("status") == "computed":
        lines.append(f"  LPIPS: {lpips['mean']:.3f} ± {lpips['std']:.3f}")
    else:
        lines.append(f"  {LPIPS_MISSING}")
    spectra_ = results["spectra"]
    fit = spectra_["images"]["fit_range"]
    lines.append(
        f"Variance-spectrum power-law exponents (PC ranks {fit[0]}-{fit[1]}): "
        + ", ".join(
            f"{label} {spectra_[key]['alpha']:.2f}"
            for key, label in (
                ("images", "images"),
                ("image_maps", "image maps"),
                ("neural_maps", "neural maps"),
            )
        )
    )
    return "\n".join(lines)
