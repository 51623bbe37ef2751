"""The contrastive alignment objective: symmetric InfoNCE over the global batch (paper Sec. 3.3).

Both towers map a stimulus to a 1 x 16 x 64 feature map. The maps are flattened to D = 1024, L2
normalized, and compared by cosine similarity; image ``i`` and response ``i`` are the positive
pair, every other pairing in the batch is a negative (CLIP, Radford et al. 2021):

    s_ij   = <z_img_i, z_neu_j> / (|z_img_i| |z_neu_j|)
    L_i2n  = -1/B sum_i log softmax_j(s_ij / T)_i          (image queries, neural keys)
    L_n2i  = -1/B sum_j log softmax_i(s_ij / T)_j          (neural queries, image keys)
    L      = (L_i2n + L_n2i) / 2,   T = 0.01 (fixed).

Data parallelism. Inside ``jax.pmap(..., axis_name=name)`` each device holds b = B / n_devices
rows. ``infonce(..., axis_name=name)`` all-gathers the normalized embeddings of both towers so the
loss is the loss of the *global* batch (B - 1 negatives per query, as on one device); every device
computes the same value. The gathered copies of the *other* devices' rows are wrapped in
``stop_gradient`` and only the device's own rows stay differentiable (big_vision's trick): the
gradient one device computes is then the part of the global gradient that flows through its own
examples, and the *sum* (``psum``) of these over devices is exactly the gradient of the global
loss. Without the gather (``axis_name=None`` inside pmap) each device would contrast its b rows
only among themselves: a different, easier objective with b - 1 negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# Squared-norm floor of the L2 normalization; keeps an all-zero map finite (its cosines are 0).
_NORM_EPS = 1e-12


def l2_normalize(z: jax.Array) -> jax.Array:
    """Flattens ``z`` (B, ...) to (B, D) float32 and scales every row to unit L2 norm."""
    z = z.reshape(z.shape[0], -1).astype(jnp.float32)  # (B, 16, 64) -> (B, 1024)
    sq_norm = jnp.sum(z * z, axis=-1, keepdims=True)
    return z * lax.rsqrt(jnp.maximum(sq_norm, _NORM_EPS))


def gather_global(x: jax.Array, axis_name: str) -> jax.Array:
    """All-gathers ``x`` (b, ...) into (n_devices * b, ...) with gradient through local rows only.

    The value is ``lax.all_gather(x, axis_name, tiled=True)``; the rows that came from other
    devices are constants for autodiff, so the device's gradient is the gradient through its own
    rows. Summing these over devices (``lax.psum``) gives the gradient of a loss computed
    identically on every device from the gathered arrays.
    """
    gathered = lax.stop_gradient(lax.all_gather(x, axis_name, tiled=True))
    start = lax.axis_index(axis_name) * x.shape[0]
    return lax.dynamic_update_slice_in_dim(gathered, x, start, axis=0)


def infonce(
    z_img: jax.Array,
    z_neu: jax.Array,
    temperature: float,
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
    centre_neural: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE of paired image and neural feature maps (Sec. 3.3, CLIP loss).

    Args:
      z_img: (b, 16, 64) raw image-tower feature maps (any trailing shape, any float dtype).
      z_neu: (b, 16, 64) raw neural-tower feature maps of the same stimuli, row by row.
      temperature: the fixed softmax temperature T (0.01 in the paper).
      axis_name: inside ``pmap``/``shard_map``, the data-parallel axis: the loss is then taken
        over the global batch of all devices (see the module docstring for the gradient).
      mask: optional (b,) weights, 1 for a real example and 0 for padding (a partial evaluation
        batch); padded rows are neither queries nor keys (they are negatives of nobody).
      centre_neural: not in the paper (``config.loss.centre_neural``): subtract the mean of the
        normalized neural maps over the (global, unpadded) batch before the cosine, so that a
        pattern every neural map shares adds no score to any image (a hub); the maps are
        normalized again after.

    Returns:
      ``(loss, metrics)``; ``loss`` a float32 scalar, the mean over valid queries of both
      directions. ``metrics`` (float32 scalars, over the global batch): ``loss``,
      ``loss_img_to_neu``, ``loss_neu_to_img``, ``top1_img_to_neu`` (an image retrieves its own
      response among the batch), ``top1_neu_to_img``, ``pos_cos`` (mean matched cosine),
      ``neg_cos`` (mean unmatched cosine) and ``count`` (number of valid examples).

    Paper: Sec. 3.3: CLIP-style symmetric InfoNCE with a fixed temperature.

    Example::

        loss, metrics = dina_jax.infonce(z_img, z_neu, temperature=0.01)  # z: (B, 16, 64)
    """
    if z_img.shape[0] != z_neu.shape[0]:
        raise ValueError(f"batch sizes differ: z_img {z_img.shape}, z_neu {z_neu.shape}")
    z_img = l2_normalize(z_img)  # (b, D)
    z_neu = l2_normalize(z_neu)  # (b, D)
    if mask is None:
        mask = jnp.ones((z_img.shape[0],), jnp.float32)
    mask = mask.astype(jnp.float32)
    if axis_name is not None:
        z_img = gather_global(z_img, axis_name)  # (b, D) -> (B, D)
        z_neu = gather_global(z_neu, axis_name)
        mask = lax.all_gather(mask, axis_name, tiled=True)  # (b,) -> (B,)
    batch = z_img.shape[0]
    if centre_neural:
        centre = jnp.sum(mask[:, None] * z_neu, axis=0) / jnp.maximum(jnp.sum(mask), 1.0)
        z_neu = l2_normalize(z_neu - centre)

    # HIGHEST: TPUs would otherwise run f32 matmuls in bf16 passes; at T = 0.01 a cosine error of
    # 1e-2 moves a logit by 1.
    cos = jnp.matmul(z_img, z_neu.T, precision=lax.Precision.HIGHEST)  # (B, D) x (D, B) -> (B, B)
    valid = mask > 0
    pair_valid = valid[:, None] & valid[None, :]  # (B, B): both ends are real examples
    logits = jnp.where(pair_valid, cos / temperature, -jnp.inf)
    diag = jnp.diagonal(logits)  # (B,) positive logits
    safe_diag = jnp.where(valid, diag, 0.0)
    # Padded rows would be all -inf; give them a finite dummy row so nothing becomes NaN.
    finite_rows = jnp.where(valid[:, None], logits, 0.0)
    finite_cols = jnp.where(valid[None, :], logits, 0.0)
    loss_i2n = jax.nn.logsumexp(finite_rows, axis=1) - safe_diag  # (B,) image queries
    loss_n2i = jax.nn.logsumexp(finite_cols, axis=0) - safe_diag  # (B,) neural queries
    count = jnp.sum(mask)
    denom = jnp.maximum(count, 1.0)
    loss_i2n = jnp.sum(mask * loss_i2n) / denom
    loss_n2i = jnp.sum(mask * loss_n2i) / denom
    loss = 0.5 * (loss_i2n + loss_n2i)

    labels = jnp.arange(batch)
    hit_i2n = (jnp.argmax(finite_rows, axis=1) == labels).astype(jnp.float32)
    hit_n2i = (jnp.argmax(finite_cols, axis=0) == labels).astype(jnp.float32)
    off_diag = pair_valid & ~jnp.eye(batch, dtype=bool)
    n_off = jnp.maximum(jnp.sum(off_diag), 1)
    metrics = {
        "loss": loss,
        "loss_img_to_neu": loss_i2n,
        "loss_neu_to_img": loss_n2i,
        "top1_img_to_neu": jnp.sum(mask * hit_i2n) / denom,
        "top1_neu_to_img": jnp.sum(mask * hit_n2i) / denom,
        "pos_cos": jnp.sum(mask * jnp.diagonal(cos)) / denom,
        "neg_cos": jnp.sum(jnp.where(off_diag, cos, 0.0)) / n_off,
        "count": count,
    }
    return loss, metrics
