"""Models: shapes, parameter counts at the paper's sizes, the neural tower against a NumPy oracle,
neuron masks as neuron deletion, pathway masking, pretrained-weight I/O."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dina_jax.config import get_base_config
from dina_jax.data.stringer import DataError
from dina_jax.models import (
    MODEL_BUILDERS,
    NeuralTower,
    build_model,
    init_params,
    load_pretrained,
    save_pretrained,
)
from dina_jax.models.image_tower import DepthwiseConv, upsample_linear

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
    with pytest.raises(ValueError, match="resnet"):
        build_model(config, 10)


def _paper_params(name, n_neurons=10_000):
    config = get_base_config()
    config.model.name = name
    model = build_model(config, n_neurons)
    images = jax.ShapeDtypeStruct((2, 68, 270), jnp.float32)
    responses = jax.ShapeDtypeStruct((2, n_neurons), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, responses)
    outputs = jax.eval_shape(model.apply, variables, images, responses)
    return config, variables["params"], outputs


def _dsnet_count(image):
    """Independent count of the DS-Net tower parameters from its layer list."""

    def block(c, ratio):
        h = c // 2
        dense = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
        return (
            10 * c  # position depth-wise conv 3 x 3 + bias
            + 2 * c  # norm1
            + dense(c, c)  # split projection
            + 2 * h + 10 * h  # local norm, local 3 x 3 depth-wise conv
            + 2 * h + dense(h, 3 * h) + dense(h, h)  # global norm, qkv, projection
            + 2 * (2 * h + dense(h, 3 * h) + dense(h, h))  # co-attention, both streams
            + dense(c, c)  # fuse
            + 2 * c + dense(c, ratio * c) + dense(ratio * c, c)  # norm2 + MLP
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
    assert _count(params["image_tower"]) == _dsnet_count(config.model.image) == 1_079_553


def test_paper_size_vgg16_mlp_parameter_counts():
    config, params, (z_img, z_neu, _) = _paper_params("vgg16_mlp")
    assert z_img.shape == z_neu.shape == (2, 16, 64)
    baseline = config.model.baseline
    total, c_in = 0, 1
    for width, depth in zip(baseline.vgg_widths, baseline.vgg_depths, strict=True):
        for _ in range(depth):
            total += 9 * c_in * width + width
            c_in = width
    total += c_in * baseline.head_hidden + 2 * baseline.head_hidden + 1
    assert _count(params["image_tower"]) == total == 14_746_433
    readout = 10_000 * 1024 + 1024 + 1024 * 1024 + 1024
    assert _count(params["neural_tower"]) == readout == 11_290_624


def test_paper_size_vit_mlp_parameter_counts():
    config, params, (z_img, _, _) = _paper_params("vit_mlp")
    assert z_img.shape == (2, 16, 64)
    b = config.model.baseline
    dim, ratio, tokens = b.vit_dim, b.vit_mlp_ratio, 16 * 64
    per_block = 4 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim)
    per_block += (dim * ratio * dim + ratio * dim) + (ratio * dim * dim + dim)
    total = b.vit_patch[0] * b.vit_patch[1] * dim + dim + tokens * dim
    total += b.vit_depth * per_block + 2 * dim + dim * b.head_hidden + 2 * b.head_hidden + 1
    assert _count(params["image_tower"]) == total == 2_881_857


def test_synthetic_config_builds_at_its_size():
    from conftest import load_config_file

    config = load_config_file("synthetic")
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
    with pytest.raises(ValueError, match="DS-Net"):
        jax.eval_shape(
            lambda v, x: model.apply(v, x, pathways=("local",), method="encode_images"),
            variables,
            images,
        )


def test_depthwise_conv_equals_grouped_convolution():
    x = jnp.asarray(_rng(5).standard_normal((2, 9, 11, 6)), jnp.float32)
    layer = DepthwiseConv(3)
    variables = layer.init(jax.random.PRNGKey(0), x)
    kernel = variables["params"]["kernel"]
    variables = {"params": {"kernel": kernel, "bias": jnp.arange(6.0)}}
    expected = lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6
    ) + jnp.arange(6.0)
    np.testing.assert_allclose(layer.apply(variables, x), expected, atol=ATOL)


def test_upsample_equals_jax_image_resize():
    x = jnp.asarray(_rng(6).standard_normal((2, 4, 16, 3)), jnp.float32)
    expected = jax.image.resize(x, (2, 32, 128, 3), method="linear")
    np.testing.assert_allclose(upsample_linear(x, (32, 128)), expected, atol=ATOL)


# Parameters of each dual-stream block that only one stream reads (image_tower.DualStreamBlock):
# masking the other stream must make them irrelevant. Co-attention needs both streams.
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
        for name in STREAM_ONLY[dropped]:
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
        kernel[half:] = 0.0 if kept == "local" else kernel[half:]
        kernel[:half] = 0.0 if kept == "global" else kernel[:half]
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


# -------------------------------------------------------------------------------- neural tower


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _numpy_neural_tower(params, responses, keep, d_model, residual=True):
    """Eq. 4–9 and the MLP in float64, written from the paper (plus the optional skip)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    r = np.asarray(responses, np.float64)
    embedded = r[:, :, None] * p["embedding"][None]  # Eq. 4
    q = embedded @ p["query"]["kernel"]  # Eq. 6
    k = embedded @ p["key"]["kernel"]
    v = embedded @ p["value"]["kernel"]
    logits = q @ np.swapaxes(k, 1, 2) / np.sqrt(d_model)  # Eq. 7
    logits = np.where(keep[None, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = probs @ v + (embedded if residual else 0.0)
    aggregated = np.einsum("bnd,nd->bn", attended, p["aggregation"]) * keep  # Eq. 8
    hidden = _gelu(aggregated @ p["mlp_hidden_layer"]["kernel"] + p["mlp_hidden_layer"]["bias"])
    out = hidden @ p["mlp_out_layer"]["kernel"] + p["mlp_out_layer"]["bias"]
    return out.reshape(r.shape[0], 2, 4), probs


def _tower(n, attention="blockwise", residual=True):
    return NeuralTower(
        n_neurons=n,
        d_model=8,
        mlp_hidden=16,
        latent_hw=(2, 4),
        attention=attention,
        block_size=5,
        residual=residual,
    )


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
    with pytest.raises(DataError, match="shape") as error:
        load_pretrained(params, wrong_shape)
    assert str(error.value).startswith(wrong_shape) and "\n" not in str(error.value)
    unknown = str(tmp_path / "unknown.npz")
    np.savez(unknown, **{"conv1_1/kernel": np.zeros((3, 3, 1, 64), np.float32)})
    with pytest.raises(DataError, match="conv1_1/kernel"):
        load_pretrained(params, unknown)
