"""Models: shapes, parameter counts at the paper's sizes, the neural tower, one DS-Net block and the
VGG / ViT encoders against float64 NumPy oracles, neuron masks as neuron deletion, pathway masking
as zeroed fusion halves, pretrained-weight I/O."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from numpy_reference import bilinear_matrix, gelu_tanh
from scipy import ndimage

from dina_jax.config import get_base_config, load_config
from dina_jax.data.stringer import DataError
from dina_jax.models import (
    MODEL_BUILDERS,
    NeuralTower,
    build_model,
    init_params,
    load_pretrained,
    save_pretrained,
)
from dina_jax.models.baselines import VGG16Encoder, ViTEncoder
from dina_jax.models.image_tower import (
    DepthwiseConv,
    DualStreamBlock,
    PatchMerging,
    average_pool,
    depthwise_conv,
    normalize_and_resize,
    resize_linear,
)

N_TINY = 12
ATOL = 1e-5


def _rng(seed):
    return np.random.default_rng(seed)


def _images(seed, batch):
    return jnp.asarray(_rng(seed).uniform(0.0, 1.0, (batch, 68, 270)), jnp.float32)


def _responses(seed, batch, n):
    return jnp.asarray(_rng(seed).standard_normal((batch, n)), jnp.float32)


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def tiny_dina(tiny_config):
    config = tiny_config.copy_and_resolve_references()
    model = build_model(config, N_TINY, image_mean=0.4, image_std=0.25)
    return model, init_params(model, jax.random.PRNGKey(0))


# ----------------------------------------------------------------------------- build and shapes


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_every_model_builds_and_maps_to_16_by_64(tiny_config, name):
    config = tiny_config.copy_and_resolve_references()
    config.model.name = name
    model = build_model(config, N_TINY, image_mean=0.4, image_std=0.25)
    params = init_params(model, jax.random.PRNGKey(1))
    assert sorted(params) == ["image_tower", "neural_tower"]
    images, responses = _images(0, 3), _responses(1, 3, N_TINY)

    @jax.jit
    def run(params):
        variables = {"params": params}
        both = model.apply(variables, images, responses)
        alone = (
            model.apply(variables, images, method="encode_images"),
            model.apply(variables, responses, method="encode_neurons"),
        )
        return both, alone

    (z_img, z_neu, aux), (z_img_alone, z_neu_alone) = run(params)
    assert z_img.shape == z_neu.shape == (3, 16, 64)
    assert aux == {}
    assert np.all(np.isfinite(z_img)) and np.all(np.isfinite(z_neu))
    np.testing.assert_array_equal(z_img, z_img_alone)
    np.testing.assert_array_equal(z_neu, z_neu_alone)


def test_unknown_model_name_raises():
    config = get_base_config()
    config.model.name = "resnet"
    with pytest.raises(ValueError, match="unknown config.model.name 'resnet'"):
        build_model(config, 10)


def _paper_params(name, n_neurons=10_000, block="paper"):
    config = get_base_config()
    config.model.name = name
    config.model.image.block = block
    model = build_model(config, n_neurons)
    images = jax.ShapeDtypeStruct((2, 68, 270), jnp.float32)
    responses = jax.ShapeDtypeStruct((2, n_neurons), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, responses)
    outputs = jax.eval_shape(model.apply, variables, images, responses)
    return config, variables["params"], outputs


def _image_tower_count(image):
    """Independent count of the image tower's parameters from its layer list."""

    def block(c, ratio):
        h = c // 2
        dense = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
        paper = (
            2 * c  # norm1
            + 10 * h  # local 3 x 3 depth-wise conv (Eq. 1)
            + dense(h, 3 * h) + dense(h, h)  # global qkv, projection (Eq. 2-3)
            + 2 * (dense(h, 3 * h) + dense(h, h))  # co-attention, both streams
            + dense(c, c)  # fuse
            + 2 * c + dense(c, ratio * c) + dense(ratio * c, c)  # norm2 + MLP
        )  # fmt: skip
        if image.block == "paper":
            return paper
        return (
            paper
            + 10 * c  # position depth-wise conv 3 x 3 + bias
            + dense(c, c)  # split projection
            + 2 * h + 2 * h + 2 * (2 * h)  # local, global and both co-attention norms
        )  # fmt: skip

    stem = image.stem_channels
    total = image.stem_kernel**2 * stem + stem + 2 * stem
    previous = stem
    for stage, (c, depth) in enumerate(zip(image.channels, image.depths, strict=True)):
        if stage > 0:
            total += image.merge_kernel**2 * previous * c + c + 2 * c
        total += depth * block(c, image.mlp_ratio)
        previous = c
    return (
        total
        + 2 * previous
        + previous * image.head_hidden
        + image.head_hidden
        + image.head_hidden
        + 1
    )


