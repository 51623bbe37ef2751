"""Streamed attention statistics (Fig. 6b) against materialized probabilities and known laws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dina_jax.analysis import attention_stats
from dina_jax.models.attention import attention_probabilities

B, N, HEADS, D = 3, 40, 2, 8


def _qk_fn(weights, responses):
    """A stand-in for ``neural_attention_qk``: token q/k from r_i * w_i, the last neuron masked."""
    tokens = responses[..., None] * weights[None]  # (B, N) -> (B, N, HEADS * D)
    q = tokens.reshape(*responses.shape, HEADS, D) * 0.7
    k = jnp.tanh(tokens).reshape(*responses.shape, HEADS, D)
    mask = jnp.arange(responses.shape[1]) < responses.shape[1] - 1
    return q, k, mask


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    weights = jnp.asarray(rng.normal(size=(N, HEADS * D)), jnp.float32)
    responses = rng.normal(size=(5, N)).astype(np.float32)
    return jax.tree_util.Partial(_qk_fn, weights), responses


def test_streamed_histogram_equals_materialized(setup):
    qk_fn, responses = setup
    edges = attention_stats.attention_bin_edges(N, n_bins=60)
    counts, moments = attention_stats.attention_histogram_stream(
        qk_fn, responses, edges, batch_size=2, block_size=16
    )
    q, k, mask = qk_fn(jnp.asarray(responses))
    probs = np.asarray(attention_probabilities(q, k, key_mask=mask))  # (S, H, N, N)
    keep = np.asarray(mask)
    values = probs[:, :, keep][:, :, :, keep].ravel().astype(np.float64)
    expected, _ = np.histogram(values, bins=edges.astype(np.float32))
    np.testing.assert_array_equal(counts, expected)
    assert moments["count"] == values.size
    positive = values[values > 0]
    mu, sigma = attention_stats.lognormal_fit(moments)
    assert mu == pytest.approx(np.log(positive).mean(), rel=1e-4)
    assert sigma == pytest.approx(np.log(positive).std(), rel=1e-3)
    summary = attention_stats.attention_summary(counts, moments, edges)
    assert summary["mean"] == pytest.approx(1.0 / keep.sum(), rel=1e-4)  # Rows sum to 1.
    # KS distance at the edges from the materialized values directly.
    ecdf = np.searchsorted(np.sort(positive), edges, side="right") / positive.size
    lognormal = attention_stats._normal_cdf(np.log(edges), mu, sigma)
    assert summary["ks"] == pytest.approx(np.max(np.abs(ecdf - lognormal)), abs=1e-4)


def _moments_of(values):
    values = np.asarray(values, np.float64)
    logs = np.log(values)
    moments = dict(
        count=values.size,
        sum=values.sum(),
        sum_sq=(values**2).sum(),
        count_positive=values.size,
        sum_log=logs.sum(),
        sum_log_sq=(logs**2).sum(),
    )
    return moments


def test_goodness_of_fit_separates_lognormal_from_other_laws():
    rng = np.random.default_rng(1)
    edges = np.geomspace(1e-6, 1.0, 201)
    lognormal = np.clip(rng.lognormal(-7.0, 1.3, size=200_000), 1e-6, 1.0)
    counts, _ = np.histogram(lognormal, edges)
    fit = attention_stats.attention_summary(counts, _moments_of(lognormal), edges)
    assert fit["mu"] == pytest.approx(-7.0, abs=0.02)
    assert fit["sigma"] == pytest.approx(1.3, abs=0.02)
    assert fit["ks"] < 0.01
    assert fit["r2_density"] > 0.99
    assert fit["ks_normal"] > 0.2  # A skewed law is far from a normal one.
    # A uniform distribution on a log scale is not log-normal.
    other = 10 ** rng.uniform(-5.0, -1.0, size=200_000)
    counts, _ = np.histogram(other, edges)
    assert attention_stats.attention_summary(counts, _moments_of(other), edges)["ks"] > 0.05


def test_bin_edges_span_six_decades_below_uniform():
    edges = attention_stats.attention_bin_edges(1000, n_bins=200)
    assert edges.shape == (201,)
    assert edges[0] == pytest.approx(1e-9) and edges[-1] == 1.0
    assert np.allclose(np.diff(np.log(edges)), np.log(edges[1] / edges[0]))
