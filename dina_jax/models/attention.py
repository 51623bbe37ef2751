"""Scaled dot-product attention with exact, memory-efficient implementations.

One function, :func:`dot_product_attention`, serves every attention in the project (the neural
tower's population attention, Eq. 6–7 of the paper; the image tower's global stream and
co-attention, Eq. 2–3; the ViT baseline). It computes, per batch element and head,

    out = softmax(scale * q k^T + log(key_mask)) v

with four interchangeable implementations selected by a string (``config.model.neural.attention``):

``"materialized"``
    The plain formula; holds the (B, H, Nq, Nk) logits. Exact reference for tests, small N and
    analyses.
``"compact"``
    The materialized formula with a hand-written backward pass that reuses the stored
    probabilities (dS = P * (dP - rowsum(dO * O))) instead of autodiff's chain through the
    softmax. For attentions whose logits fit in cache: the image tower's co-attention (4,096
    local tokens against 64 global ones, either way round) runs 1.5-2.8x faster forward +
    backward than blockwise at 2 samples per call (benchmarks/README.md).
``"blockwise"``
    FlashAttention-style online softmax (Milakov & Gimelshein 2018; Rabe & Staats 2021; Dao 2023):
    ``lax.map`` over query blocks, ``lax.scan`` over key blocks. Blocks are balanced (N = 10,000
    with block_size 512 -> 20 blocks of 500), and only a remainder is padded with masked keys.
    Memory O(B * H * (N * D + block^2)) instead of O(B * H * N^2). It is a ``jax.custom_vjp``
    whose residuals are only (q, k, v, out, logsumexp) and whose backward pass recomputes every
    probability block (FlashAttention-2 backward): what ``jax.checkpoint`` around the scans would
    achieve, without the per-block carries that autodiff of a scan stores and with one forward
    recomputation instead of two. On CPU the (sample, head) groups are processed in chunks whose
    blocks fit the caches (~30% faster than whole-batch blocks; 3-4x faster than the
    materialized formula at batch 32). Without a key mask and without padding, no masking work is
    done. Works on CPU, GPU and TPU, under ``jit``, ``vmap`` (also over the mask) and ``grad``;
    not under forward-mode autodiff (``jax.jvp``/``jacfwd``).
``"cudnn"``
    ``jax.nn.dot_product_attention(..., implementation="cudnn")`` (cuDNN flash attention, GPU
    only, float16/bfloat16 only). A key mask is folded into one extra feature column of q and k
    (a -1e4 logit bias for excluded keys) so that no N x N mask is ever built.
``"auto"``
    ``"cudnn"`` on a GPU when dtype and head size allow it, else ``"compact"`` when the call's
    logits (B x H x Nq x Nk) have at most :data:`COMPACT_MAX_LOGITS` entries, else
    ``"blockwise"``.

Shapes follow ``jax.nn.dot_product_attention``: q (B, Nq, H, D), k (B, Nk, H, D),
v (B, Nk, H, Dv) -> (B, Nq, H, Dv). ``key_mask`` is (B, Nk) or (Nk,), bool or float
(nonzero = keep). A query row whose keys are all excluded returns zeros (not NaN).

:func:`attention_histogram` streams the probabilities softmax(q k^T) of each sample chunk by chunk
into a histogram and running moments (Fig. 6b) without ever holding N x N for the batch.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dina_jax.config import ATTENTIONS as IMPLEMENTATIONS  # the names the config check accepts

# "auto" (off the cuDNN path) takes the compact kernel when the call's logits (B x H x Nq x Nk)
# have at most this many entries (4 MB in float32: the paper-size co-attention of a CPU
# micro-batch, 2 samples x 2 heads x 4,096 x 64), where they fit the caches and the blockwise
# kernel's loops cost more than they save. The demo's whole batch of 32 through the same shapes
# (33 MB of logits) is faster blockwise (0.58 against 0.62 s per step).
COMPACT_MAX_LOGITS = 2 * 2 * 4096 * 64

# Logit bias of an excluded key in the cuDNN path: exp(-1e4) is 0 in every float format, and 1e4
# is representable in float16.
_CUDNN_MASK_BIAS = -1.0e4
_CUDNN_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
_CUDNN_MAX_HEAD_DIM = 128


def resolve_implementation(
    implementation: str, *, dtype, head_dim: int, n_logits: int | None = None
) -> str:
    """Returns the concrete implementation ``"auto"`` stands for on the default backend.

    Args:
      implementation: one of :data:`IMPLEMENTATIONS`.
      dtype: dtype of q/k/v.
      head_dim: D, the per-head feature size of q and k.
      n_logits: B * H * Nq * Nk, the size of the call's logits; None: unknown (never
        "compact").
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; expected one of "
            f"{IMPLEMENTATIONS}"
        )
    if implementation != "auto":
        return implementation
    if cudnn_applies(dtype=dtype, head_dim=head_dim):
        return "cudnn"
    if n_logits is not None and n_logits <= COMPACT_MAX_LOGITS:
        return "compact"
    return "blockwise"