def test_paper_size_dina_shapes_and_parameter_counts():
    config, params, (z_img, z_neu, _) = _paper_params("dina")
    assert z_img.shape == z_neu.shape == (2, 16, 64)
    n, d, hidden = 10_000, 32, 1024
    neural = 2 * n * d + 3 * d * d + n * hidden + hidden + hidden * 1024 + 1024
    assert _count(params["neural_tower"]) == neural == 11_933_696
    assert _count(params["image_tower"]) == _image_tower_count(config.model.image) == 991_169
    # The PyTorch port's tower (../shared/peer: the same block, no stem/merge LayerNorms) has
    # 990,785 = 991,169 - 2 * 64 - 2 * 128.
    config, params, _ = _paper_params("dina", block="dsnet")
    assert _count(params["image_tower"]) == _image_tower_count(config.model.image) == 1_079_553


def test_paper_size_vgg16_mlp_parameter_counts():
    config, params, (z_img, z_neu, _) = _paper_params("vgg16_mlp")
    assert z_img.shape == z_neu.shape == (2, 16, 64)
    vgg = config.model.vgg16
    total, c_in = 0, 1
    for width, depth in zip(vgg.widths, vgg.depths, strict=True):
        for _ in range(depth):
            total += 9 * c_in * width + width
            c_in = width
    total += c_in * vgg.head_hidden + 2 * vgg.head_hidden + 1
    assert _count(params["image_tower"]) == total == 14_746_433
    readout = 10_000 * 1024 + 1024 + 1024 * 1024 + 1024
    assert _count(params["neural_tower"]) == readout == 11_290_624


def test_paper_size_vit_mlp_parameter_counts():
    config, params, (z_img, _, _) = _paper_params("vit_mlp")
    assert z_img.shape == (2, 16, 64)
    b = config.model.vit
    dim, ratio, tokens = b.dim, b.mlp_ratio, 16 * 64
    per_block = 4 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim)
    per_block += (dim * ratio * dim + ratio * dim) + (ratio * dim * dim + dim)
    total = b.patch[0] * b.patch[1] * dim + dim + tokens * dim
    total += b.depth * per_block + 2 * dim + dim * b.head_hidden + 2 * b.head_hidden + 1
    assert _count(params["image_tower"]) == total == 2_881_857


def test_synthetic_config_builds_at_its_size():
    config = load_config("synthetic")
    model = build_model(config, config.data.synthetic.n_neurons)
    images = jax.ShapeDtypeStruct((4, 68, 270), jnp.float32)
    responses = jax.ShapeDtypeStruct((4, config.data.synthetic.n_neurons), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, responses)
    z_img, z_neu, _ = jax.eval_shape(model.apply, variables, images, responses)
    assert z_img.shape == z_neu.shape == (4, 16, 64)


# --------------------------------------------------------------------------------- image tower


def test_images_are_standardized_inside_the_model(tiny_dina, tiny_config):
    model, params = tiny_dina
    plain = build_model(tiny_config, N_TINY, image_mean=0.0, image_std=1.0)
    images = _images(2, 2)

    @jax.jit
    def both(p, x):
        raw = model.apply({"params": p}, x, method="encode_images")
        standardized = plain.apply({"params": p}, (x - 0.4) / 0.25, method="encode_images")
        return raw, standardized

    raw, standardized = both(params, images)
    np.testing.assert_allclose(raw, standardized, atol=ATOL)


def test_image_tower_is_differentiable_in_pixel_space(tiny_dina):
    model, params = tiny_dina
    images = _images(3, 1)
    grad = jax.jit(
        jax.grad(lambda x: model.apply({"params": params}, x, method="encode_images")[0, 8, 32])
    )(images)
    assert grad.shape == (1, 68, 270)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_pathway_masking(tiny_dina):
    model, params = tiny_dina
    images = _images(4, 2)
    variants = [("local", "global"), ("global", "local"), ("local",), ("global",), ()]

    @jax.jit
    def encode_all(p, x):
        plain = model.apply({"params": p}, x, method="encode_images")
        masked = [
            model.apply({"params": p}, x, pathways=pathways, method="encode_images")
            for pathways in variants
        ]
        return plain, masked

    plain, masked = encode_all(params, images)
    masked = dict(zip(variants, map(np.asarray, masked), strict=True))
    np.testing.assert_array_equal(masked[("local", "global")], plain)
    np.testing.assert_array_equal(masked[("global", "local")], plain)
    for pathways in [("local",), ("global",), ()]:
        assert np.all(np.isfinite(masked[pathways]))
        assert np.abs(masked[pathways] - plain).max() > 1e-3, pathways
    assert np.abs(masked[("local",)] - masked[("global",)]).max() > 1e-3
    with pytest.raises(ValueError, match="unknown pathways"):
        model.apply({"params": params}, images, pathways=("dorsal",), method="encode_images")


