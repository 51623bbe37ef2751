"""Gaussian-occlusion receptive-field maps of a feature function (paper App. A.1, Fig. 5b-c).

For every occlusion centre k on a regular grid (stride s) the image is blended towards the mean
intensity of the window around the centre with a truncated, peak-normalized Gaussian G_k
(Eq. 10-11), the feature map of the occluded image is compared with that of the intact image
(Eq. 12 or 13), and the perturbations Delta_k are spread back onto the pixels with the same
Gaussians (Eq. 14) and min-max normalized (Eq. 15).

Everything for one image is ONE compiled computation: the occluded images of a chunk of centres are
built with ``vmap``, the feature function runs on one chunk at a time inside ``lax.map`` (chunk size
``batch_size``: the memory knob), and the soft assignment is evaluated in closed form. Because the
window is a square and the Gaussian is isotropic, G_k(y, x) = g(y - y_k) g(x - x_k) is separable and
the centres form a grid, so

  sum_k Delta_k G_k(y, x) = (Gy^T Delta Gx)(y, x),

with Gy (n_rows, H) and Gx (n_cols, W) the 1-D truncated Gaussians of the grid rows/columns and
Delta the (n_rows, n_cols) grid of perturbations. Eq. 14 therefore costs two small matrix
products and the (K, H, W) stack of masks (4,590 x 68 x 270 floats = 337 MB) is never materialized.

Conventions where App. A.1 is silent (docs/decisions.md):
- Grid: centres at rows 0, s, 2s, ... < H and columns 0, s, 2s, ... < W (34 x 135 = 4,590
  centres for 68 x 270 and s = 2).
- Window and edges: the Gaussian is truncated to a (6 sigma + 1)-pixel square (25 x 25 for
  sigma = 4), i.e. |dy|, |dx| <= 3 sigma. Omega is that square intersected with the image, so a
  centre near the border occludes a clipped window and I_bar_Omega is the plain (unweighted) mean
  of the image pixels inside it. Nothing is padded. Border pixels are covered by fewer centres,
  which Eq. 14's denominator accounts for.
- Repeats: App. A.1 averages N = 5 repeats "with identical parameters". For a deterministic feature
  function (every model here: no dropout, no stochastic layers) the 5 maps are identical, so the map
  is computed once. For a stochastic feature function pass ``rng`` and ``repeats``: the function is
  then called as ``feature_fn(images, key)`` and the ``repeats`` normalized maps are averaged and
  min-max normalized again (so the result stays in [0, 1] for the 0.6 blob threshold).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dina_jax.analysis.ssim import minmax_normalize, ssim

MEASURES = ("ssim", "cos")


def occlusion_grid(height: int, width: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of the occlusion centres: (n_rows,), (n_cols,) int32.

    Centres are at 0, stride, 2 stride, ... along each axis (34 x 135 for 68 x 270, stride 2).
    """
    if stride < 1:
        raise ValueError(f"occlusion stride must be >= 1, got {stride}")
    return (
        np.arange(0, height, stride, dtype=np.int32),
        np.arange(0, width, stride, dtype=np.int32),
    )


def gaussian_profiles(centres: np.ndarray, size: int, sigma: float) -> tuple[jax.Array, jax.Array]:
    """1-D truncated Gaussians and window indicators of grid centres (Eq. 10).

    Args:
      centres: (n,) pixel coordinates of the centres along one axis.
      size: length of that image axis.
      sigma: Gaussian sigma in pixels; the window is 6 sigma + 1 pixels wide (|d| <= 3 sigma).

    Returns:
      (gauss, inside), each (n, size) float32: exp(-d^2 / (2 sigma^2)) inside the window (peak 1 at
      the centre) and 0 outside; ``inside`` is the window indicator (Omega along this axis).
    """
    half = int(math.floor(3.0 * sigma))  # 6 sigma + 1 = 2 half + 1 pixels.
    offsets = jnp.arange(size)[None, :] - jnp.asarray(centres)[:, None]  # (n, size)
    inside = (jnp.abs(offsets) <= half).astype(jnp.float32)
    gauss = jnp.exp(-(offsets.astype(jnp.float32) ** 2) / (2.0 * sigma**2)) * inside
    return gauss, inside