def cudnn_applies(*, dtype, head_dim: int) -> bool:
    """Whether the cuDNN flash path can run: GPU backend, fp16/bf16, padded head size <= 128."""
    padded = _round_up(head_dim + 1, 8)  # +1: the folded key-mask column.
    return (
        jax.default_backend() == "gpu"
        and jnp.dtype(dtype) in _CUDNN_DTYPES
        and padded <= _CUDNN_MAX_HEAD_DIM
    )


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array | None = None,
    implementation: str = "blockwise",
    block_size: int = 512,
    scale: float | None = None,
) -> jax.Array:
    """Multi-head attention softmax(scale * q k^T) v with excluded keys (paper Eq. 3 and 7).

    Args:
      q: (B, Nq, H, D) queries.
      k: (B, Nk, H, D) keys.
      v: (B, Nk, H, Dv) values.
      key_mask: optional (B, Nk) or (Nk,) bool/float; 0 removes that key (and its value) from
        every query's softmax.
      implementation: "materialized", "compact", "blockwise", "cudnn" or "auto" (see the
        module docstring).
      block_size: query and key block of the blockwise implementation.
      scale: logit scale; None means 1 / sqrt(D) as in Eq. 3 and 7.

    Returns:
      (B, Nq, H, Dv) in the dtype of q. Rows whose keys are all excluded are 0.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be (B, N, H, D); got {q.shape}, {k.shape}, {v.shape}")
    batch, _, heads, head_dim = q.shape
    if k.shape[0] != batch or k.shape[2] != heads or k.shape[3] != head_dim:
        raise ValueError(f"q {q.shape} and k {k.shape} do not match")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k {k.shape} and v {v.shape} do not match")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    mask = _broadcast_key_mask(key_mask, batch, k.shape[1])
    implementation = resolve_implementation(
        implementation,
        dtype=q.dtype,
        head_dim=head_dim,
        n_logits=batch * heads * q.shape[1] * k.shape[1],
    )
    if implementation == "materialized":
        return _materialized_attention(q * scale, k, v, None if key_mask is None else mask)
    if implementation == "compact":
        return _compact_attention(q * scale, k, v, mask).astype(q.dtype)
    if implementation == "blockwise":
        return _blockwise_attention_bnhd(q * scale, k, v, mask, block_size, key_mask is not None)
    return _cudnn_attention(q * scale, k, v, mask)


def attention_probabilities(
    q: jax.Array, k: jax.Array, *, key_mask: jax.Array | None = None
) -> jax.Array:
    """Materialized probabilities softmax(q k^T) (no scaling: q is used as given).

    For small N, tests and single-sample inspection only.

    Args:
      q: (B, Nq, H, D); k: (B, Nk, H, D); key_mask: (B, Nk) or (Nk,).

    Returns:
      (B, H, Nq, Nk) float32; rows with no valid key are 0.
    """
    mask = _broadcast_key_mask(key_mask, q.shape[0], k.shape[1])
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    return _masked_softmax(logits, mask[:, None, None, :])


# --------------------------------------------------------------------------- helpers


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _broadcast_key_mask(key_mask, batch: int, n_keys: int) -> jax.Array:
    """(B, Nk) | (Nk,) | None -> (B, Nk) bool."""
    if key_mask is None:
        return jnp.ones((batch, n_keys), dtype=bool)
    key_mask = jnp.asarray(key_mask)
    if key_mask.shape not in ((n_keys,), (batch, n_keys)):
        raise ValueError(
            f"key_mask must be ({n_keys},) or ({batch}, {n_keys}); got {key_mask.shape}"
        )
    return jnp.broadcast_to(key_mask != 0, (batch, n_keys))


def _masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis restricted to ``mask``; all-masked rows give 0, not NaN."""
    logits = jnp.where(mask, logits, -jnp.inf)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    # The shift only guards exp against overflow; the softmax does not depend on it.
    row_max = lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    unnormalized = jnp.exp(logits - row_max)
    total = jnp.sum(unnormalized, axis=-1, keepdims=True)
    return unnormalized / jnp.where(total > 0, total, 1.0)


