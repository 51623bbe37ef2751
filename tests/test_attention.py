"""Attention implementations against the materialized formula; the streamed histogram against
np.histogram of the materialized probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dina_jax.models import attention

ATOL = 1e-5


# Test data from NumPy: jax.random would compile a threefry program per shape (slow on CPU).
def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _bernoulli(seed, p, shape):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def _qkv(seed, batch, n_queries, n_keys, heads, dim, dim_v=None):
    q = _normal((seed, 0), (batch, n_queries, heads, dim))
    k = _normal((seed, 1), (batch, n_keys, heads, dim))
    v = _normal((seed, 2), (batch, n_keys, heads, dim_v or dim))
    return q, k, v


def _numpy_attention(q, k, v, mask, scale):
    """Float64 oracle: (B, Nq, H, D) ... -> (B, Nq, H, Dv); all-masked rows are 0."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    keep = np.broadcast_to(np.asarray(mask, bool)[:, None, None, :], logits.shape)
    logits = np.where(keep, logits, -np.inf)
    row_max = logits.max(-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(keep, np.exp(logits - row_max), 0.0)
    total = weights.sum(-1, keepdims=True)
    probs = weights / np.where(total > 0, total, 1.0)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


# Shapes: N not divisible by the block, cross-attention with Nq != Nk, Dv != D, several heads.
SHAPES = [
    dict(batch=2, n_queries=37, n_keys=37, heads=2, dim=8, block=16),
    dict(batch=1, n_queries=29, n_keys=45, heads=1, dim=4, dim_v=6, block=8),
    dict(batch=3, n_queries=10, n_keys=10, heads=3, dim=4, block=512),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"Nq{s['n_queries']}Nk{s['n_keys']}")
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("impl", ["blockwise", "compact"])
def test_efficient_kernels_equal_materialized_values_and_gradients(shape, masked, impl):
    shape = dict(shape)
    block = shape.pop("block")
    q, k, v = _qkv(0, **shape)
    mask = None
    if masked:
        mask = _bernoulli(1, 0.6, (shape["batch"], shape["n_keys"]))
        mask = mask.at[:, 0].set(True)
    cotangent = _normal(2, q.shape[:3] + (v.shape[-1],))

    def loss(impl):
        def f(q, k, v):
            out = attention.dot_product_attention(
                q, k, v, key_mask=mask, implementation=impl, block_size=block
            )
            return jnp.sum(out * cotangent), out

        return jax.jit(jax.grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    grads_m, out_m = loss("materialized")
    grads_b, out_b = loss(impl)
    scale = 1.0 / np.sqrt(shape["dim"])
    keep = np.ones(k.shape[:2], bool) if mask is None else np.asarray(mask)
    np.testing.assert_allclose(out_m, _numpy_attention(q, k, v, keep, scale), atol=ATOL)
    np.testing.assert_allclose(out_b, out_m, atol=ATOL)
    for g_b, g_m in zip(grads_b, grads_m, strict=True):
        np.testing.assert_allclose(g_b, g_m, atol=ATOL)


@pytest.mark.parametrize("impl", ["materialized", "compact", "blockwise"])
def test_fully_and_almost_fully_masked_rows_are_finite(impl):
    q, k, v = _qkv(3, 2, 21, 21, 1, 4)
    nothing = jnp.zeros((2, 21), bool)
    one = nothing.at[:, 7].set(True)

    @jax.jit
    def f(q, mask):
        def loss(q):
            out = attention.dot_product_attention(
                q, k, v, key_mask=mask, implementation=impl, block_size=8
            )
            return out.sum(), out

        return jax.grad(loss, has_aux=True)(q)

    grad, out = f(q, nothing)
    assert np.all(np.asarray(out) == 0.0)
    assert np.all(np.isfinite(grad))
    # With a single key left, every query returns that key's value.
    grad, out = f(q, one)
    np.testing.assert_allclose(out, jnp.broadcast_to(v[:, 7:8], out.shape), atol=ATOL)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("impl", ["materialized", "compact", "blockwise"])
def test_vmap_over_key_masks_equals_a_loop(impl):
    q, k, v = _qkv(4, 2, 19, 19, 1, 4)
    masks = _bernoulli(5, 0.5, (3, 19)).at[:, 0].set(True)

    def f(mask):
        return attention.dot_product_attention(
            q, k, v, key_mask=mask, implementation=impl, block_size=8
        )

    batched = jax.jit(jax.vmap(f))(masks)
    single = jax.jit(f)
    for index in range(masks.shape[0]):
        np.testing.assert_allclose(batched[index], single(masks[index]), atol=ATOL)


def test_unknown_and_explicit_implementations_resolve_on_any_backend():
    for name in ("materialized", "compact", "blockwise", "cudnn"):
        assert attention.resolve_implementation(name, dtype=jnp.float32, head_dim=32) == name
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        attention.resolve_implementation("flash", dtype=jnp.float32, head_dim=32)
    # float32 never qualifies for cuDNN: "auto" falls back to compact for a call whose logits
    # fit in cache, else blockwise, everywhere.
    assert attention.resolve_implementation("auto", dtype=jnp.float32, head_dim=32) == "blockwise"
    limit = attention.COMPACT_MAX_LOGITS
    for n_logits, expected in ((limit, "compact"), (limit + 1, "blockwise")):
        got = attention.resolve_implementation(
            "auto", dtype=jnp.float32, head_dim=32, n_logits=n_logits
        )
        assert got == expected


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="asserts the CPU fallback of 'auto'")
def test_auto_picks_blockwise_on_cpu_and_cudnn_is_guarded():
    for dtype in (jnp.float32, jnp.bfloat16):
        assert attention.resolve_implementation("auto", dtype=dtype, head_dim=32) == "blockwise"
    q, k, v = _qkv(0, 1, 8, 8, 1, 4)
    with pytest.raises(ValueError, match="'cudnn' needs a GPU backend.*got backend 'cpu'"):
        attention.dot_product_attention(q, k, v, implementation="cudnn")
    auto = attention.dot_product_attention(q, k, v, implementation="auto")
    np.testing.assert_allclose(auto, attention.dot_product_attention(q, k, v), atol=ATOL)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs a GPU")
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cudnn_agrees_with_blockwise_in_bfloat16_on_gpu(masked):
    batch, n, dim = 2, 1000, 32
    q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(12, batch, n, n, 1, dim))
    mask = None
    if masked:
        mask = _bernoulli(13, 0.6, (batch, n)).at[:, 0].set(True)
    assert attention.resolve_implementation("auto", dtype=jnp.bfloat16, head_dim=dim) == "cudnn"

    @jax.jit
    def both(q, k, v, mask):
        return tuple(
            attention.dot_product_attention(q, k, v, key_mask=mask, implementation=impl)
            for impl in ("cudnn", "blockwise", "auto")
        )

    cudnn, blockwise, auto = both(q, k, v, mask)
    assert cudnn.dtype == blockwise.dtype == jnp.bfloat16 and cudnn.shape == (batch, n, 1, dim)
    cudnn, blockwise = np.asarray(cudnn, np.float32), np.asarray(blockwise, np.float32)
    np.testing.assert_array_equal(np.asarray(auto, np.float32), cudnn)
    # Both against the float64 oracle of the bfloat16 inputs, and against each other; outputs are
    # O(0.1) averages of ~600-1000 values, bfloat16 keeps ~3 significant digits.
    keep = np.ones((batch, n), bool) if mask is None else np.asarray(mask)
    exact = _numpy_attention(q, k, v, keep, 1.0 / np.sqrt(dim))
    np.testing.assert_allclose(cudnn, exact, atol=2e-2)
    np.testing.assert_allclose(blockwise, exact, atol=2e-2)
    np.testing.assert_allclose(cudnn, blockwise, atol=2e-2)
    if masked:  # the mask matters at this tolerance
        unmasked = _numpy_attention(q, k, v, np.ones((batch, n), bool), 1.0 / np.sqrt(dim))
        assert np.abs(unmasked - exact).max() > 0.1


