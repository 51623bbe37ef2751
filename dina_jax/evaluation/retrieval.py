"""Retrieval between paired feature maps: similarity matrices, top-k and ranks (paper Sec. 4.2).

Every neural response is a query and the test images are the candidates (280-way retrieval on the
real data), ranked by the cosine similarity of the flattened feature maps (the InfoNCE measure;
Fig. A.1 shows the matrix); the linear baseline ranks by Pearson correlation instead. Accuracies
are reported in both directions: neural -> image (the paper's Table 1) and image -> neural.

Ranks and ties. A query's rank is 1 + the number of candidates strictly more similar than its true
match, when there are no ties. Candidates tied with the true match are broken uniformly at random
*in expectation*: the rank is 1 + #greater + #tied / 2 and top-k is the probability that the true
match lands in the first k, clip((k - #greater) / (#tied + 1), 0, 1). Without ties this is the
usual rule; with ties it keeps a collapsed model whose maps are all identical at chance level
instead of crediting it with 100 % (the optimistic "strictly greater" rule would). The result is
deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Smallest norm used when normalizing a feature vector; a zero map then has similarity 0 to
# everything instead of NaN.
_EPS = 1e-12


@jax.jit
def cosine_similarity_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity of every row of a with every row of b: (n, ...) x (m, ...) -> (n, m).

    Trailing axes are flattened (a 1 x 16 x 64 feature map is a 1024-vector), as in the InfoNCE
    loss. Fig. A.1 uses a = image-tower maps (rows), b = neural-tower maps (columns).

    Example::

        similarity = dina_jax.cosine_similarity_matrix(z_img, z_neu)   # (S, S)
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

    Example::

        z_img = dina_jax.encode_images(model, params, dataset.images[test])
        z_neu = dina_jax.encode_neurons(model, params, dataset.responses[test])
        dina_jax.retrieval_metrics(z_neu, z_img)["top1"]        # fraction in [0, 1]
    """
    measure = {"cosine": cosine_similarity_matrix, "correlation": correlation_matrix}[similarity]
    matrix = measure(jnp.asarray(z_img), jnp.asarray(z_neu))  # (img, neu)
    metrics = retrieval_from_similarity(matrix.T, topk)  # Rows: neural queries.
    reverse = retrieval_from_similarity(matrix, topk)  # Rows: image queries.
    metrics.update({f"i2n_{key}": value for key, value in reverse.items()})
    metrics["n_candidates"] = int(matrix.shape[0])
    return metrics


def retrieval_hubness(similarity: np.ndarray) -> dict[str, float]:
    """How unevenly the candidates are ranked first: a few "hub" candidates that are the top-1
    of many queries are how a contrastive model fails at retrieval with maps that still differ.

    Args:
      similarity: (Q, C) with similarity[q, c] the score of candidate c for query q.

    Returns:
      {"hub_share": the fraction of queries whose top-1 is the most often retrieved candidate
      (1 / Q at best: every query retrieves another candidate; 1 when one candidate is everyone's
      top-1), "distinct_top1": the fraction of candidates that are some query's top-1}.
    """
    similarity = np.asarray(similarity)
    counts = np.bincount(similarity.argmax(axis=1), minlength=similarity.shape[1])
    return {
        "hub_share": float(counts.max() / similarity.shape[0]),
        "distinct_top1": float(np.count_nonzero(counts) / similarity.shape[1]),
    }


def map_coherence(maps: np.ndarray) -> float:
    """Mean cosine similarity between the maps of different stimuli, (S, ...) -> float: near 1
    when every map is mostly one shared pattern (what the stimuli share), near 0 when they
    differ as much as random vectors."""
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    gram = flat @ flat.T
    n = len(flat)
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))


def retrieval_hubs(similarity: np.ndarray, z_img: np.ndarray, z_neu: np.ndarray) -> dict:
    """:func:`retrieval_hubness` of both directions and :func:`map_coherence` of both towers.

    ``similarity`` is (image, neural), as the evaluation writes it to ``test_maps.npz``.
    """
    similarity = np.asarray(similarity)
    return {
        "n2i": retrieval_hubness(similarity.T),  # rows: neural queries
        "i2n": retrieval_hubness(similarity),
        "coherence_neural": map_coherence(z_neu),
        "coherence_image": map_coherence(z_img),
    }


def chance_metrics(n_candidates: int, topk: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval of a random ranking: top-k = k / n, mean rank = (n + 1) / 2."""
    metrics = {f"top{k}": min(k, n_candidates) / n_candidates for k in topk}
    metrics["mean_rank"] = metrics["median_rank"] = (n_candidates + 1) / 2
    return metrics