def _probabilities_and_output(q, k, v, mask):
    """q pre-scaled (B, Nq, H, D); mask (B, Nk) bool or None -> float32 (out (B, Nq, H, Dv),
    probabilities (B, H, Nq, Nk))."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    if mask is None:
        probs = jax.nn.softmax(logits, axis=-1)
    else:
        probs = _masked_softmax(logits, mask[:, None, None, :])
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(jnp.float32))
    return out, probs


def _materialized_attention(q, k, v, mask):
    """q pre-scaled (B, Nq, H, D); mask (B, Nk) bool or None -> (B, Nq, H, Dv)."""
    return _probabilities_and_output(q, k, v, mask)[0].astype(q.dtype)


# ------------------------------------------------------------- compact (materialized, own VJP)


@jax.custom_vjp
def _compact_attention(q, k, v, mask):
    """q pre-scaled (B, Nq, H, D), k (B, Nk, H, D), v (B, Nk, H, Dv), mask (B, Nk) bool ->
    (B, Nq, H, Dv) float32."""
    return _probabilities_and_output(q, k, v, mask)[0]


def _compact_fwd(q, k, v, mask):
    out, probs = _probabilities_and_output(q, k, v, mask)
    return out, (q, k, v, mask, probs, out)


def _compact_bwd(residuals, d_out):
    q, k, v, mask, probs, out = residuals
    d_out = d_out.astype(jnp.float32)
    d_v = jnp.einsum("bhqk,bqhd->bkhd", probs, d_out)
    d_probs = jnp.einsum("bqhd,bkhd->bhqk", d_out, v.astype(jnp.float32))
    row = jnp.einsum("bqhd,bqhd->bhq", d_out, out)[..., None]  # sum_k P dP = dO . O
    d_logits = probs * (d_probs - row)  # zero where a key is masked (P = 0 there)
    d_q = jnp.einsum("bhqk,bkhd->bqhd", d_logits, k.astype(jnp.float32))
    d_k = jnp.einsum("bhqk,bqhd->bkhd", d_logits, q.astype(jnp.float32))
    mask_cotangent = np.zeros(mask.shape, jax.dtypes.float0)
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), mask_cotangent


_compact_attention.defvjp(_compact_fwd, _compact_bwd)


# ------------------------------------------------------------------ blockwise (flash) attention


def _blockwise_attention_bnhd(q, k, v, mask, block_size, has_mask):
    """Pads to whole blocks, runs the (groups, N, D) kernel, slices the padding off.

    q pre-scaled (B, Nq, H, D), k (B, Nk, H, D), v (B, Nk, H, Dv), mask (B, Nk) bool.
    """
    batch, n_queries, heads, _ = q.shape
    n_keys = k.shape[1]
    block_q = balanced_block(n_queries, block_size)
    block_k = balanced_block(n_keys, block_size)
    pad_q = _round_up(n_queries, block_q) - n_queries
    pad_k = _round_up(n_keys, block_k) - n_keys
    # Padded keys are masked out; padded query rows are computed and dropped.
    has_mask = has_mask or pad_k > 0
    q = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0), (0, 0)))
    k = jnp.pad(k, ((0, 0), (0, pad_k), (0, 0), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, pad_k), (0, 0), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, pad_k))).astype(jnp.float32)

    def to_groups(x):  # (B, N, H, D) -> (B * H, N, D): each (sample, head) pair is independent.
        return jnp.swapaxes(x, 1, 2).reshape(batch * heads, x.shape[1], x.shape[3])

    mask = jnp.repeat(mask, heads, axis=0)  # (B, Nk) -> (B * H, Nk), sample-major like to_groups
    chunk = _group_chunk(batch * heads, block_q, block_k)
    out = _flash_attention(
        to_groups(q), to_groups(k), to_groups(v), mask, block_q, block_k, chunk, has_mask
    )  # (B * H, Nq, Dv)
    out = jnp.swapaxes(out.reshape(batch, heads, q.shape[1], -1), 1, 2)
    return out[:, :n_queries].astype(q.dtype)


def balanced_block(n: int, block_size: int) -> int:
    """The block length <= block_size that covers n with the fewest blocks and least padding.

    E.g. n = 10,000, block_size = 512 -> 20 blocks of 500 (no padding, no key mask needed).
    """
    n_blocks = -(-n // block_size)
    return -(-n // n_blocks)


def _group_chunk(n_groups: int, block_q: int, block_k: int) -> int:
    """How many (sample, head) groups one kernel step processes.

    On CPU the working set of a step (chunk x block_q x block_k float32 logits) should stay in
    the caches (~1 MiB): streaming batch-128 blocks through memory made the kernel ~30% slower.
    Accelerators want the whole batch in every step for parallelism.
    """
    if jax.default_backend() != "cpu":
        return n_groups
    target = max(1, (1 << 18) // (block_q * block_k))
    return max(d for d in range(1, min(target, n_groups) + 1) if n_groups % d == 0)


def _split_blocks(x, block, axis):
    """Moves axis ``axis`` of length n*block to a leading block axis: (..., n*block, ...) ->
    (n, ..., block, ...)."""
    shape = x.shape[:axis] + (x.shape[axis] // block, block) + x.shape[axis + 1 :]
    return jnp.moveaxis(x.reshape(shape), axis, 0)


def _merge_blocks(x, axis):
    """Inverse of :func:`_split_blocks`."""
    x = jnp.moveaxis(x, 0, axis)
    return x.reshape(x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2 :])


def _map_chunks(fn, chunk, *arrays):
    """lax.map of ``fn`` over chunks of ``chunk`` groups along axis 0; outputs are re-merged."""
    n_groups = arrays[0].shape[0]
    chunked = tuple(x.reshape((n_groups // chunk, chunk) + x.shape[1:]) for x in arrays)
    outs = lax.map(lambda xs: fn(*xs), chunked)
    return jax.tree.map(lambda x: x.reshape((n_groups,) + x.shape[2:]), outs)


def _flash_forward(q, k, v, mask, block_q, block_k, has_mask):
    """Online-softmax forward of one chunk of groups.

    Args:
      q: (G, Nq, D) pre-scaled; k: (G, Nk, D); v: (G, Nk, Dv); mask: (G, Nk) float 0/1;
      Nq and Nk are whole multiples of block_q and block_k; has_mask: apply ``mask`` (static).

    Returns:
      out (G, Nq, Dv) float32 and the row log-sum-exp (G, Nq) float32 (0 for empty rows).
    """
    k_blocks = _split_blocks(k, block_k, 1)  # (nk, G, bk, D)
    v_blocks = _split_blocks(v, block_k, 1)  # (nk, G, bk, Dv)
    m_blocks = _split_blocks(mask, block_k, 1)[:, :, None, :]  # (nk, G, 1, bk)
    groups = q.shape[0]
    dim_v = v.shape[-1]

    def one_query_block(q_block):  # (G, bq, D)
        def one_key_block(carry, key_block):
            row_max, row_sum, acc = carry
            k_j, v_j, m_j = key_block
            logits = jnp.einsum("gqd,gkd->gqk", q_block, k_j, preferred_element_type=jnp.float32)
            if has_mask:
                logits = jnp.where(m_j > 0, logits, -jnp.inf)
            new_max = jnp.maximum(row_max, jnp.max(logits, axis=-1))
            safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
            probs = jnp.exp(logits - safe_max[..., None])  # masked -> exp(-inf) = 0
            rescale = jnp.exp(row_max - safe_max)  # previous max -inf -> 0 (nothing summed yet)
            row_sum = row_sum * rescale + jnp.sum(probs, axis=-1)
            acc = acc * rescale[..., None] + jnp.einsum(
                "gqk,gkd->gqd", probs, v_j.astype(jnp.float32)
            )
            return (new_max, row_sum, acc), None

        n_rows = q_block.shape[1]
        init = (
            jnp.full((groups, n_rows), -jnp.inf, jnp.float32),
            jnp.zeros((groups, n_rows), jnp.float32),
            jnp.zeros((groups, n_rows, dim_v), jnp.float32),
        )
        (row_max, row_sum, acc), _ = lax.scan(one_key_block, init, (k_blocks, v_blocks, m_blocks))
        nonempty = row_sum > 0
        safe_sum = jnp.where(nonempty, row_sum, 1.0)
        out = acc / safe_sum[..., None]
        lse = jnp.where(nonempty, row_max + jnp.log(safe_sum), 0.0)
        return out, lse

    out_blocks, lse_blocks = lax.map(one_query_block, _split_blocks(q, block_q, 1))
    return _merge_blocks(out_blocks, 1), _merge_blocks(lse_blocks, 1)


def _flash_backward(q, k, v, mask, out, lse, d_out, block_q, block_k, has_mask):
    """FlashAttention-2 backward of one chunk: query blocks outside, key blocks inside.

    With P = exp(S - lse) and dP = dO V^T: dV = P^T dO, dS = P * (dP - rowsum(dO * O)),
    dQ = dS K, dK = dS^T Q. Every P block is recomputed, so memory stays O(N).
    Shapes as in :func:`_flash_forward`; returns dq, dk, dv (float32).
    """
    d_out = d_out.astype(jnp.float32)
    delta = jnp.sum(d_out * out, axis=-1)  # (G, Nq)
    k_blocks = _split_blocks(k, block_k, 1)  # (nk, G, bk, D)
    v_blocks = _split_blocks(v, block_k, 1)
    m_blocks = _split_blocks(mask, block_k, 1)[:, :, None, :]
    query_blocks = tuple(_split_blocks(x, block_q, 1) for x in (q, d_out, lse, delta))

    def one_query_block(dkv_acc, query_block):
        q_i, do_i, lse_i, delta_i = query_block  # (G, bq, D), (G, bq, Dv), (G, bq), (G, bq)
        q_i32 = q_i.astype(jnp.float32)

        def one_key_block(dq_i, key_block):
            k_j, v_j, m_j = key_block
            logits = jnp.einsum("gqd,gkd->gqk", q_i, k_j, preferred_element_type=jnp.float32)
            probs = jnp.exp(logits - lse_i[..., None])
            if has_mask:
                probs = jnp.where(m_j > 0, probs, 0.0)
            dv_j = jnp.einsum("gqk,gqd->gkd", probs, do_i)
            dprobs = jnp.einsum("gqd,gkd->gqk", do_i, v_j.astype(jnp.float32))
            dlogits = probs * (dprobs - delta_i[..., None])
            dq_i = dq_i + jnp.einsum("gqk,gkd->gqd", dlogits, k_j.astype(jnp.float32))
            dk_j = jnp.einsum("gqk,gqd->gkd", dlogits, q_i32)
            return dq_i, (dk_j, dv_j)

        dq_i, (dk_blocks, dv_blocks) = lax.scan(
            one_key_block, jnp.zeros(q_i.shape, jnp.float32), (k_blocks, v_blocks, m_blocks)
        )
        dk_acc, dv_acc = dkv_acc
        return (dk_acc + dk_blocks, dv_acc + dv_blocks), dq_i

    init = (jnp.zeros(k_blocks.shape, jnp.float32), jnp.zeros(v_blocks.shape, jnp.float32))
    (dk_blocks, dv_blocks), dq_blocks = lax.scan(one_query_block, init, query_blocks)
    return _merge_blocks(dq_blocks, 1), _merge_blocks(dk_blocks, 1), _merge_blocks(dv_blocks, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash_attention(q, k, v, mask, block_q, block_k, chunk, has_mask):
    """q (G, Nq, D) pre-scaled, k (G, Nk, D), v (G, Nk, Dv), mask (G, Nk) -> (G, Nq, Dv) f32."""
    return _flash_attention_fwd(q, k, v, mask, block_q, block_k, chunk, has_mask)[0]


def _flash_attention_fwd(q, k, v, mask, block_q, block_k, chunk, has_mask):
    forward = functools.partial(_flash_forward, block_q=block_q, block_k=block_k, has_mask=has_mask)
    out, lse = _map_chunks(forward, chunk, q, k, v, mask)
    return out, (q, k, v, mask, out, lse)


def _flash_attention_bwd(block_q, block_k, chunk, has_mask, residuals, d_out):
    q, k, v, mask, out, lse = residuals
    backward = functools.partial(
        _flash_backward, block_q=block_q, block_k=block_k, has_mask=has_mask
    )
    dq, dk, dv = _map_chunks(backward, chunk, q, k, v, mask, out, lse, d_out)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), jnp.zeros_like(mask)


_flash_attention.defvjp(_flash_attention_fwd, _flash_attention_bwd)


# ------------------------------------------------------------------------------------ cuDNN


def fold_key_mask_into_qk(q, k, v, mask):
    """Rewrites masked attention as unmasked attention with scale 1 (for the cuDNN kernel).

    q' = [q, 1, 0...], k' = [k, b, 0...] with b = 0 for kept and -1e4 for excluded keys, so
    q' . k' = q . k + b; v is zero-padded to the same width (cuDNN wants equal head sizes).
    The head size is padded to a multiple of 8.

    Args:
      q: (B, Nq, H, D) pre-scaled; k: (B, Nk, H, D); v: (B, Nk, H, Dv); mask: (B, Nk) bool.

    Returns:
      q' (B, Nq, H, D'), k' (B, Nk, H, D'), v' (B, Nk, H, D') with D' = roundup(max(D+1, Dv), 8).
    """
    width = _round_up(max(q.shape[-1] + 1, v.shape[-1]), 8)
    bias = jnp.where(mask, 0.0, _CUDNN_MASK_BIAS).astype(k.dtype)  # (B, Nk)
    ones = jnp.ones(q.shape[:-1] + (1,), q.dtype)
    bias = jnp.broadcast_to(bias[:, :, None, None], k.shape[:-1] + (1,))
    q = jnp.concatenate([q, ones], axis=-1)
    k = jnp.concatenate([k, bias], axis=-1)
    q = jnp.pad(q, ((0, 0), (0, 0), (0, 0), (0, width - q.shape[-1])))
    k = jnp.pad(k, ((0, 0), (0, 0), (0, 0), (0, width - k.shape[-1])))
    v = jnp.pad(v, ((0, 0), (0, 0), (0, 0), (0, width - v.shape[-1])))
    return q, k, v


def _cudnn_attention(q, k, v, mask):
    """cuDNN flash attention; q pre-scaled. Raises unless on GPU with fp16/bf16."""
    if not cudnn_applies(dtype=q.dtype, head_dim=q.shape[-1]):
        raise ValueError(
            "attention implementation 'cudnn' needs a GPU backend, float16/bfloat16 inputs "
            f"(set config.model.dtype='bfloat16') and a head size <= {_CUDNN_MAX_HEAD_DIM - 8}; "
            f"got backend {jax.default_backend()!r}, dtype {q.dtype}, head size {q.shape[-1]}. "
            "Use 'auto' to fall back to 'blockwise'."
        )
    dim_v = v.shape[-1]
    q, k, v = fold_key_mask_into_qk(q, k, v, mask)
    out = jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation="cudnn")
    # A row with every key excluded attends uniformly to the excluded keys here (it is 0 in the
    # other implementations); callers that exclude keys also drop those rows (neural tower).
    return out[..., :dim_v]


# ---------------------------------------------------------------- streamed probability histogram

MOMENT_NAMES = ("count", "sum", "sum_sq", "count_positive", "sum_log", "sum_log_sq")
_MOMENT_DTYPES = (jnp.int32, jnp.float32, jnp.float32, jnp.int32, jnp.float32, jnp.float32)


def attention_histogram(
    q: jax.Array,
    k: jax.Array,
    bin_edges,
    *,
    key_mask: jax.Array | None = None,
    query_mask: jax.Array | None = None,
    block_size: int = 512,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Histogram and moments of the attention probabilities P = softmax(q k^T), streamed.

    For Fig. 6b (attention scores as interaction strengths, log-normal fit). q and k are used as
    given (``method="neural_attention_qk"`` returns them already scaled). Samples are processed one
    at a time (``lax.map``), query rows block by block, and keys twice per query block: a first
    scan finds each row's log-sum-exp, a second computes the normalized probabilities block by
    block and adds them to the histogram. Peak memory is O(N * D + block^2 * H), never N x N.

    Counted entries: P[b, h, i, j] for every valid query row i (``query_mask``, default all) and
    valid key j (``key_mask``). Binning follows ``np.histogram``: bins are half-open
    [e_k, e_{k+1}) except the last, which is closed; values outside [e_0, e_n] are not counted.

    Args:
      q: (B, N, H, D) or (N, H, D) queries (already scaled).
      k: (B, Nk, H, D) or (Nk, H, D) keys.
      bin_edges: (n_bins + 1,) increasing edges (e.g. ``np.geomspace``).
      key_mask: (B, Nk) or (Nk,) keys to keep (excluded neurons are not keys).
      query_mask: (B, N) or (N,) query rows to count (e.g. the same neuron mask); None = all.
      block_size: query/key block length.

    Returns:
      ``counts`` (B, n_bins) int32 — per sample, to be summed in int64 by the caller (a sample of
      10,000 neurons has 1e8 entries) — and ``moments``, a dict of (B,) arrays: ``count``
      (int32), ``sum``, ``sum_sq`` (float32) over the counted entries, and ``count_positive``
      (int32), ``sum_log``, ``sum_log_sq`` (float32) over those with P > 0 (log moments for a
      log-normal fit). Without the batch
      axis in q, the leading B axis is dropped from every output.
    """
    unbatched = q.ndim == 3
    if unbatched:
        q, k = q[None], k[None]
        key_mask = None if key_mask is None else jnp.asarray(key_mask)[None]
        query_mask = None if query_mask is None else jnp.asarray(query_mask)[None]
    batch, n_queries, _, _ = q.shape
    n_keys = k.shape[1]
    edges = jnp.asarray(bin_edges, jnp.float32)
    key_mask = _broadcast_key_mask(key_mask, batch, n_keys)
    query_mask = _broadcast_key_mask(query_mask, batch, n_queries)

    block_q = balanced_block(n_queries, block_size)
    block_k = balanced_block(n_keys, block_size)
    pad_q = _round_up(n_queries, block_q) - n_queries
    pad_k = _round_up(n_keys, block_k) - n_keys
    q = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0), (0, 0)))
    k = jnp.pad(k, ((0, 0), (0, pad_k), (0, 0), (0, 0)))
    key_mask = jnp.pad(key_mask, ((0, 0), (0, pad_k)))
    query_mask = jnp.pad(query_mask, ((0, 0), (0, pad_q)))

    per_sample = functools.partial(
        _histogram_one_sample, edges=edges, block_q=block_q, block_k=block_k
    )
    counts, moments = lax.map(lambda args: per_sample(*args), (q, k, key_mask, query_mask))
    if unbatched:
        counts = counts[0]
        moments = {name: value[0] for name, value in moments.items()}
    return counts, moments


