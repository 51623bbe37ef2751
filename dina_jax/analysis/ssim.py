"""Structural similarity (SSIM) between 2-D maps in JAX: it jits, vmaps and differentiates.

The definition follows Wang et al. (2004) as implemented by
``skimage.metrics.structural_similarity`` with its defaults (uniform ``win_size`` x ``win_size``
window, sample covariance, K1 = 0.01, K2 = 0.03). scikit-image filters the whole image and then
discards a border of ``(win_size - 1) // 2`` pixels before averaging, so its mean SSIM only ever
uses windows lying fully inside the image; computing the local statistics over "valid" windows
gives the same mean without any boundary mode. The paper uses SSIM on feature maps with a 3 x 3
window for occlusion (App. A, Eq. 13) and between paired image/neural maps (Sec. 4.3).

Feature maps have no natural intensity range, so ``data_range=None`` takes ``max - min`` of the
first (reference) argument, the convention used everywhere in the project (docs/decisions.md).
Where maps are compared as images instead, :func:`minmax_normalize` first rescales each to [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

K1 = 0.01
K2 = 0.03
# A floor on the data range so that a constant reference map gives a finite SSIM.
_MIN_RANGE = 1e-8


def _window_mean(x: jax.Array, win_size: int) -> jax.Array:
    """Mean over every fully contained win_size x win_size window: (H, W) -> (H-w+1, W-w+1)."""
    total = jax.lax.reduce_window(
        x, 0.0, jax.lax.add, (win_size, win_size), (1, 1), padding="VALID"
    )
    return total / (win_size * win_size)


def ssim_map(
    x: jax.Array, y: jax.Array, *, win_size: int = 7, data_range: float | jax.Array | None = None
) -> jax.Array:
    """Local SSIM of two (H, W) maps over valid windows -> (H - win_size + 1, W - win_size + 1).

    Args:
      x: reference map (H, W); its range sets ``data_range`` when that is None.
      y: compared map (H, W).
      win_size: odd side of the uniform window (skimage's default is 7; App. A uses 3).
      data_range: dynamic range L in C1 = (K1 L)^2, C2 = (K2 L)^2.
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"ssim expects two (H, W) maps of one shape, got {x.shape} and {y.shape}")
    if win_size % 2 != 1 or win_size > min(x.shape):
        raise ValueError(f"win_size must be odd and at most {min(x.shape)}, got {win_size}")
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    if data_range is None:
        data_range = jnp.max(x) - jnp.min(x)
    data_range = jnp.maximum(jnp.asarray(data_range, jnp.float32), _MIN_RANGE)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    # Sample (not population) covariance inside each window, as skimage's default.
    n = win_size * win_size
    cov_norm = n / (n - 1.0)
    mean_x = _window_mean(x, win_size)
    mean_y = _window_mean(y, win_size)
    var_x = cov_norm * (_window_mean(x * x, win_size) - mean_x**2)
    var_y = cov_norm * (_window_mean(y * y, win_size) - mean_y**2)
    cov_xy = cov_norm * (_window_mean(x * y, win_size) - mean_x * mean_y)
    numerator = (2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(
    x: jax.Array, y: jax.Array, *, win_size: int = 7, data_range: float | jax.Array | None = None
) -> jax.Array:
    """Mean SSIM of two (H, W) maps (a scalar); vmap it over a leading batch axis.

    Equals ``skimage.metrics.structural_similarity(x, y, win_size=win_size, data_range=L)`` with
    L = ``data_range`` (default: max(x) - min(x)).

    Paper: Sec. 4.3 and App. A.1 Eq. 13 (Wang et al. 2004, as scikit-image).

    Example::

        value = dina_jax.ssim(z_img[0], z_neu[0], win_size=7)            # scalar
        per_pair = jax.vmap(dina_jax.ssim)(z_img, z_neu)                # (S,)
    """
    return jnp.mean(ssim_map(x, y, win_size=win_size, data_range=data_range))


def batched_ssim(
    x: jax.Array, y: jax.Array, *, win_size: int = 7, data_range: float | jax.Array | None = None
) -> jax.Array:
    """SSIM of paired maps (B, H, W) x (B, H, W) -> (B,), each pair with its own reference range."""
    return jax.vmap(lambda a, b: ssim(a, b, win_size=win_size, data_range=data_range))(x, y)


@jax.jit
def minmax_normalize(maps: jax.Array) -> jax.Array:
    """Rescales every (H, W) map to [0, 1] by its own min and max: (..., H, W) -> (..., H, W).

    (R - min R) / (max R - min R) over the last two axes; a constant map gives zeros. The one
    normalization of maps compared as images: the occlusion importance map of App. A.1 (Eq. 15,
    one (H, W) map) and the paired image/neural feature maps of Sec. 4.3 before SSIM and LPIPS
    ((B, 16, 64): the contrastive loss fixes neither the scale nor the offset of either tower's
    maps, only the direction of the flattened map).
    """
    low = jnp.min(maps, axis=(-2, -1), keepdims=True)
    span = jnp.max(maps, axis=(-2, -1), keepdims=True) - low
    # Divide by the true span whenever it is positive (no floor that would leave a map with a
    # tiny span short of 1); the inner where only keeps the unused branch finite.
    return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1.0), 0.0)
