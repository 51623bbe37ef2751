"""The Table 1 baselines: VGG-16 and ViT image encoders with an MLP neural readout.

Both image encoders take the same input as the DS-Net tower (raw 68 x 270 pixels, standardized and
resized to 64 x 256 inside the model) and end in the same (B, 16, 64) feature map, so that the
loss, training loop, evaluation and analyses are shared. The neural readout is the neural tower
without embedding and attention: Dense(N -> hidden) -> GELU -> Dense(hidden -> 1024).

Decisions (the paper names the baselines only; also in docs/decisions.md):
- VGG-16: the 13 3 x 3 convolutions of VGG-16 (block depths 2, 2, 3, 3, 3; widths 64, 128, 256,
  512, 512; ReLU), max-pooling only after the first two blocks so that the last three blocks run at
  16 x 64, the latent grid; then a per-pixel head 512 -> 64 -> 1 (ReLU). One input channel
  (grayscale); ImageNet weights are usable after summing the first kernel over RGB. Convolution
  names follow VGG (``conv{block}_{layer}``) to ease weight conversion.
- ViT: 4 x 4 patches of the 64 x 256 input (16 x 64 = 1,024 tokens), width 192, 6 pre-norm
  blocks, 3 heads, MLP ratio 4, learned position embeddings, no class token; a final LayerNorm and a
  per-token head 192 -> 64 -> 1 (GELU) give one value per patch = the 16 x 64 map.
- Neural readout: responses of excluded neurons (``neuron_mask`` = 0) are zeroed, which for an MLP
  is exactly deleting that neuron's input row.
- ``pathways`` is a DS-Net notion; the baseline encoders accept only the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dina_jax.models import attention as attention_lib
from dina_jax.models.image_tower import PATHWAYS, normalize_and_resize, parse_pathways


def _require_default_pathways(pathways: Sequence[str], name: str) -> None:
    if parse_pathways(pathways) != (True, True):
        raise ValueError(f"pathway masking applies to the DS-Net image tower only, not to {name}")


class VGG16Encoder(nn.Module):
    """VGG-16 convolutions -> (B, 16, 64); see the module docstring."""

    image_mean: float = 0.0
    image_std: float = 1.0
    resize_hw: tuple[int, int] = (64, 256)
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    depths: tuple[int, ...] = (2, 2, 3, 3, 3)
    pooled_blocks: int = 2
    head_hidden: int = 64
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, images: jax.Array, pathways: Sequence[str] = PATHWAYS, train: bool = False
    ) -> jax.Array:
        """images (B, 68, 270) raw pixels -> (B, 16, 64)."""
        del train
        _require_default_pathways(pathways, "VGG-16")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = normalize_and_resize(
            images, self.image_mean, self.image_std, self.resize_hw, self.dtype
        )
        for block, (width, depth) in enumerate(zip(self.widths, self.depths, strict=True)):
            for layer in range(depth):
                conv = nn.Conv(
                    width, (3, 3), padding="SAME", name=f"conv{block + 1}_{layer + 1}", **kw
                )
                x = nn.relu(conv(x))
            if block < self.pooled_blocks:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))  # (B, H, W, C) -> (B, H/2, W/2, C)
        x = nn.relu(nn.Dense(self.head_hidden, name="head_hidden", **kw)(x))
        return nn.Dense(1, name="head_out", **kw)(x)[..., 0]  # (B, 16, 64, 1) -> (B, 16, 64)


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    dim: int
    num_heads: int
    mlp_ratio: int = 4
    attention: str = "auto"
    block_size: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x (B, T, C) -> (B, T, C)."""
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = nn.Dense(3 * dim, name="qkv", **kw)(nn.LayerNorm(name="norm1", **kw)(x))
        q, k, v = (
            t.reshape(batch, length, self.num_heads, head_dim) for t in jnp.split(qkv, 3, -1)
        )
        attended = attention_lib.dot_product_attention(
            q, k, v, implementation=self.attention, block_size=self.block_size
        ).reshape(batch, length, dim)
        x = x + nn.Dense(dim, name="proj", **kw)(attended)
        hidden = nn.gelu(nn.Dense(self.mlp_ratio * dim, name="mlp_in", **kw)(
            nn.LayerNorm(name="norm2", **kw)(x)
        ))  # fmt: skip
        return x + nn.Dense(dim, name="mlp_out", **kw)(hidden)


class ViTEncoder(nn.Module):
    """Patch ViT -> one value per patch = (B, 16, 64); see the module docstring."""

    image_mean: float = 0.0
    image_std: float = 1.0
    resize_hw: tuple[int, int] = (64, 256)
    patch: tuple[int, int] = (4, 4)
    dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: int = 4
    head_hidden: int = 64
    attention: str = "auto"
    block_size: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, images: jax.Array, pathways: Sequence[str] = PATHWAYS, train: bool = False
    ) -> jax.Array:
        """images (B, 68, 270) raw pixels -> (B, 16, 64)."""
        del train
        _require_default_pathways(pathways, "ViT")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = normalize_and_resize(
            images, self.image_mean, self.image_std, self.resize_hw, self.dtype
        )
        patch = tuple(self.patch)
        x = nn.Conv(self.dim, patch, strides=patch, padding="VALID", name="patch_embed", **kw)(x)
        batch, grid_h, grid_w, _ = x.shape  # (B, 16, 64, dim)
        x = x.reshape(batch, grid_h * grid_w, self.dim)  # (B, T, dim)
        position = self.param(
            "position_embedding",
            nn.initializers.normal(stddev=0.02),
            (1, grid_h * grid_w, self.dim),
            self.param_dtype,
        )
        x = x + position.astype(self.dtype)
        for index in range(self.depth):
            x = ViTBlock(
                self.dim,
                self.num_heads,
                self.mlp_ratio,
                self.attention,
                self.block_size,
                name=f"block{index + 1}",
                **kw,
            )(x)
        x = nn.LayerNorm(name="norm", **kw)(x)
        x = nn.gelu(nn.Dense(self.head_hidden, name="head_hidden", **kw)(x))
        x = nn.Dense(1, name="head_out", **kw)(x)  # (B, T, dim) -> (B, T, 1)
        return x.reshape(batch, grid_h, grid_w)


class MLPReadout(nn.Module):
    """Baseline neural readout: (B, N) -> Dense -> GELU -> Dense -> (B, 16, 64)."""

    n_neurons: int
    mlp_hidden: int = 1024
    latent_hw: tuple[int, int] = (16, 64)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, responses: jax.Array, neuron_mask=None, train: bool = False) -> jax.Array:
        """responses (B, N), neuron_mask (N,) | (B, N) | None -> (B, 16, 64)."""
        del train
        if responses.ndim != 2 or responses.shape[1] != self.n_neurons:
            raise ValueError(f"responses must be (B, {self.n_neurons}); got {responses.shape}")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = responses.astype(self.dtype)
        if neuron_mask is not None:
            x = jnp.where(jnp.asarray(neuron_mask) != 0, x, 0.0)
        x = nn.gelu(nn.Dense(self.mlp_hidden, name="mlp_hidden_layer", **kw)(x))
        x = nn.Dense(self.latent_hw[0] * self.latent_hw[1], name="mlp_out_layer", **kw)(x)
        return x.reshape((x.shape[0],) + tuple(self.latent_hw))