def test_baselines_refuse_pathway_masking(tiny_config):
    config = tiny_config.copy_and_resolve_references()
    config.model.name = "vgg16_mlp"
    model = build_model(config, N_TINY)
    images = jax.ShapeDtypeStruct((1, 68, 270), jnp.float32)
    variables = jax.eval_shape(
        model.init, jax.random.PRNGKey(0), images, jax.ShapeDtypeStruct((1, N_TINY), jnp.float32)
    )
    with pytest.raises(ValueError, match="pathway masking applies to the DS-Net image tower only"):
        jax.eval_shape(
            lambda v, x: model.apply(v, x, pathways=("local",), method="encode_images"),
            variables,
            images,
        )


def _grouped_depthwise(x, kernel):
    """XLA's grouped convolution, the oracle of the depth-wise conv: kernel (k, k, C)."""
    return lax.conv_general_dilated(
        x,
        kernel[:, :, None, :],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )


def test_depthwise_conv_equals_grouped_convolution():
    x = jnp.asarray(_rng(5).standard_normal((2, 9, 11, 6)), jnp.float32)
    layer = DepthwiseConv(3)
    variables = layer.init(jax.random.PRNGKey(0), x)
    kernel = variables["params"]["kernel"]
    variables = {"params": {"kernel": kernel, "bias": jnp.arange(6.0)}}
    expected = _grouped_depthwise(x, kernel[:, :, 0, :]) + jnp.arange(6.0)
    np.testing.assert_allclose(layer.apply(variables, x), expected, atol=ATOL)


def test_depthwise_conv_gradients_equal_those_of_the_grouped_convolution():
    """The custom VJP (flipped-kernel input gradient, k^2 kernel reductions) against autodiff."""
    x = jnp.asarray(_rng(7).standard_normal((3, 7, 10, 5)), jnp.float32)
    kernel = jnp.asarray(_rng(8).standard_normal((3, 3, 5)), jnp.float32)

    def loss(conv):
        return lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel)) * jnp.arange(5.0))

    expected = jax.grad(loss(_grouped_depthwise), argnums=(0, 1))(x, kernel)
    got = jax.jit(jax.grad(loss(depthwise_conv), argnums=(0, 1)))(x, kernel)
    for g, e in zip(got, expected, strict=True):  # float32 sums of 210 products
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_average_pool_equals_flax_avg_pool():
    import flax.linen as nn

    x = jnp.asarray(_rng(9).standard_normal((2, 8, 16, 3)), jnp.float32)
    np.testing.assert_allclose(
        average_pool(x, 4), nn.avg_pool(x, (4, 4), strides=(4, 4)), atol=ATOL
    )


@pytest.mark.parametrize("remat", [True, False])
@pytest.mark.parametrize("pathways", [("local", "global"), ("local",)])
def test_micro_batched_image_tower_equals_the_whole_batch(tiny_config, remat, pathways):
    """Micro-batches (a scan over 2 samples at a time; the batch of 5 is padded to 6) compute
    the same function and the same parameter gradients as one pass over the batch."""
    towers = {}
    for micro_batch in (2, 1000):
        config = tiny_config.copy_and_resolve_references()
        config.model.image.micro_batch = micro_batch
        config.model.image.remat = remat
        towers[micro_batch] = build_model(config, N_TINY, image_mean=0.4, image_std=0.25)
    params = init_params(towers[2], jax.random.PRNGKey(0))
    assert jax.tree.structure(params) == jax.tree.structure(
        init_params(towers[1000], jax.random.PRNGKey(0))
    )
    images = _images(10, 5)
    weights = jnp.asarray(_rng(11).standard_normal((5, 16, 64)), jnp.float32)

    def outputs(model):
        def loss(image_params):
            maps = model.apply(
                {"params": {**params, "image_tower": image_params}},
                images,
                pathways=pathways,
                method="encode_images",
            )
            return jnp.sum(maps * weights), maps

        return jax.jit(jax.grad(loss, has_aux=True))(params["image_tower"])

    grads, maps = outputs(towers[2])
    expected_grads, expected_maps = outputs(towers[1000])
    np.testing.assert_allclose(maps, expected_maps, atol=ATOL)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_input_resize_equals_jax_image_resize_with_antialiasing():
    """normalize_and_resize's constant matmuls = the library's antialiased bilinear resize,
    values and gradients with respect to the pixels, down- and upsampling."""

    def library(images, hw):
        x = (images - 3.0) / 2.0
        return jax.image.resize(x, (x.shape[0], *hw), "linear", antialias=True)[..., None]

    for shape, hw in (((2, 68, 270), (64, 256)), ((1, 40, 9), (13, 20)), ((1, 64, 256), (64, 256))):
        images = jnp.asarray(_rng(7).normal(3.0, 2.0, shape), jnp.float32)
        got = normalize_and_resize(images, 3.0, 2.0, hw, jnp.float32)
        np.testing.assert_allclose(got, library(images, hw), atol=ATOL)
        weights = jnp.asarray(_rng(8).standard_normal(got.shape), jnp.float32)
        grads = [
            jax.grad(lambda x, f=f, hw=hw, w=weights: jnp.sum(f(x, hw) * w))(images)
            for f in (lambda x, hw: normalize_and_resize(x, 3.0, 2.0, hw, jnp.float32), library)
        ]
        np.testing.assert_allclose(*grads, atol=ATOL)


