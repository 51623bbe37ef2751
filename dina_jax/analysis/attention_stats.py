"""Distribution of the neural tower's attention scores and its log-normal fit (Sec. 4.5, Fig. 6b).

The attention probabilities P[h, i, j] = softmax_j(q_i . k_j) of the population self-attention are
read as functional interaction strengths between neurons. For N = 10,000 neurons a sample has
1e8 of them per head, so they are never stored: ``dina_jax.models.attention.attention_histogram``
streams each sample block by block into a histogram on log-spaced bins plus the moments of
log P, and this module accumulates those over samples (int64 counts, float64 sums).

Conventions (docs/decisions.md):
- Pooled over heads and analysed stimuli; excluded (masked) neurons are neither queries nor keys.
- Bins: ``n_bins`` log-spaced edges from 1e-6 / N to 1 (a row of N probabilities averages 1 / N,
  so the range covers six decades below the uniform value and everything above it).
- Log-normal fit: maximum likelihood from the streamed log-moments, mu = mean(ln P),
  sigma = std(ln P) over all P > 0 (not from the binned counts, so it does not depend on the bins).
- Goodness of fit: the Kolmogorov-Smirnov distance between the empirical CDF, evaluated exactly at
  the bin edges, and the fitted log-normal CDF (``ks``; the supremum over the edges, a lower bound
  on the continuous KS statistic that converges to it as bins narrow). For scale, the same distance
  of a normal distribution fitted to P itself (``ks_normal``), and the R^2 of the fitted density
  of ln P against the histogram's (``r2_density``). With 1e8 dependent samples any p-value is 0,
  so none is reported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from dina_jax.data.pipeline import batched_apply
from dina_jax.models.attention import attention_histogram


def attention_bin_edges(n_neurons: int, n_bins: int = 200, decades_below: float = 6.0):
    """Log-spaced bin edges (n_bins + 1,) float64 from 10^-decades_below / N to 1.

    Paper: Fig. 6b: log-spaced bins of the attention probabilities of Eq. 7.

    Example::

        edges = dina_jax.attention_bin_edges(dataset.n_neurons, 200)   # (201,) float64
    """
    low = 10.0 ** (-decades_below) / n_neurons
    return np.geomspace(low, 1.0, n_bins + 1)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _histogram_step(qk_fn, responses, edges, block_size):
    q, k, key_mask = qk_fn(responses)  # (B, N) -> (B, N, H, D), (B, N, H, D), mask
    key_mask = jnp.broadcast_to(key_mask, q.shape[:2])
    counts, moments = attention_histogram(
        q, k, edges, key_mask=key_mask, query_mask=key_mask, block_size=block_size
    )
    return counts, moments


def attention_histogram_stream(
    qk_fn: Callable,
    responses: np.ndarray,
    bin_edges: np.ndarray,
    *,
    batch_size: int = 4,
    block_size: int = 512,
    progress: Callable | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Histogram and moments of the attention probabilities of many samples, streamed.

    Args:
      qk_fn: responses (B, N) -> (q, k, key_mask) with q, k (B, N, H, D) scaled so that
        softmax(q k^T) are the probabilities, e.g.
        ``Partial(functools.partial(model.apply, method="neural_attention_qk"), variables)``.
      responses: (S, N) responses of the analysed stimuli.
      bin_edges: (n_bins + 1,) increasing edges.
      batch_size: samples per compiled call.
      block_size: query/key block of the streamed histogram.
      progress: optional wrapper of the batch iterator (e.g. tqdm).

    Returns:
      counts (n_bins,) int64 and moments (dict of Python numbers summed over samples:
      ``count``, ``sum``, ``sum_sq``, ``count_positive``, ``sum_log``, ``sum_log_sq``).

    Paper: Sec. 4.5, Fig. 6b: distribution of the softmax(QK^T / sqrt(d)) scores of Eq. 7.

    Example::

        qk_fn = dina_jax.attention_qk_fn(model, params)
        counts, moments = dina_jax.attention_histogram_stream(qk_fn, responses, edges)
    """
    fn = qk_fn if isinstance(qk_fn, jax.tree_util.Partial) else jax.tree_util.Partial(qk_fn)
    responses = np.asarray(responses, np.float32)
    edges = jnp.asarray(bin_edges, jnp.float32)
    # Per-sample counts (S, n_bins) and moments (S,) are small; the N x N probabilities never
    # leave the compiled step. Per sample, so the zero-padded rows of a ragged last batch drop out.
    sample_counts, sample_moments = batched_apply(
        lambda r: _histogram_step(fn, r, edges, block_size),
        responses,
        batch_size=batch_size,
        progress=progress,
    )
    counts = sample_counts.astype(np.int64).sum(axis=0)
    totals: dict[str, float] = {}
    for name, value in sample_moments.items():
        if np.issubdtype(value.dtype, np.integer):
            totals[name] = int(value.astype(np.int64).sum())
        else:
            totals[name] = float(value.sum(dtype=float))
    return counts, totals


