"""What the attention contributes: the spread of the scores against a materialized numpy oracle,
and the uniform / removed controls against independently built models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dina_jax.analysis.attention_contribution import attention_contribution, attention_spread
from dina_jax.evaluation.retrieval import retrieval_metrics
from dina_jax.models import build_model, init_params
from dina_jax.models.feature_fns import attention_qk_fn, encode_images, encode_neurons


def _qk_fn(q, k, keep):
    """A qk_fn over fixed arrays: the responses only select which stimulus."""

    def fn(responses):
        index = responses[0, 0].astype(jnp.int32)
        return q[index][None], k[index][None], keep[index][None]

    return jax.tree_util.Partial(fn)


def _numpy_spread(q, k, keep):
    """sd of ln P and mean relative row entropy over kept queries and keys, materialized."""
    logs, entropies = [], []
    for s in range(q.shape[0]):
        kept = np.nonzero(keep[s])[0]
        logits = np.einsum("qhd,khd->hqk", q[s][kept], k[s][kept]).astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        logs.append(log_p.ravel())
        entropies.append((-(np.exp(log_p) * log_p).sum(-1) / np.log(len(kept))).ravel())
    logs, entropies = np.concatenate(logs), np.concatenate(entropies)
    return logs.std(), entropies.mean()


@pytest.mark.parametrize("block_size", [4, 64])
def test_attention_spread_matches_materialized_probabilities(block_size):
    rng = np.random.default_rng(0)
    s, n, h, d = 3, 23, 2, 4
    q = rng.normal(size=(s, n, h, d)).astype(np.float32)
    k = rng.normal(size=(s, n, h, d)).astype(np.float32)
    keep = rng.random((s, n)) > 0.2
    responses = np.arange(s, dtype=np.float32)[:, None] * np.ones((1, n), np.float32)
    spread = attention_spread(
        _qk_fn(jnp.asarray(q), jnp.asarray(k), jnp.asarray(keep)),
        responses,
        block_size=block_size,
    )
    sd, entropy = _numpy_spread(q, k, keep)
    assert spread["sd_log_p"] == pytest.approx(sd, rel=1e-5)
    assert spread["relative_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert spread["n_rows"] == h * keep.sum()
    # Uniform attention (q = 0) over the same kept neurons: no spread, entropy ln(#keys).
    same_keep = jnp.broadcast_to(jnp.asarray(keep[0]), keep.shape)
    flat = attention_spread(
        _qk_fn(jnp.zeros_like(q), jnp.asarray(k), same_keep), responses, block_size=4
    )
    assert flat["sd_log_p"] == pytest.approx(0.0, abs=1e-6)
    assert flat["relative_entropy"] == pytest.approx(1.0, rel=1e-6)


@pytest.fixture(scope="module")
def tiny_dina(tiny_config, tiny_dataset):
    config = tiny_config.copy_and_resolve_references()
    config.model.neural.residual = True  # The tower with the skip has both controls.
    model = build_model(
        config,
        tiny_dataset.n_neurons,
        image_mean=tiny_dataset.image_mean,
        image_std=tiny_dataset.image_std,
    )
    return model, init_params(model, jax.random.key(3))


def test_controls_equal_models_built_with_that_mixer(tiny_config, tiny_dataset, tiny_dina):
    model, params = tiny_dina
    test = tiny_dataset.split.test
    images, responses = tiny_dataset.images[test], tiny_dataset.responses[test]
    result = attention_contribution(model, params, images, responses, batch_size=7)
    assert set(result) == {"intact", "uniform", "removed"}
    z_img = encode_images(model, params, images)
    for name, mixer in (("intact", "softmax"), ("uniform", "uniform"), ("removed", "none")):
        config = tiny_config.copy_and_resolve_references()
        config.model.neural.residual = True
        config.model.neural.mixer = mixer
        other = build_model(
            config,
            tiny_dataset.n_neurons,
            image_mean=tiny_dataset.image_mean,
            image_std=tiny_dataset.image_std,
        )
        expected = retrieval_metrics(encode_neurons(other, params, responses), z_img)
        for key in ("top1", "top5", "mean_rank"):
            assert result[name][key] == pytest.approx(expected[key]), (name, key)
    assert result["uniform"]["ssim_to_intact"] < 0.999  # random attention is not uniform

    # With W_Q = 0 every score is equal: the uniform control is the model itself.
    flat = jax.tree.map(np.array, params)
    flat["neural_tower"]["population_attention"]["query"]["kernel"][...] = 0.0
    same = attention_contribution(model, flat, images, responses)
    assert same["uniform"]["ssim_to_intact"] == pytest.approx(1.0, abs=1e-5)
    assert same["uniform"]["top1"] == same["intact"]["top1"]
    spread = attention_spread(attention_qk_fn(model, flat), responses[:2])
    assert spread["sd_log_p"] == pytest.approx(0.0, abs=1e-6)


def test_no_residual_has_no_removed_control_and_baselines_are_refused(
    tiny_config, tiny_dataset, tiny_dina
):
    _, params = tiny_dina
    config = tiny_config.copy_and_resolve_references()
    config.model.neural.residual = False
    literal = build_model(config, tiny_dataset.n_neurons)
    rows = tiny_dataset.split.test[:6]
    result = attention_contribution(
        literal, params, tiny_dataset.images[rows], tiny_dataset.responses[rows]
    )
    assert set(result) == {"intact", "uniform"}
    config.model.name = "vgg16_mlp"
    baseline = build_model(config, tiny_dataset.n_neurons)
    with pytest.raises(ValueError, match="MLPReadout has no population attention"):
        attention_contribution(
            baseline, params, tiny_dataset.images[rows], tiny_dataset.responses[rows]
        )