def test_cudnn_key_mask_folding_is_exact():
    """The cuDNN path folds the key mask into an extra q/k column; check that algebra on CPU."""
    q, k, v = _qkv(6, 2, 13, 17, 2, 5, dim_v=3)
    mask = _bernoulli(7, 0.5, (2, 17)).at[:, 2].set(True)
    scale = 0.3

    @jax.jit
    def both(q, k, v, mask):
        q_folded, k_folded, v_folded = attention.fold_key_mask_into_qk(q * scale, k, v, mask)
        assert q_folded.shape[-1] % 8 == 0 and v_folded.shape[-1] == q_folded.shape[-1]
        folded = attention.dot_product_attention(
            q_folded, k_folded, v_folded, implementation="materialized", scale=1.0
        )[..., :3]
        expected = attention.dot_product_attention(
            q, k, v, key_mask=mask, implementation="materialized", scale=scale
        )
        return folded, expected

    folded, expected = both(q, k, v, mask)
    np.testing.assert_allclose(folded, expected, atol=ATOL)


def test_bfloat16_blockwise_is_close_to_float32():
    q, k, v = _qkv(8, 2, 33, 33, 1, 8)
    exact = jax.jit(attention.dot_product_attention, static_argnames="implementation")(
        q, k, v, implementation="materialized"
    )
    low = jax.jit(lambda q, k, v: attention.dot_product_attention(q, k, v, block_size=16))(
        *(x.astype(jnp.bfloat16) for x in (q, k, v))
    )
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(low.astype(jnp.float32), exact, atol=3e-2)