def lognormal_fit(moments: dict) -> tuple[float, float]:
    """Maximum-likelihood log-normal (mu, sigma) from the log-moments of the positive entries."""
    n = moments["count_positive"]
    if n < 2:
        return float("nan"), float("nan")
    mu = moments["sum_log"] / n
    variance = max(moments["sum_log_sq"] / n - mu * mu, 0.0)
    return float(mu), float(np.sqrt(variance))


def _normal_cdf(x, mean, std):
    return 0.5 * (1.0 + special.erf((np.asarray(x) - mean) / (std * np.sqrt(2.0))))


def empirical_cdf_at_edges(counts: np.ndarray, moments: dict) -> np.ndarray:
    """Empirical CDF of the positive entries at each bin edge: (n_bins + 1,).

    Entries below the first edge (counted in the moments, not in the histogram) start the CDF.
    """
    total = moments["count_positive"]
    below = total - int(np.sum(counts))  # every P <= 1 = the last edge
    return (below + np.concatenate([[0], np.cumsum(counts)])) / total


def attention_summary(counts: np.ndarray, moments: dict, bin_edges: np.ndarray) -> dict:
    """Log-normal fit and goodness of fit of a streamed attention histogram (Fig. 6b).

    Returns a dict with ``mu``, ``sigma`` (of ln P), ``median`` (e^mu), ``mean`` and ``std`` of P,
    ``ks`` (log-normal), ``ks_normal`` (a normal fitted to P), ``r2_density``, ``n_entries``
    and ``n_zero`` (entries that underflowed to P = 0 and are left out of the log-normal fit).

    Paper: Sec. 4.5, Fig. 6b: log-normal fit of the attention scores.

    Example::

        fit = dina_jax.attention_summary(counts, moments, edges)
        fit["mu"], fit["sigma"], fit["ks"]
    """
    edges = np.asarray(bin_edges, np.float64)
    counts = np.asarray(counts, np.int64)
    mu, sigma = lognormal_fit(moments)
    n = moments["count"]
    mean = moments["sum"] / n
    std = float(np.sqrt(max(moments["sum_sq"] / n - mean * mean, 0.0)))
    empirical = empirical_cdf_at_edges(counts, moments)
    lognormal = _normal_cdf(np.log(edges), mu, sigma)
    normal = _normal_cdf(edges, mean, std)
    # R^2 of the fitted density of ln P against the histogram's, over all bins.
    log_widths = np.diff(np.log(edges))
    density = counts / (moments["count_positive"] * log_widths)
    fitted = np.diff(lognormal) / log_widths
    total = np.sum((density - density.mean()) ** 2)
    r2 = 1.0 - np.sum((density - fitted) ** 2) / total if total > 0 else float("nan")
    return dict(
        mu=mu,
        sigma=sigma,
        median=float(np.exp(mu)),
        mean=float(mean),
        std=std,
        ks=float(np.max(np.abs(empirical - lognormal))),
        ks_normal=float(np.max(np.abs(empirical - normal))),
        r2_density=float(r2),
        n_entries=int(n),
        n_zero=int(n - moments["count_positive"]),
    )
