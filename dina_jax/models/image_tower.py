"""The image tower: a DS-Net-style dual-stream network, 68 x 270 image -> 16 x 64 map (Sec. 3.1).

Pipeline (shapes at the paper's sizes, NHWC inside):

    images (B, 68, 270) raw pixels
    -> (x - image_mean) / image_std, bilinear antialiased resize     (B, 64, 256, 1)
    -> stem: 3 x 3 conv, stride 2, LayerNorm                          (B, 32, 128, 64)
    -> stage 1: 3 dual-stream blocks, C = 64                          (B, 32, 128, 64)
    -> patch merging: 2 x 2 conv, stride 2, LayerNorm                 (B, 16, 64, 128)
    -> stage 2: 4 dual-stream blocks, C = 128                         (B, 16, 64, 128)
    -> LayerNorm, per-pixel MLP 128 -> 64 -> 1                        (B, 16, 64)

The resize lives inside the model so that the occlusion analysis works on (and differentiates
through) the original 68 x 270 pixels; 64 x 256 keeps the 4:1 aspect ratio nearly isotropic and
two stride-2 stages reach the paper's 16 x 64 grid.

Dual-stream block, on x (B, H, W, C), in the form ``block`` selects. "paper" (the default) is
Eq. 1-3 as printed, with DS-Net's co-attention, fusion and MLP around them:

    f_l, f_g = split(LN(x))                            channel split, C/2 each
    intra-scale propagation
      f_L = DWConv3x3(f_l)                             local stream, full resolution (Eq. 1)
      g   = AvgPool_p(f_g) as (B, H/p * W/p, C/2)      global stream, low resolution
      f_G = Proj(MHSA(g))                              token self-attention (Eq. 2-3)
    inter-scale co-attention (both directions, own q/k/v projections per stream)
      a_L = f_L + Proj(Attn(q = f_L, k/v = f_G))       local tokens attend to global tokens
      a_G = f_G + Proj(Attn(q = f_G, k/v = f_L))       global tokens attend to local tokens
    fusion
      x = x + Dense_C(concat(a_L, BilinearUp(a_G)))    1 x 1 fuse, pre-norm residual
      x = x + MLP(LN(x))                               C -> 4C -> C, GELU

"dsnet" is DS-Net's MixBlock (Mao et al. 2021) in full: x = x + DWConv3x3(x) first (conditional
position encoding), a 1 x 1 projection before the split, pre-norm residual streams
(f_L = f_l + DWConv3x3(LN(f_l)), f_G = g + Proj(MHSA(LN(g)))) and LayerNorms on both
co-attention inputs; 9% more parameters and ~25% more time at the paper's sizes.

Decisions (DS-Net details the paper leaves open; also in docs/decisions.md):
- LayerNorm everywhere (DS-Net uses BatchNorm in places); no dropout, no stochastic depth.
- Global stream: average pooling by ``global_pool`` = 8 (DS-Net interpolates, by 8 then 4 per
  stage): 4 x 16 = 64 tokens in stage 1, 2 x 8 = 16 tokens in stage 2. Heads (2, 4) per stage, head
  size 16, shared by the global self-attention and both co-attentions. Attention projections carry
  a bias and an output projection (DS-Net's global attention has none; harmless, standard).
- Co-attention (DS-Net form): each stream gets its own q/k/v projection of its normalized tokens;
  local queries read global keys/values and vice versa; each result is projected back and added
  residually to its stream; the global stream is upsampled bilinearly to the local grid; the two
  halves are concatenated and fused by a 1 x 1 layer.
- The stem is a 3 x 3 conv with stride 2 (overlapping, like a conv stem); patch merging is a 2 x 2
  conv with stride 2 (as DS-Net's patch embedding), computed as a space-to-depth reshape and a
  matmul (:class:`PatchMerging`); both followed by LayerNorm.
- Pathway masking (Fig. 5a): ``pathways`` lists the streams kept. Masking a stream zeroes its half
  of the fusion input and drops its co-attention contribution to the other stream (the other
  stream then passes through its intra-scale propagation only), in every block. The residual
  paths, the position encoding and the block MLP stay. The default ("local", "global") is the
  plain model. Masking is a Python-level choice, so each setting compiles its own graph; the
  parameters are shared.
- Performance, same mathematics: the depth-wise convolutions are sums of shifted copies (XLA's
  grouped convolution is ~50x slower on CPU) with a custom VJP that stores only their input,
  the bilinear upsampling is two constant matmuls, the average pooling a reshape and a mean,
  and the attentions use ``config.model.image.attention`` ("auto": the compact kernel, a
  materialized softmax with a hand-written backward, where a call's logits fit in cache, as in
  a paper-size micro-batch; else blockwise).
  On a CPU the batch goes through the tower in micro-batches of 2 (``micro_batch``; a scan,
  each micro-batch rematerialized in the backward pass): a working set that stays in cache
  and the activations of 2 samples instead of the batch's (measurements in
  benchmarks/README.md). Small towers, whose batch already fits in cache, go through whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dina_jax.config import IMAGE_BLOCKS as BLOCKS  # the forms the config check accepts
from dina_jax.models import attention as attention_lib

PATHWAYS = ("local", "global")


def parse_pathways(pathways: Sequence[str]) -> tuple[bool, bool]:
    """("local", "global") subset -> (use_local, use_global); raises on unknown names."""
    if isinstance(pathways, str):
        pathways = (pathways,)
    unknown = set(pathways) - set(PATHWAYS)
    if unknown:
        raise ValueError(f"unknown pathways {sorted(unknown)}; expected a subset of {PATHWAYS}")
    return "local" in pathways, "global" in pathways


def check_block(block: str) -> None:
    """Raises a one-line ValueError unless ``block`` names a dual-stream block form."""
    if block not in BLOCKS:
        raise ValueError(f"model.image.block must be one of {BLOCKS}; got {block!r}")


def check_grayscale(images: jax.Array) -> None:
    """Raises a one-line ValueError unless ``images`` is a (B, H, W) grayscale batch."""
    if images.ndim != 3:
        raise ValueError(f"images must be (B, H, W) grayscale; got {tuple(images.shape)}")


def normalize_and_resize(
    images: jax.Array, image_mean: float, image_std: float, resize_hw: Sequence[int], dtype
) -> jax.Array:
    """(B, H, W) raw pixels -> (B, h, w, 1): standardized, then bilinear resize with antialiasing.

    The resize is ``jax.image.resize(x, (B, h, w), "linear", antialias=True)`` written as two
    constant matmuls (same values; XLA:CPU ran the library call's weight computation and
    contraction at 61 ms per demo batch of 32, 8% of the demo's image tower). Differentiable
    with respect to the pixels (the occlusion analysis relies on it).
    """
    check_grayscale(images)
    x = (images.astype(jnp.float32) - image_mean) / image_std
    x = resize_linear(
        x[..., None], resize_hw, antialias=True, precision=jax.lax.Precision.HIGHEST
    )  # (B, 68, 270, 1) -> (B, 64, 256, 1)
    return x.astype(dtype)


# Samples per micro-batch on a CPU. At the paper's sizes one sample's stage-1 activations are
# 1 MB per tensor, so two samples at a time keep the tower's element-wise work in cache, and with
# remat the backward pass stores one micro-batch's activations instead of the batch's
# (benchmarks/README.md). Towers whose stage-1 tensor is under MICRO_BATCH_MIN_BYTES per sample
# (the tiny and demo towers, 8 channels: 128 kB) fit in cache whole; for them micro-batches only
# add compile time (tiny main job: 50 s -> 63 s) and a per-iteration cost.
CPU_MICRO_BATCH = 2
MICRO_BATCH_MIN_BYTES = 512 * 1024


def resolve_micro_batch(micro_batch: int, sample_bytes: int = MICRO_BATCH_MIN_BYTES) -> int:
    """Samples per micro-batch: ``micro_batch`` if positive, else by backend and size.

    ``sample_bytes`` is one sample's stage-1 tensor. Auto (0) gives :data:`CPU_MICRO_BATCH` on a
    CPU when that is at least :data:`MICRO_BATCH_MIN_BYTES`, else 2**31 - 1 (the whole batch at
    once, also on GPU/TPU).
    """
    if micro_batch < 0:
        raise ValueError(f"model.image.micro_batch must be >= 0; got {micro_batch}")
    if micro_batch:
        return micro_batch
    if jax.default_backend() == "cpu" and sample_bytes >= MICRO_BATCH_MIN_BYTES:
        return CPU_MICRO_BATCH
    return 2**31 - 1


def _linear_resize_matrix(n_in: int, n_out: int, antialias: bool = False) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation with half-pixel centres, edge-clamped.

    Equal to what ``jax.image.resize(..., method="linear", antialias=antialias)`` applies: when
    downsampling with antialiasing the triangle kernel is widened by n_in / n_out.
    """
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    width = max(n_in / n_out, 1.0) if antialias else 1.0
    distance = np.abs(centres[:, None] - np.arange(n_in)[None, :]) / width
    weights = np.maximum(0.0, 1.0 - distance)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_linear(
    x: jax.Array, size: Sequence[int], antialias: bool = False, precision=None
) -> jax.Array:
    """Bilinear resize of (B, h, w, C) to (B, H, W, C) as two small matmuls.

    Same result as ``jax.image.resize(x, (B, H, W, C), "linear", antialias=antialias)``, but
    the interpolation weights are NumPy constants, which compiles and runs faster on CPU.
    """
    rows = jnp.asarray(_linear_resize_matrix(x.shape[1], size[0], antialias), x.dtype)
    cols = jnp.asarray(_linear_resize_matrix(x.shape[2], size[1], antialias), x.dtype)
    return jnp.einsum("Hh,Ww,bhwc->bHWc", rows, cols, x, precision=precision)


def average_pool(x: jax.Array, pool: int) -> jax.Array:
    """Non-overlapping p x p average pooling of (B, H, W, C), H and W divisible by p.

    The same as ``nn.avg_pool(x, (p, p), strides=(p, p))`` as a reshape and a mean, whose
    gradient is a broadcast (XLA:CPU runs the reduce-window gradient of avg_pool ~3x slower).
    """
    batch, height, width, channels = x.shape
    blocks = x.reshape(batch, height // pool, pool, width // pool, pool, channels)
    return blocks.mean(axis=(2, 4))


def _split_heads(tokens: jax.Array, num_heads: int) -> jax.Array:
    """(B, T, C) -> (B, T, heads, C / heads)."""
    batch, length, channels = tokens.shape
    return tokens.reshape(batch, length, num_heads, channels // num_heads)


def _attend(q, k, v, num_heads, implementation, block_size):
    """Multi-head attention on (B, Tq, C), (B, Tk, C), (B, Tk, C) -> (B, Tq, C).

    All implementations are exact. The co-attention matrices are 4,096 x 64 per head and sample:
    for a micro-batch of 2 samples "auto" takes the compact kernel (the materialized softmax
    with a hand-written backward), 1.5-2.8x faster forward + backward than the blockwise kernel
    on CPU; for a whole batch of 32 (the demo's narrow tower) the blockwise one.
    """
    out = attention_lib.dot_product_attention(
        _split_heads(q, num_heads),
        _split_heads(k, num_heads),
        _split_heads(v, num_heads),
        implementation=implementation,
        block_size=block_size,
    )
    return out.reshape(q.shape[:2] + (-1,))


class DepthwiseConv(nn.Module):
    """k x k depth-wise convolution, stride 1, zero "SAME" padding, with bias (Eq. 1).

    Computed as the sum of k^2 shifted, per-channel-scaled copies of the input, which XLA fuses
    into one loop: the same result as ``nn.Conv(C, (k, k), feature_group_count=C)`` (same kernel
    layout (k, k, 1, C) and initialization) but ~50x faster on CPU, where XLA's grouped
    convolution is slow; on GPU/TPU it is as fast as the native kernel.
    """

    kernel_size: int = 3
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x (B, H, W, C) -> (B, H, W, C)."""
        size = self.kernel_size
        if size % 2 != 1:
            raise ValueError(f"depth-wise kernel size must be odd; got {size}")
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (size, size, 1, channels), self.param_dtype
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (channels,), self.param_dtype)
        kernel, bias, x = kernel.astype(self.dtype), bias.astype(self.dtype), x.astype(self.dtype)
        return depthwise_conv(x, kernel[:, :, 0, :]) + bias


def _shifted_copies(x: jax.Array, size: int):
    """Yields (r, c, x shifted by (r - k//2, c - k//2)) for the k x k taps, zero padded."""
    pad = size // 2
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    for row in range(size):
        for col in range(size):
            yield row, col, padded[:, row : row + height, col : col + width, :]


def _shifted_sum(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """sum_{r,c} x[:, h + r - k//2, w + c - k//2, :] * kernel[r, c] with zero padding."""
    return sum(shifted * kernel[r, c] for r, c, shifted in _shifted_copies(x, kernel.shape[0]))


@jax.custom_vjp
def depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Depth-wise k x k convolution, stride 1, zero "SAME" padding, no bias.

    x (B, H, W, C), kernel (k, k, C) -> (B, H, W, C). A custom VJP: autodiff of the shifted sum
    would store the k^2 shifted copies of x for the kernel gradient; here only x is kept, the
    input gradient is the same shifted sum of the output gradient with the kernel flipped, and
    the kernel gradient is k^2 reductions of x against it.
    """
    return _shifted_sum(x, kernel)


def _depthwise_fwd(x, kernel):
    return _shifted_sum(x, kernel), (x, kernel)


def _depthwise_bwd(residuals, grad):
    x, kernel = residuals
    size = kernel.shape[0]
    taps = [jnp.sum(shifted * grad, axis=(0, 1, 2)) for _, _, shifted in _shifted_copies(x, size)]
    grad_kernel = jnp.stack(taps).reshape(kernel.shape)  # row-major taps -> (k, k, C)
    return _shifted_sum(grad, kernel[::-1, ::-1]), grad_kernel.astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


class PatchMerging(nn.Module):
    """p x p convolution with stride p (non-overlapping patches), "SAME" padding, with bias.

    Computed as a space-to-depth reshape and one matmul: the same parameters (kernel
    (p, p, C_in, C_out), bias), initialization and result as ``nn.Conv(C_out, (p, p),
    strides=(p, p), padding="SAME")`` on a grid divisible by p, where SAME pads nothing. XLA:CPU
    lowers the convolution's kernel gradient to a naive loop that took 17% of the paper-size
    image tower's forward + backward; the matmul's gradient is two matmuls.
    """

    features: int
    patch: int = 2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x (B, H, W, C_in) -> (B, H / p, W / p, C_out)."""
        batch, height, width, channels = x.shape
        p = self.patch
        if height % p or width % p:
            raise ValueError(f"grid {height} x {width} is not divisible by the patch size {p}")
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (p, p, channels, self.features),
            self.param_dtype,
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        patches = x.astype(self.dtype).reshape(batch, height // p, p, width // p, p, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(
            batch, height // p, width // p, p * p * channels
        )  # (row, col, channel) order, as the kernel's (p, p, C_in) axes
        weights = kernel.astype(self.dtype).reshape(p * p * channels, self.features)
        return patches @ weights + bias.astype(self.dtype)


class DualStreamBlock(nn.Module):
    """One dual-stream block (DS-Net MixBlock with LayerNorm); see the module docstring.

    Attributes:
      dim: channels C (split into C/2 local + C/2 global).
      num_heads: heads of the global self-attention and of the co-attentions.
      global_pool: pooling factor of the global stream.
      mlp_ratio: hidden width of the block MLP relative to C.
      local_kernel: kernel of the local depth-wise conv (Eq. 1: 3).
    """

    dim: int
    num_heads: int
    global_pool: int = 8
    mlp_ratio: int = 4
    local_kernel: int = 3
    block: str = "paper"
    attention: str = "auto"
    block_size: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, use_local: bool = True, use_global: bool = True):
        """x (B, H, W, C) -> (B, H, W, C)."""
        batch, height, width, channels = x.shape
        half = channels // 2
        pool = self.global_pool
        if channels != self.dim or channels % 2 or half % self.num_heads:
            raise ValueError(f"block of width {self.dim} with {self.num_heads} heads got {x.shape}")
        if height % pool or width % pool:
            raise ValueError(f"grid {height} x {width} is not divisible by global_pool {pool}")
        check_block(self.block)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        norm = {"dtype": self.dtype, "param_dtype": self.param_dtype}

        def depthwise(name, kernel):
            return DepthwiseConv(kernel, name=name, **kw)

        def attend(q, k, v):
            return _attend(q, k, v, self.num_heads, self.attention, self.block_size)

        dsnet = self.block == "dsnet"
        if dsnet:
            x = x + depthwise("position", 3)(x)
        residual = x
        y = nn.LayerNorm(name="norm1", **norm)(x)
        if dsnet:
            y = nn.Dense(channels, name="split_proj", **kw)(y)
        f_local, f_global = y[..., :half], y[..., half:]  # (B, H, W, C/2) each

        # Intra-scale propagation.
        if use_local and dsnet:
            f_local = f_local + depthwise("local_conv", self.local_kernel)(
                nn.LayerNorm(name="local_norm", **norm)(f_local)
            )
        elif use_local:
            f_local = depthwise("local_conv", self.local_kernel)(f_local)  # Eq. 1
        if use_global:
            g = average_pool(f_global, pool)  # (B, H/p, W/p, C/2)
            grid = g.shape[1:3]
            g = g.reshape(batch, -1, half)  # (B, T_g, C/2)
            inputs = nn.LayerNorm(name="global_norm", **norm)(g) if dsnet else g
            qkv = nn.Dense(3 * half, name="global_qkv", **kw)(inputs)
            attended = nn.Dense(half, name="global_proj", **kw)(attend(*jnp.split(qkv, 3, axis=-1)))
            g = g + attended if dsnet else attended  # Eq. 2–3

        # Inter-scale co-attention: each direction exists only if both streams do.
        local_tokens = f_local.reshape(batch, -1, half)  # (B, H*W, C/2)
        if use_local and use_global:
            local_in, global_in = local_tokens, g
            if dsnet:
                local_in = nn.LayerNorm(name="co_local_norm", **norm)(local_in)
                global_in = nn.LayerNorm(name="co_global_norm", **norm)(global_in)
            local_qkv = nn.Dense(3 * half, name="co_local_qkv", **kw)(local_in)
            global_qkv = nn.Dense(3 * half, name="co_global_qkv", **kw)(global_in)
            lq, lk, lv = jnp.split(local_qkv, 3, axis=-1)
            gq, gk, gv = jnp.split(global_qkv, 3, axis=-1)
            local_tokens = local_tokens + nn.Dense(half, name="co_local_proj", **kw)(
                attend(lq, gk, gv)
            )  # local <- global
            g = g + nn.Dense(half, name="co_global_proj", **kw)(
                attend(gq, lk, lv)
            )  # global <- local

        # Fusion: a masked stream contributes zeros to the 1 x 1 fuse.
        if use_local:
            local_out = local_tokens.reshape(batch, height, width, half)
        else:
            local_out = jnp.zeros((batch, height, width, half), x.dtype)
        if use_global:
            g = g.reshape(batch, *grid, half)
            global_out = resize_linear(g, (height, width))  # (B, H/p, W/p, C/2) -> (B, H, W, C/2)
        else:
            global_out = jnp.zeros((batch, height, width, half), x.dtype)
        fused = jnp.concatenate([local_out, global_out], axis=-1)
        x = residual + nn.Dense(channels, name="fuse", **kw)(fused)

        hidden = nn.Dense(self.mlp_ratio * channels, name="mlp_in", **kw)(
            nn.LayerNorm(name="norm2", **norm)(x)
        )
        return x + nn.Dense(channels, name="mlp_out", **kw)(nn.gelu(hidden))


class ImageTower(nn.Module):
    """DS-Net-style dual-stream image encoder (Sec. 3.1); see the module docstring.

    Attributes:
      image_mean, image_std: training-split pixel statistics used to standardize the input.
      resize_hw: the grid the input is resized to (64, 256).
      stem_channels: stem conv output channels (projected to channels[0] if different).
      channels, depths, num_heads: width, number of blocks and heads of each stage.
      global_pool, mlp_ratio, local_kernel: see :class:`DualStreamBlock`.
      head_hidden: hidden width of the per-pixel MLP head C -> head_hidden -> 1.
      stem_kernel, merge_kernel: kernels of the stride-2 stem and patch-merging convs.
      attention, block_size: implementation of the global and co-attention (see attention.py).
      micro_batch: samples pushed through the tower at a time (``lax.scan`` over micro-batches);
        0: by backend and size (see :func:`resolve_micro_batch`).
      remat: with micro-batches, recompute each one's forward in the backward pass instead of
        storing the whole batch's activations.
    """

    image_mean: float = 0.0
    image_std: float = 1.0
    resize_hw: tuple[int, int] = (64, 256)
    stem_channels: int = 64
    channels: tuple[int, ...] = (64, 128)
    depths: tuple[int, ...] = (3, 4)
    num_heads: tuple[int, ...] = (2, 4)
    global_pool: int = 8
    mlp_ratio: int = 4
    local_kernel: int = 3
    block: str = "paper"
    head_hidden: int = 64
    stem_kernel: int = 3
    merge_kernel: int = 2
    attention: str = "auto"
    block_size: int = 512
    micro_batch: int = 0
    remat: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __call__(
        self, images: jax.Array, pathways: Sequence[str] = PATHWAYS, train: bool = False
    ) -> jax.Array:
        """images (B, H, W) raw pixels -> (B, 16, 64) raw image feature map.

        Args:
          images: (B, 68, 270) grayscale stimuli in raw pixel units.
          pathways: streams kept in every block, a subset of ("local", "global") (Fig. 5a).
          train: unused (no dropout / batch statistics).
        """
        del train
        use_local, use_global = parse_pathways(pathways)
        check_grayscale(images)  # before the micro-batch reshape, which assumes it
        batch = images.shape[0]
        stage1_bytes = (
            (self.resize_hw[0] // 2) * (self.resize_hw[1] // 2) * self.channels[0]
        ) * jnp.dtype(self.dtype).itemsize
        chunk = resolve_micro_batch(self.micro_batch, stage1_bytes)
        if self.is_initializing() or chunk >= batch:
            return self.encode(images, use_local, use_global)
        # Micro-batches, one after the other: every sample is independent of the others (no
        # batch statistics), so this is the same function with a cache-sized working set.
        n_chunks = -(-batch // chunk)
        padded = jnp.pad(images, ((0, n_chunks * chunk - batch), (0, 0), (0, 0)))

        def body(module, carry, chunk_images):
            return carry, module.encode(chunk_images, use_local, use_global)

        if self.remat:
            # Backward recomputes each micro-batch's forward: activations of one micro-batch
            # at a time instead of the whole batch's.
            body = nn.remat(body, prevent_cse=False)
        scan = nn.scan(
            body,
            variable_broadcast="params",
            split_rngs={"params": False},
            length=n_chunks,
        )
        _, out = scan(self, None, padded.reshape(n_chunks, chunk, *images.shape[1:]))
        return out.reshape(n_chunks * chunk, *out.shape[2:])[:batch]

    @nn.compact
    def encode(self, images: jax.Array, use_local: bool, use_global: bool) -> jax.Array:
        """The tower on one (micro-)batch: (B, H, W) -> (B, 16, 64)."""
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = normalize_and_resize(
            images, self.image_mean, self.image_std, self.resize_hw, self.dtype
        )
        stem = (self.stem_kernel, self.stem_kernel)
        x = nn.Conv(self.stem_channels, stem, strides=(2, 2), padding="SAME", name="stem", **kw)(x)
        x = nn.LayerNorm(name="stem_norm", **kw)(x)  # (B, 32, 128, stem_channels)
        for stage, (width, depth, heads) in enumerate(
            zip(self.channels, self.depths, self.num_heads, strict=True)
        ):
            if stage > 0:
                if self.merge_kernel == 2:  # non-overlapping 2 x 2 patches, as a matmul
                    merge = PatchMerging(width, 2, name=f"merge{stage}", **kw)
                else:
                    kernel = (self.merge_kernel, self.merge_kernel)
                    merge = nn.Conv(
                        width, kernel, strides=(2, 2), padding="SAME", name=f"merge{stage}", **kw
                    )
                x = merge(x)  # (B, H, W, C_prev) -> (B, H/2, W/2, C)
                x = nn.LayerNorm(name=f"merge{stage}_norm", **kw)(x)
            elif x.shape[-1] != width:
                x = nn.Dense(width, name="stem_proj", **kw)(x)
            for index in range(depth):
                x = DualStreamBlock(
                    dim=width,
                    num_heads=heads,
                    global_pool=self.global_pool,
                    mlp_ratio=self.mlp_ratio,
                    local_kernel=self.local_kernel,
                    block=self.block,
                    attention=self.attention,
                    block_size=self.block_size,
                    name=f"stage{stage + 1}_block{index + 1}",
                    **kw,
                )(x, use_local=use_local, use_global=use_global)
        x = nn.LayerNorm(name="head_norm", **kw)(x)
        x = nn.gelu(nn.Dense(self.head_hidden, name="head_hidden", **kw)(x))
        x = nn.Dense(1, name="head_out", **kw)(x)  # (B, 16, 64, C) -> (B, 16, 64, 1)
        return x[..., 0]
