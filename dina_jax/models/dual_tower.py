"""The dual-tower model: an image tower and a neural tower mapping to one 16 x 64 latent (Sec. 3).

``DualTower`` composes any image encoder (DS-Net tower, VGG-16, ViT) with any neural encoder
(attention tower, MLP readout). Its parameter tree has exactly two top-level entries,
``"image_tower"`` and ``"neural_tower"`` (the optimizer labels AdamW / RMSprop by them), and every
tower is callable alone::

    z_img, z_neu, aux = model.apply(variables, images, responses)
    z_img = model.apply(variables, images, pathways=("local",), method="encode_images")
    z_neu = model.apply(variables, responses, neuron_mask=mask, method="encode_neurons")
    q, k, key_mask = model.apply(variables, responses, method="neural_attention_qk")

Feature maps are returned raw (not L2-normalized); the loss normalizes them.

This file also holds parameter I/O: :func:`init_params` (initialization plus the optional local
pretrained image-encoder weights of ``config.model.pretrained_path``), :func:`load_pretrained` and
:func:`save_pretrained` (flat ``.npz`` of "/"-joined parameter paths).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dina_jax.models.image_tower import PATHWAYS


class DualTower(nn.Module):
    """Image tower + neural tower (paper Fig. 2).

    Attributes:
      image_tower: module mapping images (B, 68, 270) -> (B, 16, 64), called with ``pathways``.
      neural_tower: module mapping responses (B, N) -> (B, 16, 64), called with ``neuron_mask``.
      input_hw: raw image size the model expects (used by :func:`init_params`).
    """

    image_tower: nn.Module
    neural_tower: nn.Module
    input_hw: tuple[int, int] = (68, 270)

    def __call__(
        self,
        images: jax.Array,
        responses: jax.Array,
        neuron_mask=None,
        pathways: Sequence[str] = PATHWAYS,
        train: bool = False,
    ):
        """Both towers.

        Args:
          images: (B, 68, 270) raw pixels; responses: (B, N).
          neuron_mask: optional (N,) or (B, N), 1 = keep (neural tower).
          pathways: image-tower streams kept (Fig. 5a).
          train: unused today (no dropout / batch statistics).

        Returns:
          z_img (B, 16, 64), z_neu (B, 16, 64), aux (an empty dict).
        """
        z_img = self.encode_images(images, pathways=pathways, train=train)
        z_neu = self.encode_neurons(responses, neuron_mask=neuron_mask, train=train)
        return z_img, z_neu, {}

    def encode_images(
        self, images: jax.Array, pathways: Sequence[str] = PATHWAYS, train: bool = False
    ) -> jax.Array:
        """(B, 68, 270) raw pixels -> (B, 16, 64) image feature map."""
        return self.image_tower(images, pathways=pathways, train=train)

    def encode_neurons(
        self, responses: jax.Array, neuron_mask=None, train: bool = False
    ) -> jax.Array:
        """(B, N) responses -> (B, 16, 64) neural feature map."""
        return self.neural_tower(responses, neuron_mask=neuron_mask, train=train)

    def neural_attention_qk(self, responses: jax.Array, neuron_mask=None):
        """(q, k, key_mask) of the population attention: q, k (B, N, H, D), q pre-scaled so that
        softmax(q k^T) over the kept keys are the attention probabilities; key_mask (B, N) bool."""
        if not hasattr(self.neural_tower, "attention_qk"):
            raise ValueError(
                f"{type(self.neural_tower).__name__} has no population attention (baseline model)"
            )
        return self.neural_tower.attention_qk(responses, neuron_mask=neuron_mask)


def init_params(model: DualTower, rng: jax.Array, *, pretrained_path: str = "") -> dict:
    """Initializes the parameters with batch-1 dummy inputs; loads local pretrained weights.

    Prefer it to ``jax.jit(model.init)``: on CPU it compiles the one-off init program without
    backend optimizations, ~4x faster, same values up to float rounding.

    Args:
      model: a module from :func:`dina_jax.models.build_model`.
      rng: PRNG key.
      pretrained_path: optional ``.npz`` of image-encoder weights
        (``config.model.pretrained_path``).

    Returns:
      The ``params`` collection (a dict with "image_tower" and "neural_tower").

    Paper: Sec. 3 (random initialization; optional local pretrained image-encoder weights).

    Example::

        params = dina_jax.init_params(model, jax.random.key(0))
        sorted(params)                    # ['image_tower', 'neural_tower']
    """
    images = jnp.zeros((1, *model.input_hw), jnp.float32)
    responses = jnp.zeros((1, model.neural_tower.n_neurons), jnp.float32)
    lowered = jax.jit(model.init).lower(rng, images, responses)
    # XLA's CPU backend spends most of an init compile optimizing the ~100 unrolled threefry
    # generators of the initializers (37 s -> 9 s for the tiny model on a loaded 2-core machine);
    # the program runs once, so optimizing it is pointless.
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
    params = lowered.compile(compiler_options=options)(rng, images, responses)["params"]
    if pretrained_path:
        params = load_pretrained(params, pretrained_path)
    return params


def save_pretrained(params: dict, path: str, *, subtree: str = "image_tower") -> None:
    """Writes ``params[subtree]`` as a flat ``.npz`` {"a/b/kernel": array} (the load format)."""
    flat = traverse_util.flatten_dict(params[subtree], sep="/")
    np.savez(path, **{name: np.asarray(value) for name, value in flat.items()})


def load_pretrained(params: dict, path: str, *, subtree: str = "image_tower") -> dict:
    """Replaces parameters of ``params[subtree]`` with the arrays of a local ``.npz``.

    Keys are "/"-joined paths inside the subtree (e.g. ``conv1_1/kernel`` for VGG-16); every key
    must name an existing parameter with the same shape. Parameters absent from the file keep
    their values (e.g. a new head on ImageNet features).

    Raises:
      dina_jax.data.DataError: "<path>: <problem>" for a missing/unreadable file, an
        unknown parameter name or a shape mismatch.
    """
    from dina_jax.data import DataError  # Lazy: models do not otherwise need the data.

    if not os.path.isfile(path):
        raise DataError(f"{path}: pretrained weights file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read pretrained weights ({error})") from None
    flat = traverse_util.flatten_dict(params[subtree], sep="/")
    for name, array in arrays.items():
        if name not in flat:
            raise DataError(
                f"{path}: parameter {name!r} does not exist in the {subtree} (it has "
                f"{len(flat)} parameters, e.g. {sorted(flat)[:3]})"
            )
        if array.shape != flat[name].shape:
            raise DataError(
                f"{path}: parameter {name!r} has shape {array.shape}, the model expects "
                f"{flat[name].shape}"
            )
        flat[name] = jnp.asarray(array, dtype=flat[name].dtype)
    return {**params, subtree: traverse_util.unflatten_dict(flat, sep="/")}