def test_upsample_equals_jax_image_resize():
    x = jnp.asarray(_rng(6).standard_normal((2, 4, 16, 3)), jnp.float32)
    expected = jax.image.resize(x, (2, 32, 128, 3), method="linear")
    np.testing.assert_allclose(resize_linear(x, (32, 128)), expected, atol=ATOL)


# Parameters of each dual-stream block that only one stream reads (image_tower.DualStreamBlock;
# the norms exist in the "dsnet" form only): masking the other stream must make them irrelevant.
# Co-attention needs both streams.
CO_ATTENTION = tuple(f"co_{s}_{p}" for s in ("local", "global") for p in ("norm", "qkv", "proj"))
STREAM_ONLY = {
    "global": ("global_norm", "global_qkv", "global_proj") + CO_ATTENTION,
    "local": ("local_norm", "local_conv") + CO_ATTENTION,
}


def _blocks(image_params):
    names = [name for name in image_params if "_block" in name]
    assert names == ["stage1_block1", "stage2_block1"], names  # configs/tiny.py: depths (1, 1)
    return names


def _edit_blocks(params, edit):
    """Copy of the dual-tower params with edit(block_params) applied to every image block."""
    image = dict(params["image_tower"])
    for name in _blocks(image):
        image[name] = edit(jax.tree.map(np.asarray, dict(image[name])))
    return {**params, "image_tower": image}


@pytest.mark.parametrize("kept,dropped", [("local", "global"), ("global", "local")])
def test_masked_pathway_ignores_the_parameters_of_the_dropped_stream(tiny_dina, kept, dropped):
    model, params = tiny_dina
    images = _images(12, 2)
    rng = _rng(13)

    def perturb(block):
        names = [name for name in STREAM_ONLY[dropped] if name in block]  # "paper": no norms
        assert len(names) >= 3, names
        for name in names:
            block[name] = jax.tree.map(lambda x: x + rng.normal(size=x.shape), block[name])
        return block

    perturbed = _edit_blocks(params, perturb)

    @jax.jit
    def encode(p, q, x):
        masked = [
            model.apply({"params": v}, x, pathways=(kept,), method="encode_images") for v in (p, q)
        ]
        full = [model.apply({"params": v}, x, method="encode_images") for v in (p, q)]
        return masked, full

    (masked, masked_perturbed), (full, full_perturbed) = encode(params, perturbed, images)
    np.testing.assert_array_equal(masked_perturbed, masked)
    # The perturbation is not a no-op: the full model reads those parameters.
    assert np.abs(np.asarray(full_perturbed) - np.asarray(full)).max() > 1e-2


@pytest.mark.parametrize("kept", ["local", "global"])
def test_masked_pathway_equals_full_model_with_zeroed_fusion_half(tiny_dina, kept):
    """Masking a stream = zeroing its rows of the 1 x 1 fuse kernel and the co-attention it feeds
    into the kept stream, in every block (the module docstring's definition of masking)."""
    model, params = tiny_dina
    images = _images(14, 2)
    # Random biases too, so that a dropped bias cannot hide behind its zero initialization.
    rng = _rng(15)
    params = _edit_blocks(
        params,
        lambda block: {
            name: {
                k: v + 0.1 * rng.normal(size=v.shape) if k == "bias" else v for k, v in p.items()
            }
            for name, p in block.items()
        },
    )

    def zero(block):
        half = block["fuse"]["kernel"].shape[0] // 2
        kernel = block["fuse"]["kernel"].copy()
        # The fuse input is concat(local, global): rows [:half] read local, [half:] global.
        kernel[slice(half, None) if kept == "local" else slice(None, half)] = 0.0
        # Co-attention adds nothing to the kept stream: zero the projection that feeds it.
        feeds_kept = f"co_{kept}_proj"
        return {
            **block,
            "fuse": {**block["fuse"], "kernel": kernel},
            feeds_kept: jax.tree.map(np.zeros_like, block[feeds_kept]),
        }

    zeroed = _edit_blocks(params, zero)

    @jax.jit
    def encode(p, q, x):
        masked = model.apply({"params": p}, x, pathways=(kept,), method="encode_images")
        return masked, model.apply({"params": q}, x, method="encode_images")

    masked, full_zeroed = encode(params, zeroed, images)
    np.testing.assert_allclose(masked, full_zeroed, atol=ATOL, rtol=1e-5)