def occlude(
    image: jax.Array,
    gy: jax.Array,
    gx: jax.Array,
    iny: jax.Array,
    inx: jax.Array,
    alpha: float,
) -> jax.Array:
    """One occluded image (Eq. 11) from the 1-D profiles of its centre.

    Args:
      image: (H, W) float32.
      gy, gx: (H,), (W,) truncated Gaussian along rows / columns, peak 1 at the centre.
      iny, inx: (H,), (W,) window indicators; Omega = their outer product (clipped to the image).
      alpha: occlusion strength.

    Returns:
      (H, W) = (1 - alpha G) I + alpha G I_bar_Omega, with G = gy gx^T.
    """
    # Mean of the image over the square window clipped to the image (I_bar_Omega).
    mean_inside = (iny @ image @ inx) / (jnp.sum(iny) * jnp.sum(inx))
    mask = alpha * gy[:, None] * gx[None, :]  # (H, W)
    return image + mask * (mean_inside - image)


def _delta(reference: jax.Array, occluded: jax.Array, measure: str, ssim_window: int) -> jax.Array:
    """Feature perturbation of one occluded map against the intact one: (h, w) x (h, w) -> ()."""
    if measure == "ssim":  # Eq. 13, data range of the intact (reference) map.
        return 1.0 - ssim(reference, occluded, win_size=ssim_window)
    a = reference.reshape(-1)
    b = occluded.reshape(-1)
    cos = jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-12)
    return 1.0 - cos  # Eq. 12.


_delta_jit = jax.jit(_delta, static_argnums=(2, 3))


