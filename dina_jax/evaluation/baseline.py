"""The numbers that put retrieval in context: a linear decoder and the noise ceiling (Sec. 4.2).

* :func:`linear_baseline`: ridge regression from the responses to the leading pixel PCs of the
  images (:func:`pixel_pcs`, :func:`ridge_fit`), fitted on the training split, alpha chosen on
  the validation split, test retrieval by correlation in PC space;
* :func:`noise_ceiling`: Stringer et al.'s correlation decoder between the two halves of the
  repeats of the test images, what the responses themselves allow.

Chance is ``dina_jax.evaluation.retrieval.chance_metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from dina_jax.data import pipeline
from dina_jax.evaluation.retrieval import retrieval_metrics

# Floor of a component's eigenvalue when scaling it to unit norm: a direction without variance is
# not divided by zero.
_EPS = 1e-12


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


def noise_ceiling(halves: np.ndarray, rows: np.ndarray, topk: Sequence[int]) -> dict[str, float]:
    """Repeat-to-repeat decoding of the test images (Stringer et al.'s correlation decoder).

    Args:
      halves: (2, S, N) first/second-half repeat means; rows: (S_test,) the decoded stimuli.
      topk: the k of the top-k accuracies.

    Returns:
      The scalar entries of ``pipeline.repeat_decoding_accuracy`` as floats: "top{k}" (the mean
      of both directions), "top{k}_2to1", "top{k}_1to2", "chance_top{k}", "n_stimuli".
    """
    ceiling = pipeline.repeat_decoding_accuracy(halves, rows=rows, topk=tuple(topk))
    return {key: float(value) for key, value in ceiling.items() if np.isscalar(value)}