def _histogram_one_sample(q, k, key_mask, query_mask, *, edges, block_q, block_k):
    """One sample: q (Nq, H, D), k (Nk, H, D) padded to whole blocks; masks (Nq,), (Nk,) bool."""
    n_bins = edges.shape[0] - 1
    q = jnp.swapaxes(q, 0, 1)  # (H, Nq, D)
    k_blocks = _split_blocks(jnp.swapaxes(k, 0, 1), block_k, 1)  # (nk, H, bk, D)
    km_blocks = _split_blocks(key_mask, block_k, 0)  # (nk, bk)

    def logits_of(q_block, k_block, km_block):
        logits = jnp.einsum("hqd,hkd->hqk", q_block, k_block, preferred_element_type=jnp.float32)
        return jnp.where(km_block[None, None, :], logits, -jnp.inf)

    def one_query_block(carry, query_block):
        counts, moments = carry
        q_block, qm_block = query_block  # (H, bq, D), (bq,)

        def lse_step(state, key_block):  # first pass: each row's log-sum-exp
            row_max, row_sum = state
            logits = logits_of(q_block, *key_block)
            new_max = jnp.maximum(row_max, jnp.max(logits, axis=-1))
            safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
            row_sum = row_sum * jnp.exp(row_max - safe_max) + jnp.sum(
                jnp.exp(logits - safe_max[..., None]), axis=-1
            )
            return (new_max, row_sum), None

        shape = q_block.shape[:2]
        (row_max, row_sum), _ = lax.scan(
            lse_step,
            (jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32)),
            (k_blocks, km_blocks),
        )
        row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
        lse = row_max + jnp.log(jnp.where(row_sum > 0, row_sum, 1.0))  # (H, bq)

        def hist_step(state, key_block):  # second pass: normalized probabilities -> histogram
            counts, moments = state
            k_block, km_block = key_block
            probs = jnp.exp(logits_of(q_block, k_block, km_block) - lse[..., None])  # (H, bq, bk)
            valid = qm_block[None, :, None] & km_block[None, None, :]
            valid = jnp.broadcast_to(valid, probs.shape)
            bins = jnp.searchsorted(edges, probs, side="right") - 1
            in_range = valid & (probs >= edges[0]) & (probs <= edges[-1])
            bins = jnp.clip(bins, 0, n_bins - 1)  # p == last edge goes to the closed last bin
            counts = counts.at[bins.ravel()].add(in_range.ravel().astype(jnp.int32))
            positive = valid & (probs > 0)
            logp = jnp.log(jnp.where(positive, probs, 1.0))
            block_moments = (
                valid.astype(jnp.int32),
                jnp.where(valid, probs, 0.0),
                jnp.where(valid, probs * probs, 0.0),
                positive.astype(jnp.int32),
                jnp.where(positive, logp, 0.0),
                jnp.where(positive, logp * logp, 0.0),
            )
            # Row sums first (short reductions), then across rows: keeps float32 error small.
            moments = tuple(
                acc + jnp.sum(jnp.sum(x, axis=-1))
                for acc, x in zip(moments, block_moments, strict=True)
            )
            return (counts, moments), None

        (counts, moments), _ = lax.scan(hist_step, (counts, moments), (k_blocks, km_blocks))
        return (counts, moments), None

    init = (
        jnp.zeros((n_bins,), jnp.int32),
        tuple(jnp.zeros((), dtype) for dtype in _MOMENT_DTYPES),
    )
    q_blocks = _split_blocks(q, block_q, 1)  # (nq, H, bq, D)
    qm_blocks = _split_blocks(query_mask, block_q, 0)  # (nq, bq)
    (counts, moments), _ = lax.scan(one_query_block, init, (q_blocks, qm_blocks))
    return counts, dict(zip(MOMENT_NAMES, moments, strict=True))