# ------------------------------------------------------- float64 NumPy references of the towers
def _np_layer_norm(x, p, eps=1e-6):
    """flax.linen.LayerNorm (epsilon 1e-6) over the last axis."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _np_depthwise(x, p):
    """k x k depth-wise cross-correlation, zero padding, per channel with scipy.ndimage."""
    kernel = p["kernel"][:, :, 0, :]  # (k, k, C)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            out[b, :, :, c] = ndimage.correlate(x[b, :, :, c], kernel[:, :, c], mode="constant")
    return out + p["bias"]


def _np_attention(q, k, v, heads):
    """Multi-head softmax(q k^T / sqrt(d)) v; (B, Tq, C), (B, Tk, C), (B, Tk, C) -> (B, Tq, C);
    head h reads channels [h d, (h + 1) d)."""
    d = q.shape[-1] // heads
    out = np.empty(q.shape)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        logits = q[..., cols] @ np.swapaxes(k[..., cols], 1, 2) / np.sqrt(d)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out[..., cols] = probs @ v[..., cols]
    return out


def _np_dual_stream_block(p, x, heads, pool, use_local=True, use_global=True, block="paper"):
    """One dual-stream block in float64, from the image_tower module docstring: "paper" (Eq. 1-3
    as printed) or "dsnet" (DS-Net's MixBlock)."""
    batch, height, width, channels = x.shape
    half = channels // 2
    dsnet = block == "dsnet"

    def norm(x, name):  # the DS-Net block's extra LayerNorms; the paper's block has none
        return _np_layer_norm(x, p[name]) if dsnet else x

    if dsnet:
        x = x + _np_depthwise(x, p["position"])  # conditional position encoding
    y = _np_layer_norm(x, p["norm1"])
    if dsnet:
        y = _np_dense(y, p["split_proj"])
    f_l, f_g = y[..., :half], y[..., half:]
    if use_local:  # Eq. 1 (DS-Net: normed, residual)
        conv = _np_depthwise(norm(f_l, "local_norm"), p["local_conv"])
        f_l = f_l + conv if dsnet else conv
    local = f_l.reshape(batch, height * width, half)
    if use_global:  # Eq. 2-3 on the average-pooled grid (DS-Net: normed, residual)
        gh, gw = height // pool, width // pool
        g = f_g.reshape(batch, gh, pool, gw, pool, half).mean(axis=(2, 4))
        g = g.reshape(batch, gh * gw, half)
        q, k, v = np.split(_np_dense(norm(g, "global_norm"), p["global_qkv"]), 3, -1)
        attended = _np_dense(_np_attention(q, k, v, heads), p["global_proj"])
        g = g + attended if dsnet else attended
    if use_local and use_global:  # co-attention, each stream with its own q/k/v
        lq, lk, lv = np.split(_np_dense(norm(local, "co_local_norm"), p["co_local_qkv"]), 3, -1)
        gq, gk, gv = np.split(_np_dense(norm(g, "co_global_norm"), p["co_global_qkv"]), 3, -1)
        a_l = local + _np_dense(_np_attention(lq, gk, gv, heads), p["co_local_proj"])
        a_g = g + _np_dense(_np_attention(gq, lk, lv, heads), p["co_global_proj"])
        local, g = a_l, a_g
    zeros = np.zeros((batch, height, width, half))
    local_out = local.reshape(batch, height, width, half) if use_local else zeros
    if use_global:
        rows, cols = bilinear_matrix(gh, height), bilinear_matrix(gw, width)
        global_out = np.einsum("Hh,Ww,bhwc->bHWc", rows, cols, g.reshape(batch, gh, gw, half))
    else:
        global_out = zeros
    x = x + _np_dense(np.concatenate([local_out, global_out], -1), p["fuse"])
    hidden = gelu_tanh(_np_dense(_np_layer_norm(x, p["norm2"]), p["mlp_in"]))
    return x + _np_dense(hidden, p["mlp_out"])


def _randomized(params, seed, scale=0.3):
    """Every leaf replaced by N(0, scale^2) (LayerNorm scales 1 + noise): no zero biases or unit
    norms for a wrong formula to hide behind."""
    rng = _rng(seed)

    def draw(path, x):
        noise = scale * rng.standard_normal(x.shape)
        return (1.0 + noise if path[-1].key == "scale" else noise).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, params)


@pytest.mark.parametrize("form", ["paper", "dsnet"])
@pytest.mark.parametrize(
    "pathways", [("local", "global"), ("local",), ("global",)], ids=lambda p: "+".join(p)
)
def test_dual_stream_block_matches_numpy_reference(pathways, form):
    batch, size, channels, heads, pool = 2, 8, 8, 2, 4
    block = DualStreamBlock(
        dim=channels,
        num_heads=heads,
        global_pool=pool,
        mlp_ratio=2,
        block=form,
        attention="materialized",
    )
    x = _rng(16).standard_normal((batch, size, size, channels)).astype(np.float32)
    params = _randomized(block.init(jax.random.PRNGKey(6), x)["params"], 17)
    use_local, use_global = "local" in pathways, "global" in pathways
    out = jax.jit(
        lambda p, x: block.apply({"params": p}, x, use_local=use_local, use_global=use_global)
    )(params, x)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    expected = _np_dual_stream_block(
        p64, x.astype(np.float64), heads, pool, use_local, use_global, form
    )
    assert out.shape == expected.shape == x.shape
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


