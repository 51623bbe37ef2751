"""The neural tower: population responses -> a 16 x 64 latent feature map (paper Sec. 3.2).

    e_i = r_i w_i^emb                                    (Eq. 4–5)   (B, N) -> (B, N, d)
    Q, K, V = R^emb W_Q, R^emb W_K, R^emb W_V            (Eq. 6)     (B, N, d) each
    R^atten = softmax(Q K^T / sqrt(d_model)) V           (Eq. 7)     (B, N, d)
    u_i = w_i^agg . r_i^atten                            (Eq. 8–9)   (B, N)
    z = MLP(u) reshaped to 16 x 64                       (Sec. 3.2)  (B, 16, 64)

Decisions where the paper is silent (also in docs/decisions.md):
- Eq. 6: W_Q, W_K, W_V are d x d without bias, one head with scale 1 / sqrt(d_model), no output
  projection and no normalization. ``num_heads`` > 1 splits d into heads (scale
  1 / sqrt(d / heads)); the default is the paper's 1.
- Eq. 7 with a residual (``residual=True``): r_i^atten = e_i + [softmax(Q K^T) V]_i, as in every
  transformer attention layer. Printed literally (``residual=False``), r_i^atten is a convex mix
  of the value vectors: while the attention is near uniform every neuron's r_i^atten is nearly the
  same population average, and u (Eq. 8) carries little more than a d_model-dimensional projection
  of the responses. The skip keeps each neuron's own response in its token (measurements in
  docs/decisions.md, "Models").
- The attention is its own submodule, :class:`PopulationAttention` (it owns W_Q, W_K, W_V and
  exposes ``qk()`` for the Fig. 6b statistics). ``mixer="uniform"`` swaps it for
  :class:`UniformMixing` (same parameters, every kept neuron weighted equally) and
  ``mixer="none"`` for :class:`NoMixing` (no attention output): applied with a trained tower's
  parameters they measure what the attention scores, and the attention itself, contribute.
- Initialization (scales configurable): w^emb ~ N(0, 1) (e_i has the scale of r_i, like a token
  embedding); w^agg ~ N(0, 1/d) (u_i has the scale of one coordinate of r^atten); W_Q/K/V and
  the MLP use LeCun-normal kernels and zero biases.
- The readout MLP is Dense(N -> mlp_hidden) -> GELU -> Dense(mlp_hidden -> 16 * 64); the output is
  the raw (un-normalized) feature map.
- ``neuron_mask`` (N,) or (B, N), 1 = keep: an excluded neuron is removed as a key/value of the
  attention (it receives no probability mass) and its u_i is zeroed, so its row of the first MLP
  layer receives nothing. The output then equals that of a model built without the neuron (its
  rows of w^emb, w^agg and of the first MLP kernel deleted); tests/test_models.py checks this.
  The mask may be a traced array, so ``jax.vmap`` over masks compiles once (Fig. 6a ablation).
- The population attention runs through :func:`dina_jax.models.attention.dot_product_attention`
  with the implementation of ``config.model.neural.attention`` (blockwise: O(N) memory).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dina_jax.models import attention as attention_lib


def _split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """(B, N, d) -> (B, N, H, d / H)."""
    return x.reshape(x.shape[:2] + (num_heads, x.shape[2] // num_heads))


class PopulationAttention(nn.Module):
    """Self-attention across the neurons of one population response (Eq. 6-7).

    Attributes:
      d_model: token width d (Eq. 4).
      num_heads: heads; the paper's Eq. 7 is a single head (scale 1 / sqrt(d)).
      implementation: "auto", "blockwise", "materialized" or "cudnn" (see attention.py).
      block_size: query/key block of the blockwise implementation.
      qk_init_scale: multiplies the LeCun-normal initialization of W_Q and W_K.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    d_model: int
    num_heads: int = 1
    implementation: str = "auto"
    block_size: int = 512
    qk_init_scale: float = 1.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by {self.num_heads} heads")
        dense = {"use_bias": False, "dtype": self.dtype, "param_dtype": self.param_dtype}
        qk_init = nn.initializers.variance_scaling(
            self.qk_init_scale**2, "fan_in", "truncated_normal"
        )  # LeCun normal times qk_init_scale.
        self.query = nn.Dense(self.d_model, kernel_init=qk_init, **dense)
        self.key = nn.Dense(self.d_model, kernel_init=qk_init, **dense)
        self.value = nn.Dense(self.d_model, **dense)

    @property
    def scale(self) -> float:
        """Logit scale of Eq. 7: 1 / sqrt(d_model) (per head: 1 / sqrt(d_model / heads))."""
        return 1.0 / math.sqrt(self.d_model // self.num_heads)

    def qk(self, embedded: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Queries and keys of Eq. 6, q pre-scaled: softmax(q k^T) are the probabilities of Eq. 7.

        Args:
          embedded: (B, N, d) neuron tokens.

        Returns:
          q, k: (B, N, H, d / H) each.
        """
        q = _split_heads(self.query(embedded), self.num_heads) * self.scale
        return q, _split_heads(self.key(embedded), self.num_heads)

    def __call__(self, embedded: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        """softmax(Q K^T / sqrt(d)) V over the kept neurons (Eq. 7): (B, N, d) -> (B, N, d).

        ``key_mask`` (B, N) bool, True = the neuron is a key/value; None attends to all.
        """
        batch, n_neurons, _ = embedded.shape
        q, k = self.qk(embedded)  # (B, N, H, d/H) each, q already scaled
        v = _split_heads(self.value(embedded), self.num_heads)
        attended = attention_lib.dot_product_attention(
            q,
            k,
            v,
            key_mask=key_mask,
            implementation=self.implementation,
            block_size=self.block_size,
            scale=1.0,  # The same q * scale the kernel would compute: one code path for q, k.
        )  # (B, N, H, d/H)
        return attended.reshape(batch, n_neurons, self.d_model)


class UniformMixing(PopulationAttention):
    """Eq. 7 with every attention weight equal (1 / #kept neurons): the mean value vector.

    The same parameters as :class:`PopulationAttention` (W_Q and W_K are unused), so a trained
    tower applied with ``mixer="uniform"`` shows what its attention scores add to the values.
    """

    def __call__(self, embedded: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        v = self.value(embedded)  # (B, N, d)
        if key_mask is None:
            return jnp.broadcast_to(v.mean(axis=1, keepdims=True), v.shape)
        weights = key_mask.astype(v.dtype)  # (B, N)
        total = jnp.einsum("bn,bnd->bd", weights, v)  # (B, N, d) -> (B, d)
        mean = total / jnp.maximum(weights.sum(axis=1), 1.0)[:, None]
        return jnp.broadcast_to(mean[:, None], v.shape)


class NoMixing(PopulationAttention):
    """The population attention removed: its output is zero, so with ``residual=True`` each
    neuron's token is its own embedding alone (the residual path; no parameters are read)."""

    def __call__(self, embedded: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        del key_mask
        return jnp.zeros_like(embedded)


# How the population attention mixes the neurons (config.model.neural.mixer).
MIXERS = {"softmax": PopulationAttention, "uniform": UniformMixing, "none": NoMixing}


class NeuralTower(nn.Module):
    """Per-neuron embedding, population self-attention, per-neuron aggregation, MLP readout.

    Attributes:
      n_neurons: N, the number of recorded neurons (fixes the parameter shapes).
      d_model: embedding width d_model (Eq. 4; paper default 32).
      num_heads: attention heads; the paper's Eq. 7 is a single head.
      mlp_hidden: hidden width of the readout MLP.
      residual: add the embedding to the attention output (Eq. 7 plus a skip; see above).
      mixer: "softmax" (Eq. 7) or "uniform" (see :data:`MIXERS`).
      attention: attention implementation ("auto", "blockwise", "materialized", "cudnn").
      block_size: query/key block of the blockwise attention.
      embedding_init_std: sd of the initial per-neuron embeddings w^emb.
      qk_init_scale: multiplies the LeCun-normal initialization of W_Q and W_K.
      latent_hw: (16, 64), the feature-map grid shared with the image tower.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    n_neurons: int
    d_model: int = 32
    num_heads: int = 1
    mlp_hidden: int = 1024
    residual: bool = False
    mixer: str = "softmax"
    attention: str = "auto"
    block_size: int = 512
    embedding_init_std: float = 1.0
    qk_init_scale: float = 1.0
    latent_hw: tuple[int, int] = (16, 64)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        if self.mixer not in MIXERS:
            raise ValueError(
                f"unknown model.neural.mixer {self.mixer!r}; expected one of {sorted(MIXERS)}"
            )
        shape = (self.n_neurons, self.d_model)
        self.embedding = self.param(
            "embedding",
            nn.initializers.normal(stddev=self.embedding_init_std),
            shape,
            self.param_dtype,
        )
        self.aggregation = self.param(
            "aggregation",
            nn.initializers.normal(stddev=1.0 / math.sqrt(self.d_model)),
            shape,
            self.param_dtype,
        )
        self.population_attention = MIXERS[self.mixer](
            d_model=self.d_model,
            num_heads=self.num_heads,
            implementation=self.attention,
            block_size=self.block_size,
            qk_init_scale=self.qk_init_scale,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.mlp_hidden_layer = nn.Dense(
            self.mlp_hidden, dtype=self.dtype, param_dtype=self.param_dtype
        )
        self.mlp_out_layer = nn.Dense(
            self.latent_hw[0] * self.latent_hw[1], dtype=self.dtype, param_dtype=self.param_dtype
        )

    def _embed(self, responses: jax.Array) -> jax.Array:
        """Eq. 4–5: (B, N) -> (B, N, d)."""
        if responses.ndim != 2 or responses.shape[1] != self.n_neurons:
            raise ValueError(
                f"responses must be (B, {self.n_neurons}); got {tuple(responses.shape)}"
            )
        responses = responses.astype(self.dtype)
        return responses[:, :, None] * self.embedding.astype(self.dtype)[None]

    def _keep(self, neuron_mask, batch: int) -> jax.Array:
        """neuron_mask (N,) | (B, N) | None -> (B, N) bool."""
        if neuron_mask is None:
            return jnp.ones((batch, self.n_neurons), dtype=bool)
        neuron_mask = jnp.asarray(neuron_mask)
        if neuron_mask.shape not in ((self.n_neurons,), (batch, self.n_neurons)):
            raise ValueError(
                f"neuron_mask must be ({self.n_neurons},) or ({batch}, {self.n_neurons}); "
                f"got {tuple(neuron_mask.shape)}"
            )
        return jnp.broadcast_to(neuron_mask != 0, (batch, self.n_neurons))

    def attention_qk(self, responses: jax.Array, neuron_mask=None):
        """Scaled queries and keys of Eq. 7, for streaming the attention scores (Fig. 6b).

        Args:
          responses: (B, N).
          neuron_mask: (N,) or (B, N) or None.

        Returns:
          q (B, N, H, D) already multiplied by the logit scale, so that softmax(q k^T) over the
          kept keys are the attention probabilities; k (B, N, H, D); key_mask (B, N) bool.
        """
        q, k = self.population_attention.qk(self._embed(responses))
        return q, k, self._keep(neuron_mask, responses.shape[0])

    def __call__(self, responses: jax.Array, neuron_mask=None, train: bool = False) -> jax.Array:
        """Eq. 4–9 and the readout MLP.

        Args:
          responses: (B, N) stimulus-averaged population responses.
          neuron_mask: optional (N,) or (B, N) bool/float, 1 = keep.
          train: unused (no dropout, no batch statistics); kept for a uniform signature.

        Returns:
          (B, 16, 64) raw neural feature map in ``dtype``.
        """
        del train
        batch = responses.shape[0]
        keep = self._keep(neuron_mask, batch)  # (B, N)
        embedded = self._embed(responses)  # (B, N) -> (B, N, d)
        # key_mask None: no masking work at all.
        attended = self.population_attention(embedded, None if neuron_mask is None else keep)
        if self.residual:
            attended = attended + embedded  # r_i^atten = e_i + attention_i
        aggregated = jnp.einsum(
            "bnd,nd->bn", attended, self.aggregation.astype(self.dtype)
        )  # Eq. 8: (B, N, d) -> (B, N)
        aggregated = jnp.where(keep, aggregated, 0.0)
        hidden = nn.gelu(self.mlp_hidden_layer(aggregated))  # (B, N) -> (B, hidden)
        latent = self.mlp_out_layer(hidden)  # (B, hidden) -> (B, 16 * 64)
        return latent.reshape((batch,) + tuple(self.latent_hw))
