"""Pathway masking of the image tower (paper Sec. 4.4, Fig. 5a).

The image tower's dual-stream blocks have a local (depth-wise convolution) and a global (pooled
self-attention) stream; ``pathways=("local",)`` zeroes the global stream's contribution in every
block and ``pathways=("global",)`` the local one (see ``dina_jax.models``). The importance of a
pathway is the SSIM between the feature map computed with that pathway alone and the full map: a
high SSIM means the pathway by itself reproduces the aligned map.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from dina_jax.analysis.ssim import ssim
from dina_jax.data.pipeline import batched_apply
from dina_jax.models.image_tower import PATHWAYS


def pathway_maps_ssim(
    full: jax.Array, masked: dict[str, jax.Array], *, win_size: int = 7
) -> dict[str, jax.Array]:
    """SSIM of each pathway-masked map to the full map, per stimulus.

    Args:
      full: (B, h, w) feature maps with both pathways; each map's range is the SSIM data range.
      masked: pathway name -> (B, h, w) maps computed with only that pathway.
      win_size: SSIM window.

    Returns:
      pathway name -> (B,) SSIM.
    """
    fn = jax.vmap(lambda a, b: ssim(a, b, win_size=win_size))
    return {name: fn(full, maps) for name, maps in masked.items()}


def pathway_ssim(
    model,
    params,
    images,
    *,
    win_size: int = 7,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """SSIM between the full image feature map and the map from one pathway alone (Fig. 5a).

    Args:
      model: the dual-tower module (``dina_jax.models.build_model``) with an ``encode_images``
        method taking ``pathways``.
      params: its parameters (the ``"params"`` collection).
      images: (S, 68, 270) raw stimuli.
      win_size: SSIM window (7, as the paired-map SSIM of Sec. 4.3).
      batch_size: stimuli per compiled call.

    Returns:
      {"local": (S,), "global": (S,)} float32: SSIM(full map, map with only that pathway).

    Paper: Sec. 4.4, Fig. 5a: local vs global pathway masking.

    Example::

        scores = dina_jax.pathway_ssim(model, params, dataset.images[test])
        scores["local"].mean(), scores["global"].mean()   # (S_test,) each
    """
    images = np.asarray(images, np.float32)
    step = _pathway_step(model, win_size)
    variables = {"params": params}
    return batched_apply(lambda x: step(variables, x), images, batch_size=batch_size)


@functools.lru_cache(maxsize=8)
def _pathway_step(model, win_size: int):
    """Jitted (variables, images (B, H, W)) -> {pathway: (B,)} for one model (cached)."""

    def step(variables, images):
        encode = functools.partial(model.apply, variables, images, method="encode_images")
        full = encode(pathways=PATHWAYS)  # (B, H, W) -> (B, h, w)
        masked = {name: encode(pathways=(name,)) for name in PATHWAYS}
        return pathway_maps_ssim(full, masked, win_size=win_size)

    return jax.jit(step)