def test_balanced_block_minimizes_padding():
    assert attention.balanced_block(10_000, 512) == 500
    assert attention.balanced_block(2_000, 512) == 500
    assert attention.balanced_block(37, 16) == 13
    assert attention.balanced_block(10, 512) == 10


def test_blockwise_memory_is_linear_in_n():
    """The compiled forward+backward never allocates an N x N buffer (XLA's own accounting)."""

    def temp_bytes(impl, n):
        q = jax.ShapeDtypeStruct((1, n, 1, 8), jnp.float32)

        def loss(q, k, v):
            return attention.dot_product_attention(q, k, v, implementation=impl).sum()

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, q, q).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    n = 4096
    square = n * n * 4
    assert temp_bytes("materialized", n) >= square  # the plain formula holds N x N
    assert temp_bytes("blockwise", n) < square / 8  # blocks of 512 x 512 and O(N) vectors


def _reference_histogram(q, k, edges, key_mask, query_mask):
    probs = np.asarray(attention.attention_probabilities(q, k, key_mask=key_mask))
    counts, moments = [], []
    for b in range(probs.shape[0]):
        keep_k = np.asarray(key_mask[b], bool)
        keep_q = np.asarray(query_mask[b], bool)
        values = probs[b][:, keep_q][:, :, keep_k].astype(np.float64).ravel()
        counts.append(np.histogram(values, np.asarray(edges, np.float64))[0])
        positive = values[values > 0]
        moments.append(
            dict(
                count=values.size,
                sum=values.sum(),
                sum_sq=(values**2).sum(),
                count_positive=positive.size,
                sum_log=np.log(positive).sum(),
                sum_log_sq=(np.log(positive) ** 2).sum(),
            )
        )
    return np.stack(counts), moments


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_attention_histogram_equals_numpy_histogram_of_materialized_probabilities(masked):
    batch, n, heads = 2, 45, 2
    q, k, _ = _qkv(9, batch, n, n, heads, 4)
    q = 2.0 * q  # sharper rows: probabilities spread over many decades
    edges = np.geomspace(1e-7, 1.0, 41).astype(np.float32)
    key_mask = np.ones((batch, n), bool)
    query_mask = np.ones((batch, n), bool)
    if masked:
        key_mask = np.asarray(_bernoulli(10, 0.7, (batch, n)))
        query_mask = key_mask.copy()
    counts, moments = attention.attention_histogram(
        q,
        k,
        edges,
        key_mask=key_mask if masked else None,
        query_mask=query_mask if masked else None,
        block_size=16,
    )
    ref_counts, ref_moments = _reference_histogram(q, k, edges, key_mask, query_mask)
    assert counts.shape == (batch, 40) and counts.dtype == jnp.int32
    np.testing.assert_array_equal(counts, ref_counts)
    for b in range(batch):
        for name, value in ref_moments[b].items():
            np.testing.assert_allclose(float(moments[name][b]), value, rtol=1e-5, err_msg=name)
    # Rows sum to one: the total probability mass is the number of counted rows x heads.
    np.testing.assert_allclose(moments["sum"], query_mask.sum(1) * heads, rtol=1e-5)


def test_attention_histogram_unbatched_and_out_of_range():
    q, k, _ = _qkv(11, 1, 30, 30, 1, 4)
    edges = np.linspace(0.02, 0.5, 13).astype(np.float32)  # many probabilities fall outside
    counts, moments = attention.attention_histogram(q[0], k[0], edges, block_size=7)
    ref_counts, ref_moments = _reference_histogram(
        q, k, edges, np.ones((1, 30), bool), np.ones((1, 30), bool)
    )
    assert counts.shape == (12,) and moments["count"].shape == ()
    np.testing.assert_array_equal(counts, ref_counts[0])
    assert int(moments["count"]) == ref_moments[0]["count"] == 900


def test_the_config_checks_name_every_implementation_and_block():
    from dina_jax.config import ATTENTIONS, IMAGE_BLOCKS
    from dina_jax.models.image_tower import BLOCKS

    assert ATTENTIONS == attention.IMPLEMENTATIONS and IMAGE_BLOCKS == BLOCKS
