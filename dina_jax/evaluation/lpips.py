"""LPIPS between paired image- and neural-tower maps (paper Sec. 4.3; Zhang et al. 2018).

The learned perceptual distance with the AlexNet trunk ("alex", v0.1), written in JAX: the five
AlexNet convolutions with their ReLU taps, each tap unit-normalized across channels, weighted per
channel, averaged over space and summed over layers. No weights ship with the project and none are
downloaded: :func:`map_lpips` reports ``{"status": LPIPS_MISSING}`` unless a local weights file is
named (``config.eval.lpips_weights``); :func:`load_lpips_weights` validates it. Where torch,
torchvision and lpips are installed, ``python -m experiments.lpips_weights`` writes that file.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from dina_jax.analysis.ssim import minmax_normalize
from dina_jax.data import DataError

LPIPS_MISSING = "LPIPS: weights not provided"
# Printed after LPIPS_MISSING: how to get the file.
LPIPS_HOWTO = (
    "build them with `python -m experiments.lpips_weights --out FILE` where torch, torchvision "
    "and lpips are installed, then --config.eval.lpips_weights=FILE"
)

# LPIPS (Zhang et al. 2018) with the AlexNet trunk ("alex", v0.1). The weights are read from a local
# .npz file (config.eval.lpips_weights) holding PyTorch-layout float arrays:
#   conv{i}_weight (O, I, kh, kw), conv{i}_bias (O,), i = 1..5: the five AlexNet convolutions
#       (torchvision alexnet.features[0, 3, 6, 8, 10]); shapes in LPIPS_CONVS below;
#   lin{j}_weight (1, C_j, 1, 1), j = 0..4: LPIPS' non-negative per-channel weights of the five
#       ReLU taps (lin{j}.model.1.weight in the lpips package's alex.pth, v0.1).
# experiments/lpips_weights.py writes it from the lpips package (and torchvision's AlexNet).
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


def lpips_inputs(maps: jax.Array, resize_hw: tuple[int, int]) -> jax.Array:
    """Maps (B, H, W) as LPIPS' input images (B, 3, *resize_hw) in [-1, 1]: min-max normalized,
    resized bilinearly, replicated to 3 channels (what the lpips package's forward takes)."""
    x = 2.0 * minmax_normalize(maps) - 1.0
    x = jax.image.resize(x, (x.shape[0], *resize_hw), method="bilinear")
    return jnp.repeat(x[:, None], 3, axis=1)  # (B, H, W) -> (B, 3, H, W)


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
        x = lpips_inputs(maps, resize_hw)
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
    """LPIPS between each image-tower map and its paired neural-tower map (Sec. 4.3).

    Args:
      z_img, z_neu: (B, 16, 64) (or (B, 1, 16, 64)) paired maps.
      weights_path: a local LPIPS weights .npz (see the comment above LPIPS_CONVS); "" when none.
      resize_hw: the (H, W) the maps are resized to before AlexNet (``lpips_distance``).

    Returns:
      {"status": "computed", "weights": the path, "mean", "std" over the B pairs}, or
      {"status": LPIPS_MISSING} without a weights path.

    Raises:
      DataError: the weights file is missing, unreadable or malformed (one line).
    """
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