def _perturbation_grid(
    feature_fn: Callable,
    image: jax.Array,
    gy: jax.Array,
    gx: jax.Array,
    iny: jax.Array,
    inx: jax.Array,
    *,
    alpha: float,
    measure: str,
    ssim_window: int,
    batch_size: int,
    key: jax.Array | None,
) -> jax.Array:
    """Delta_k of every centre of the grid: -> (n_rows, n_cols) float32."""
    n_rows, n_cols = gy.shape[0], gx.shape[0]
    n_centres = n_rows * n_cols
    n_chunks = -(-n_centres // batch_size)
    # Even chunks: at most n_chunks - 1 padded centres (4,590 = 18 x 255 for batch_size 256).
    batch_size = -(-n_centres // n_chunks)
    # Pad the centre list to whole chunks with copies of centre 0; their Deltas are dropped below.
    index = jnp.arange(n_chunks * batch_size)
    index = jnp.where(index < n_centres, index, 0).reshape(n_chunks, batch_size)
    rows, cols = index // n_cols, index % n_cols  # (n_chunks, batch) grid row / column

    if key is None:
        call = lambda x, _: feature_fn(x)  # noqa: E731
        keys = jnp.zeros((n_chunks + 1, 2), jnp.uint32)
    else:
        call = feature_fn
        keys = jax.random.split(key, n_chunks + 1)
    reference = call(image[None], keys[0])[0]  # (1, H, W) -> (h, w)

    def chunk(args):
        r, c, k = args
        occluded = jax.vmap(occlude, in_axes=(None, 0, 0, 0, 0, None))(
            image, gy[r], gx[c], iny[r], inx[c], alpha
        )  # (batch, H, W)
        features = call(occluded, k)  # (batch, H, W) -> (batch, h, w)
        return jax.vmap(lambda f: _delta(reference, f, measure, ssim_window))(features)

    deltas = jax.lax.map(chunk, (rows, cols, keys[1:]))  # (n_chunks, batch)
    return deltas.reshape(-1)[:n_centres].reshape(n_rows, n_cols)


def soft_assign(deltas: jax.Array, gy: jax.Array, gx: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Eq. 14 for a grid of centres, in closed form: (n_rows, n_cols) -> (H, W).

    R = sum_k Delta_k G_k / (sum_k G_k + eps) with G_k = gy_row(k) gx_col(k)^T, evaluated as
    Gy^T Delta Gx / (outer(sum Gy, sum Gx) + eps).
    """
    numerator = gy.T @ deltas @ gx  # (H, n_rows) (n_rows, n_cols) (n_cols, W) -> (H, W)
    denominator = jnp.sum(gy, axis=0)[:, None] * jnp.sum(gx, axis=0)[None, :]
    return numerator / (denominator + eps)


def _check(image_shape, sigma, stride, alpha, measure, batch_size, repeats):
    if len(image_shape) != 2:
        raise ValueError(f"occlusion_map expects one (H, W) image, got shape {image_shape}")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if sigma <= 0 or alpha < 0 or stride < 1 or batch_size < 1 or repeats < 1:
        raise ValueError(
            f"bad occlusion parameters: sigma={sigma}, alpha={alpha}, stride={stride}, "
            f"batch_size={batch_size}, repeats={repeats}"
        )


def _as_pytree(feature_fn: Callable) -> jax.tree_util.Partial:
    """Wraps a callable as a pytree so jit traces (not bakes in) parameters held in a Partial."""
    if isinstance(feature_fn, jax.tree_util.Partial):
        return feature_fn
    return jax.tree_util.Partial(feature_fn)


@functools.partial(
    jax.jit,
    static_argnames=(
        "sigma",
        "stride",
        "alpha",
        "measure",
        "ssim_window",
        "batch_size",
        "eps",
        "repeats",
    ),
)
def _occlusion_map_jit(
    feature_fn, image, rng, *, sigma, stride, alpha, measure, ssim_window, batch_size, eps, repeats
):
    height, width = image.shape
    row_centres, col_centres = occlusion_grid(height, width, stride)
    gy, iny = gaussian_profiles(row_centres, height, sigma)
    gx, inx = gaussian_profiles(col_centres, width, sigma)
    run = functools.partial(
        _perturbation_grid,
        feature_fn,
        image,
        gy,
        gx,
        iny,
        inx,
        alpha=alpha,
        measure=measure,
        ssim_window=ssim_window,
        batch_size=batch_size,
    )
    if rng is None:  # Deterministic: the paper's N identical repeats are computed once.
        return minmax_normalize(soft_assign(run(key=None), gy, gx, eps))
    maps = jax.lax.map(
        lambda k: minmax_normalize(soft_assign(run(key=k), gy, gx, eps)),
        jax.random.split(rng, repeats),
    )  # (repeats, H, W)
    return minmax_normalize(jnp.mean(maps, axis=0))


def occlusion_map(
    feature_fn: Callable,
    image: jax.Array,
    *,
    sigma: float = 4.0,
    stride: int = 2,
    alpha: float = 1.0,
    measure: str = "ssim",
    ssim_window: int = 3,
    batch_size: int = 256,
    eps: float = 1e-8,
    repeats: int = 5,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Min-max normalized Gaussian-occlusion RF map of one image (App. A.1, Eq. 10-15).

    Args:
      feature_fn: maps images (B, H, W) float32 -> feature maps (B, h, w), e.g.
        ``jax.tree_util.Partial(functools.partial(model.apply, method="encode_images"), variables)``
        (a ``Partial`` keeps the parameters as traced arguments and lets repeated calls reuse the
        compiled computation; a plain closure works too). With ``rng`` it is called as
        ``feature_fn(images, key)``.
      image: (H, W) float32 stimulus (68 x 270 in the paper), raw pixels as the model takes them.
      sigma: Gaussian sigma in pixels (4); the window is 6 sigma + 1 pixels (Eq. 10).
      stride: grid stride of the occlusion centres (2).
      alpha: occlusion strength (1.0, Eq. 11).
      measure: "ssim" (Eq. 13, used for Fig. 5) or "cos" (Eq. 12).
      ssim_window: SSIM window on the feature maps (3 x 3, Eq. 13); the data range is that of the
        intact image's feature map.
      batch_size: occluded images per feature_fn call; bounds the memory (not the result).
      eps: the epsilon of Eq. 14.
      repeats: App. A.1's N = 5 repeats, used only with ``rng`` (a stochastic feature_fn); for a
        deterministic feature_fn (rng=None) the repeats are identical and computed once.
      rng: PRNG key for a stochastic feature_fn, else None.

    Returns:
      (H, W) float32 RF map R_hat in [0, 1] (Eq. 15); all zeros if no occlusion changed anything.

    Paper: App. A.1, Eq. 10-15, Fig. 5b-c: Gaussian-occlusion importance map.

    Example::

        feature_fn = dina_jax.image_feature_fn(model, params)
        rf = dina_jax.occlusion_map(feature_fn, dataset.images[test[0]])  # (68, 270) in [0, 1]
    """
    image = jnp.asarray(image, jnp.float32)
    _check(image.shape, sigma, stride, alpha, measure, batch_size, repeats)
    return _occlusion_map_jit(
        _as_pytree(feature_fn),
        image,
        rng,
        sigma=float(sigma),
        stride=int(stride),
        alpha=float(alpha),
        measure=measure,
        ssim_window=int(ssim_window),
        batch_size=int(batch_size),
        eps=float(eps),
        repeats=int(repeats),
    )


def occlusion_maps(
    feature_fn: Callable,
    images: jax.Array,
    *,
    rng: jax.Array | None = None,
    **kwargs,
) -> jax.Array:
    """RF maps of many images: (S, H, W) -> (S, H, W), one compiled computation over all of them.

    The images are processed one after the other with ``lax.map`` (each image already fills the
    device with ``batch_size`` occluded copies); keyword arguments as :func:`occlusion_map`.

    Paper: App. A.1, Eq. 10-15, Fig. 5c: occlusion maps of many stimuli in one computation.

    Example::

        feature_fn = dina_jax.image_feature_fn(model, params)
        rfs = dina_jax.occlusion_maps(feature_fn, dataset.images[test[:4]])  # (4, 68, 270)
    """
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 3:
        raise ValueError(f"occlusion_maps expects (S, H, W) images, got shape {images.shape}")
    fn = _as_pytree(feature_fn)
    keys = None if rng is None else jax.random.split(rng, images.shape[0])
    return _occlusion_maps_jit(fn, images, keys, tuple(sorted(kwargs.items())))


@functools.partial(jax.jit, static_argnames=("options",))
def _occlusion_maps_jit(feature_fn, images, keys, options):
    kwargs = dict(options)
    if keys is None:
        return jax.lax.map(lambda im: occlusion_map(feature_fn, im, **kwargs), images)
    return jax.lax.map(
        lambda args: occlusion_map(feature_fn, args[0], rng=args[1], **kwargs), (images, keys)
    )


def occlusion_map_loop(
    feature_fn: Callable,
    image: np.ndarray,
    *,
    sigma: float = 4.0,
    stride: int = 2,
    alpha: float = 1.0,
    measure: str = "ssim",
    ssim_window: int = 3,
    eps: float = 1e-8,
    centres: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference implementation: one feature_fn call per centre in a Python loop (numpy masks).

    Builds each occluded image with explicit 2-D numpy masks, calls ``feature_fn`` on a batch of one
    and accumulates Eq. 14 with the dense mask. Used by the tests as an independent oracle and by
    ``benchmarks/occlusion.py`` as the naive baseline. ``centres`` limits the loop to the first
    that many centres (row-major), for timing.

    Returns:
      (rf_map (H, W) min-max normalized over the centres visited, deltas (n_visited,)).
    """
    image = np.asarray(image, np.float32)
    height, width = image.shape
    rows, cols = occlusion_grid(height, width, stride)
    half = int(math.floor(3.0 * sigma))
    yy, xx = np.mgrid[0:height, 0:width]
    reference = np.asarray(feature_fn(jnp.asarray(image[None])))[0]
    numerator = np.zeros((height, width), np.float64)
    denominator = np.zeros((height, width), np.float64)
    deltas = []
    all_centres = [(r, c) for r in rows for c in cols]
    for r, c in all_centres[: centres or len(all_centres)]:
        window = (np.abs(yy - r) <= half) & (np.abs(xx - c) <= half)
        gauss = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2.0 * sigma**2)) * window
        occluded = (1 - alpha * gauss) * image + alpha * gauss * image[window].mean()
        features = np.asarray(feature_fn(jnp.asarray(occluded[None], jnp.float32)))[0]
        delta = float(
            _delta_jit(jnp.asarray(reference), jnp.asarray(features), measure, ssim_window)
        )
        deltas.append(delta)
        numerator += delta * gauss
        denominator += gauss
    rf = numerator / (denominator + eps)
    span = rf.max() - rf.min()
    rf = (rf - rf.min()) / span if span > 0 else np.zeros_like(rf)
    return rf.astype(np.float32), np.asarray(deltas, np.float32)