def _np_conv_same(x, p):
    """k x k cross-correlation, stride 1, zero "SAME" padding: (B, H, W, I) -> (B, H, W, O)."""
    kernel = p["kernel"]  # (kh, kw, I, O)
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                patch = padded[b, i : i + kh, j : j + kw, :]  # (kh, kw, I)
                out[b, i, j] = np.tensordot(patch, kernel, axes=3)
    return out + p["bias"]


def test_vgg16_encoder_matches_numpy_forward():
    # The input is already at resize_hw, where the model's antialiased resize is the identity.
    encoder = VGG16Encoder(
        image_mean=0.3,
        image_std=0.5,
        resize_hw=(8, 16),
        widths=(3, 4, 5),
        depths=(1, 2, 1),
        pooled_blocks=2,
        head_hidden=4,
    )
    images = _rng(18).uniform(0.0, 1.0, (2, 8, 16)).astype(np.float32)
    params = _randomized(encoder.init(jax.random.PRNGKey(7), images)["params"], 19, scale=0.5)
    out = jax.jit(lambda p, x: encoder.apply({"params": p}, x))(params, images)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = ((images.astype(np.float64) - 0.3) / 0.5)[..., None]
    for name in ("conv1_1", "pool", "conv2_1", "conv2_2", "pool", "conv3_1"):
        if name == "pool":  # 2 x 2 max-pool, stride 2
            b, h, w, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        else:
            x = np.maximum(_np_conv_same(x, p[name]), 0.0)
    x = np.maximum(_np_dense(x, p["head_hidden"]), 0.0)
    expected = _np_dense(x, p["head_out"])[..., 0]
    assert out.shape == expected.shape == (2, 2, 4)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-4)


def test_vit_encoder_matches_numpy_forward():
    dim, heads, patch = 8, 2, (2, 4)
    encoder = ViTEncoder(
        image_mean=0.3,
        image_std=0.5,
        resize_hw=(4, 16),
        patch=patch,
        dim=dim,
        depth=2,
        num_heads=heads,
        mlp_ratio=2,
        head_hidden=4,
        attention="materialized",
    )
    images = _rng(20).uniform(0.0, 1.0, (2, 4, 16)).astype(np.float32)
    params = _randomized(encoder.init(jax.random.PRNGKey(8), images)["params"], 21)
    out = jax.jit(lambda p, x: encoder.apply({"params": p}, x))(params, images)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = (images.astype(np.float64) - 0.3) / 0.5  # (B, 4, 16): at resize_hw already
    batch, gh, gw = 2, 4 // patch[0], 16 // patch[1]
    # Non-overlapping patches, row-major over the grid, each flattened as (row, col, channel).
    patches = x.reshape(batch, gh, patch[0], gw, patch[1]).transpose(0, 1, 3, 2, 4)
    kernel = p["patch_embed"]["kernel"].reshape(-1, dim)  # (ph, pw, 1, dim) -> (ph pw, dim)
    tokens = patches.reshape(batch, gh * gw, -1) @ kernel + p["patch_embed"]["bias"]
    tokens = tokens + p["position_embedding"]
    for index in (1, 2):
        b = p[f"block{index}"]
        q, k, v = np.split(_np_dense(_np_layer_norm(tokens, b["norm1"]), b["qkv"]), 3, -1)
        tokens = tokens + _np_dense(_np_attention(q, k, v, heads), b["proj"])
        hidden = gelu_tanh(_np_dense(_np_layer_norm(tokens, b["norm2"]), b["mlp_in"]))
        tokens = tokens + _np_dense(hidden, b["mlp_out"])
    hidden = gelu_tanh(_np_dense(_np_layer_norm(tokens, p["norm"]), p["head_hidden"]))
    expected = _np_dense(hidden, p["head_out"]).reshape(batch, gh, gw)
    assert out.shape == expected.shape == (2, 2, 4)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-4)


# -------------------------------------------------------------------------------- neural tower


