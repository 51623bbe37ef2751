"""Models: the DINA dual tower (Sec. 3) and the Table 1 baselines, built from the config.

    model = build_model(config, n_neurons, image_mean=dataset.image_mean,
                        image_std=dataset.image_std)
    params = init_params(model, jax.random.PRNGKey(config.seed),
                         pretrained_path=config.model.pretrained_path)
    z_img, z_neu, aux = model.apply({"params": params}, images, responses)

``MODEL_BUILDERS`` maps ``config.model.name`` to its builder (an explicit dict, no registry).
Each tower is built from its own config block (``ImageTower(**config.model.image, ...)``), so
a new architecture field is one line in the module and one in ``dina_jax/config.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import ml_collections

from dina_jax.models.attention import attention_histogram, dot_product_attention
from dina_jax.models.baselines import MLPReadout, VGG16Encoder, ViTEncoder
from dina_jax.models.dual_tower import DualTower, init_params, load_pretrained, save_pretrained
from dina_jax.models.image_tower import PATHWAYS, ImageTower
from dina_jax.models.neural_tower import (
    MIXERS,
    NeuralTower,
    PopulationAttention,
    UniformMixing,
)

__all__ = [
    "MIXERS",
    "MODEL_BUILDERS",
    "PATHWAYS",
    "DualTower",
    "ImageTower",
    "MLPReadout",
    "NeuralTower",
    "PopulationAttention",
    "UniformMixing",
    "VGG16Encoder",
    "ViTEncoder",
    "attention_histogram",
    "build_model",
    "dot_product_attention",
    "init_params",
    "load_pretrained",
    "save_pretrained",
]


def _block(section: ml_collections.ConfigDict) -> dict:
    """A config block as module keyword arguments (lists from JSON become hashable tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def _image_inputs(config: ml_collections.ConfigDict, image_mean: float, image_std: float) -> dict:
    """What every image encoder takes besides its own block: input statistics, grid, dtype."""
    return {
        "image_mean": float(image_mean),
        "image_std": float(image_std),
        "resize_hw": tuple(config.model.resize_hw),
        "dtype": jnp.dtype(config.model.dtype),
    }


def _neural_inputs(config: ml_collections.ConfigDict, n_neurons: int) -> dict:
    return {
        "n_neurons": int(n_neurons),
        "latent_hw": tuple(config.model.latent_hw),
        "dtype": jnp.dtype(config.model.dtype),
    }


def build_dina(config, n_neurons: int, *, image_mean: float, image_std: float) -> DualTower:
    """DS-Net dual-stream image tower + attention neural tower (the paper's model)."""
    image_tower = ImageTower(
        **_block(config.model.image), **_image_inputs(config, image_mean, image_std)
    )
    neural_tower = NeuralTower(**_block(config.model.neural), **_neural_inputs(config, n_neurons))
    return DualTower(image_tower, neural_tower, tuple(config.model.input_hw))


def build_vgg16_mlp(config, n_neurons: int, *, image_mean: float, image_std: float) -> DualTower:
    """VGG-16 image encoder + MLP neural readout (Table 1 baseline)."""
    image_tower = VGG16Encoder(
        **_block(config.model.vgg16), **_image_inputs(config, image_mean, image_std)
    )
    readout = MLPReadout(**_block(config.model.readout), **_neural_inputs(config, n_neurons))
    return DualTower(image_tower, readout, tuple(config.model.input_hw))


def build_vit_mlp(config, n_neurons: int, *, image_mean: float, image_std: float) -> DualTower:
    """ViT image encoder + MLP neural readout (Table 1 baseline)."""
    image_tower = ViTEncoder(
        **_block(config.model.vit), **_image_inputs(config, image_mean, image_std)
    )
    readout = MLPReadout(**_block(config.model.readout), **_neural_inputs(config, n_neurons))
    return DualTower(image_tower, readout, tuple(config.model.input_hw))


MODEL_BUILDERS: dict[str, Callable[..., DualTower]] = {
    "dina": build_dina,
    "vgg16_mlp": build_vgg16_mlp,
    "vit_mlp": build_vit_mlp,
}


def build_model(
    config: ml_collections.ConfigDict,
    n_neurons: int,
    *,
    image_mean: float = 0.0,
    image_std: float = 1.0,
) -> DualTower:
    """Builds ``config.model.name`` for ``n_neurons`` neurons.

    Args:
      config: the full experiment ConfigDict.
      n_neurons: N of the recording (fixes the neural-tower parameter shapes).
      image_mean, image_std: training-split pixel statistics; images are standardized inside.

    Returns:
      A :class:`DualTower` (``apply`` it with ``{"params": params}``; see dual_tower.py).

    Paper: Sec. 3.1-3.2, Fig. 2: image tower (Eq. 1-3) and neural tower (Eq. 4-9).

    Example::

        model = dina_jax.build_model(config, dataset.n_neurons,
                                     image_mean=dataset.image_mean, image_std=dataset.image_std)
        params = dina_jax.init_params(model, jax.random.key(config.seed))
        z_img, z_neu, aux = model.apply({'params': params}, images, responses)  # (B, 16, 64) each
    """
    name = config.model.name
    if name not in MODEL_BUILDERS:
        raise ValueError(
            f"unknown config.model.name {name!r}; expected one of {sorted(MODEL_BUILDERS)}"
        )
    if image_std <= 0:
        raise ValueError(f"image_std must be positive; got {image_std}")
    return MODEL_BUILDERS[name](config, n_neurons, image_mean=image_mean, image_std=image_std)
