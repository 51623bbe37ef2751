"""Models: the DINA dual tower (Sec. 3) and the Table 1 baselines, built from the config.

    model = build_model(config, n_neurons, image_mean=dataset.image_mean,
                        image_std=dataset.image_std)
    params = init_params(model, jax.random.PRNGKey(config.seed),
                         pretrained_path=config.model.pretrained_path)
    z_img, z_neu, aux = model.apply({"params": params}, images, responses)

``MODEL_BUILDERS`` maps ``config.model.name`` to its builder (an explicit dict, no registry).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import ml_collections

from dina_jax.models.attention import attention_histogram, dot_product_attention
from dina_jax.models.baselines import MLPReadout, VGG16Encoder, ViTEncoder
from dina_jax.models.dual_tower import DualTower, init_params, load_pretrained, save_pretrained
from dina_jax.models.image_tower import PATHWAYS, ImageTower
from dina_jax.models.neural_tower import NeuralTower

__all__ = [
    "MODEL_BUILDERS",
    "PATHWAYS",
    "DualTower",
    "ImageTower",
    "MLPReadout",
    "NeuralTower",
    "VGG16Encoder",
    "ViTEncoder",
    "attention_histogram",
    "build_model",
    "dot_product_attention",
    "init_params",
    "load_pretrained",
    "save_pretrained",
]


def _dtype(config: ml_collections.ConfigDict):
    return jnp.dtype(config.model.dtype)


def _image_input(config: ml_collections.ConfigDict, image_mean: float, image_std: float) -> dict:
    return {
        "image_mean": float(image_mean),
        "image_std": float(image_std),
        "resize_hw": tuple(config.model.image.resize_hw),
        "dtype": _dtype(config),
    }


def _neural_tower(config, n_neurons: int) -> NeuralTower:
    neural = config.model.neural
    return NeuralTower(
        n_neurons=int(n_neurons),
        d_model=neural.d_model,
        num_heads=neural.num_heads,
        mlp_hidden=neural.mlp_hidden,
        residual=bool(neural.residual),
        latent_hw=tuple(config.model.latent_hw),
        attention=neural.attention,
        block_size=neural.block_size,
        dtype=_dtype(config),
    )


def _mlp_readout(config, n_neurons: int) -> MLPReadout:
    return MLPReadout(
        n_neurons=int(n_neurons),
        mlp_hidden=config.model.baseline.mlp_hidden,
        latent_hw=tuple(config.model.latent_hw),
        dtype=_dtype(config),
    )


def build_dina(config, n_neurons: int, *, image_mean: float, image_std: float) -> DualTower:
    """DS-Net dual-stream image tower + attention neural tower (the paper's model)."""
    image = config.model.image
    image_tower = ImageTower(
        stem_channels=image.stem_channels,
        channels=tuple(image.channels),
        depths=tuple(image.depths),
        num_heads=tuple(image.num_heads),
        global_pool=image.global_pool,
        mlp_ratio=image.mlp_ratio,
        local_kernel=image.local_kernel,
        head_hidden=image.head_hidden,
        stem_kernel=image.stem_kernel,
        merge_kernel=image.merge_kernel,
        attention=image.attention,
        block_size=config.model.neural.block_size,
        **_image_input(config, image_mean, image_std),
    )
    return DualTower(image_tower, _neural_tower(config, n_neurons), tuple(image.input_hw))


def build_vgg16_mlp(config, n_neurons: int, *, image_mean: float, image_std: float) -> DualTower:
    """VGG-16 image encoder + MLP neural readout (Table 1 baseline)."""
    baseline = config.model.baseline
    image_tower = VGG16Encoder(
        widths=tuple(baseline.vgg_widths),
        depths=tuple(baseline.vgg_depths),
        pooled_blocks=baseline.vgg_pooled_blocks,
        head_hidden=baseline.head_hidden,
        **_image_input(config, image_mean, image_std),
    )
    input_hw = tuple(config.model.image.input_hw)
    return DualTower(image_tower, _mlp_readout(config, n_neurons), input_hw)


def build_vit_mlp(config, n_neurons: int, *, image_mean: float, image_std: float) -> DualTower:
    """ViT image encoder + MLP neural readout (Table 1 baseline)."""
    baseline = config.model.baseline
    image_tower = ViTEncoder(
        patch=tuple(baseline.vit_patch),
        dim=baseline.vit_dim,
        depth=baseline.vit_depth,
        num_heads=baseline.vit_heads,
        mlp_ratio=baseline.vit_mlp_ratio,
        head_hidden=baseline.head_hidden,
        attention=baseline.vit_attention,
        block_size=config.model.neural.block_size,
        **_image_input(config, image_mean, image_std),
    )
    input_hw = tuple(config.model.image.input_hw)
    return DualTower(image_tower, _mlp_readout(config, n_neurons), input_hw)


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
    """
    name = config.model.name
    if name not in MODEL_BUILDERS:
        raise ValueError(
            f"unknown config.model.name {name!r}; expected one of {sorted(MODEL_BUILDERS)}"
        )
    if image_std <= 0:
        raise ValueError(f"image_std must be positive; got {image_std}")
    return MODEL_BUILDERS[name](config, n_neurons, image_mean=image_mean, image_std=image_std)