def _numpy_neural_tower(params, responses, keep, d_model, residual=True, uniform=False):
    """Eq. 4–9 and the MLP in float64, written from the paper (plus the optional skip).

    ``uniform``: every kept neuron gets the same attention weight (the "uniform" mixer).
    """
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    attention = p["population_attention"]
    r = np.asarray(responses, np.float64)
    embedded = r[:, :, None] * p["embedding"][None]  # Eq. 4
    q = embedded @ attention["query"]["kernel"]  # Eq. 6
    k = embedded @ attention["key"]["kernel"]
    v = embedded @ attention["value"]["kernel"]
    logits = q @ np.swapaxes(k, 1, 2) / np.sqrt(d_model)  # Eq. 7
    if uniform:
        logits = np.zeros_like(logits)
    logits = np.where(keep[None, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = probs @ v + (embedded if residual else 0.0)
    aggregated = np.einsum("bnd,nd->bn", attended, p["aggregation"]) * keep  # Eq. 8
    hidden = gelu_tanh(aggregated @ p["mlp_hidden_layer"]["kernel"] + p["mlp_hidden_layer"]["bias"])
    out = hidden @ p["mlp_out_layer"]["kernel"] + p["mlp_out_layer"]["bias"]
    return out.reshape(r.shape[0], 2, 4), probs


def _tower(n, attention="blockwise", residual=True, mixer="softmax"):
    return NeuralTower(
        n_neurons=n,
        d_model=8,
        mlp_hidden=16,
        latent_hw=(2, 4),
        attention=attention,
        block_size=5,
        residual=residual,
        mixer=mixer,
    )


@pytest.mark.parametrize("masked", [False, True])
def test_uniform_mixer_is_eq_7_with_equal_weights_on_the_trained_parameters(masked):
    """The uniform mixer reads the softmax tower's parameters and weights kept neurons equally."""
    n = 11
    responses = _responses(8, 2, n)
    params = _tower(n).init(jax.random.PRNGKey(3), responses)["params"]
    keep = np.ones(n, bool)
    if masked:
        keep[[0, 5]] = False
    uniform = _tower(n, mixer="uniform")
    out = uniform.apply({"params": params}, responses, neuron_mask=keep if masked else None)
    expected, _ = _numpy_neural_tower(params, responses, keep, 8, uniform=True)
    np.testing.assert_allclose(out, expected, atol=ATOL)
    with pytest.raises(ValueError, match="unknown model.neural.mixer 'mean'"):
        _tower(n, mixer="mean").init(jax.random.PRNGKey(0), responses)


@pytest.mark.parametrize(
    "attention,residual", [("materialized", True), ("blockwise", True), ("blockwise", False)]
)
def test_neural_tower_matches_numpy_oracle_of_eq_4_to_9(attention, residual):
    n = 13
    tower = _tower(n, attention, residual)
    responses = _responses(7, 3, n)
    params = tower.init(jax.random.PRNGKey(2), responses)["params"]
    keep = np.ones(n, bool)
    keep[[2, 9]] = False
    out, qk = jax.jit(
        lambda p, r, m: (
            tower.apply({"params": p}, r, neuron_mask=m),
            tower.apply({"params": p}, r, neuron_mask=m, method="attention_qk"),
        )
    )(params, responses, jnp.asarray(keep))
    expected, expected_probs = _numpy_neural_tower(params, responses, keep, 8, residual)
    np.testing.assert_allclose(out, expected, atol=ATOL)
    # attention_qk: softmax(q k^T) over the kept keys are the attention probabilities.
    q, k, key_mask = qk
    assert q.shape == k.shape == (3, n, 1, 8) and key_mask.shape == (3, n)
    logits = np.einsum("bqhd,bkhd->bqk", q, k)
    logits = np.where(np.asarray(key_mask)[:, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(-1, keepdims=True), expected_probs, atol=ATOL)


def _delete_neurons(params, removed):
    """The parameters of a tower built without the ``removed`` neurons."""
    params = jax.tree.map(np.asarray, params)
    kept = lambda x: np.delete(x, removed, axis=0)  # noqa: E731
    return {
        **params,
        "embedding": kept(params["embedding"]),
        "aggregation": kept(params["aggregation"]),
        "mlp_hidden_layer": {
            "kernel": kept(params["mlp_hidden_layer"]["kernel"]),
            "bias": params["mlp_hidden_layer"]["bias"],
        },
    }


@pytest.mark.parametrize("attention", ["materialized", "blockwise"])
def test_masking_a_neuron_equals_deleting_it(attention):
    n = 17
    full, reduced = _tower(n, attention), _tower(n - 3, attention)
    responses = _responses(8, 4, n)
    params = full.init(jax.random.PRNGKey(3), responses)["params"]
    removed = [0, 6, 16]
    mask = np.ones(n, bool)
    mask[removed] = False
    masked = jax.jit(lambda p, r: full.apply({"params": p}, r, neuron_mask=mask))(params, responses)
    deleted = jax.jit(lambda p, r: reduced.apply({"params": p}, r))(
        _delete_neurons(params, removed), np.delete(np.asarray(responses), removed, axis=1)
    )
    np.testing.assert_allclose(masked, deleted, atol=ATOL)
    # The masked neurons' responses no longer matter at all.
    changed = np.asarray(responses).copy()
    changed[:, removed] = 100.0
    again = jax.jit(lambda p, r: full.apply({"params": p}, r, neuron_mask=mask))(params, changed)
    np.testing.assert_allclose(again, masked, atol=ATOL)


def test_vmap_over_neuron_masks_through_the_dual_tower(tiny_dina):
    model, params = tiny_dina
    responses = _responses(9, 2, N_TINY)
    rng = _rng(10)
    masks = rng.random((4, N_TINY)) < 0.5
    masks[3] = False
    masks[3, [1, 5]] = True  # all but two neurons excluded

    def encode(mask):
        return model.apply({"params": params}, responses, neuron_mask=mask, method="encode_neurons")

    batched = np.asarray(jax.jit(jax.vmap(encode))(jnp.asarray(masks)))
    single = jax.jit(encode)
    assert batched.shape == (4, 2, 16, 64) and np.all(np.isfinite(batched))
    for index, mask in enumerate(masks):
        np.testing.assert_allclose(batched[index], single(jnp.asarray(mask)), atol=ATOL)
    full = jax.jit(lambda r: model.apply({"params": params}, r, method="encode_neurons"))(responses)
    np.testing.assert_allclose(single(jnp.ones(N_TINY, bool)), full, atol=ATOL)


def test_baseline_readout_mask_is_input_deletion_and_has_no_attention(tiny_config):
    config = tiny_config.copy_and_resolve_references()
    config.model.name = "vit_mlp"
    model = build_model(config, N_TINY)
    params = init_params(model, jax.random.PRNGKey(4))
    responses = np.asarray(_responses(11, 2, N_TINY))
    mask = np.ones(N_TINY, bool)
    mask[3] = False
    changed = responses.copy()
    changed[:, 3] = -50.0
    encode = jax.jit(
        lambda r: model.apply({"params": params}, r, neuron_mask=mask, method="encode_neurons")
    )
    np.testing.assert_allclose(encode(responses), encode(changed), atol=ATOL)
    with pytest.raises(ValueError, match="no population attention"):
        model.apply({"params": params}, responses, method="neural_attention_qk")


# ---------------------------------------------------------------------------- pretrained weights


def test_pretrained_weights_round_trip(tiny_dina, tmp_path):
    model, params = tiny_dina
    path = str(tmp_path / "image_tower.npz")
    save_pretrained(params, path)
    other = init_params(model, jax.random.PRNGKey(5))
    loaded = load_pretrained(other, path)
    jax.tree.map(np.testing.assert_array_equal, loaded["image_tower"], params["image_tower"])
    jax.tree.map(np.testing.assert_array_equal, loaded["neural_tower"], other["neural_tower"])
    # A partial file replaces only what it names.
    partial = str(tmp_path / "stem.npz")
    np.savez(partial, **{"stem/kernel": np.ones_like(params["image_tower"]["stem"]["kernel"])})
    loaded = load_pretrained(other, partial)
    assert np.all(np.asarray(loaded["image_tower"]["stem"]["kernel"]) == 1.0)
    np.testing.assert_array_equal(
        loaded["image_tower"]["head_out"]["kernel"], other["image_tower"]["head_out"]["kernel"]
    )


def test_pretrained_weights_errors_are_one_line(tiny_dina, tmp_path):
    _, params = tiny_dina
    missing = str(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="not found"):
        load_pretrained(params, missing)
    wrong_shape = str(tmp_path / "wrong_shape.npz")
    np.savez(wrong_shape, **{"stem/kernel": np.zeros((5, 5, 1, 1), np.float32)})
    with pytest.raises(
        DataError, match=r"'stem/kernel' has shape \(5, 5, 1, 1\), the model expects"
    ) as error:
        load_pretrained(params, wrong_shape)
    assert str(error.value).startswith(wrong_shape) and "\n" not in str(error.value)
    unknown = str(tmp_path / "unknown.npz")
    np.savez(unknown, **{"conv1_1/kernel": np.zeros((3, 3, 1, 64), np.float32)})
    with pytest.raises(DataError, match="parameter 'conv1_1/kernel' does not exist"):
        load_pretrained(params, unknown)


def test_micro_batches_by_default_only_where_a_batch_leaves_the_cache():
    from dina_jax.models.image_tower import CPU_MICRO_BATCH, resolve_micro_batch

    paper = 32 * 128 * 64 * 4  # one sample's stage-1 tensor at the paper's sizes: 1 MB
    tiny = 32 * 128 * 8 * 4
    assert resolve_micro_batch(0, paper) == CPU_MICRO_BATCH  # the test backend is a CPU
    assert resolve_micro_batch(0, tiny) >= 2**31 - 1
    assert resolve_micro_batch(5, tiny) == 5
    with pytest.raises(ValueError, match="micro_batch"):
        resolve_micro_batch(-1, paper)


def test_patch_merging_equals_the_stride_2_convolution():
    # Same parameter tree and initialization as nn.Conv, and the same result.
    x = jnp.asarray(_rng(40).standard_normal((2, 8, 12, 5)), jnp.float32)
    conv = nn.Conv(7, (2, 2), strides=(2, 2), padding="SAME")
    merge = PatchMerging(7, 2)
    key = jax.random.PRNGKey(3)
    params = conv.init(key, x)
    assert jax.tree.map(jnp.shape, merge.init(key, x)) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(merge.init(key, x)["params"]["kernel"], params["params"]["kernel"])
    params = _randomized(params["params"], 41)
    np.testing.assert_allclose(
        merge.apply({"params": params}, x), conv.apply({"params": params}, x), atol=ATOL
    )
    with pytest.raises(ValueError, match="not divisible by the patch size 2"):
        merge.init(key, x[:, :7])
