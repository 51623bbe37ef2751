"""InfoNCE against an independent float64 numpy implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dina_jax import losses


def numpy_infonce(z_img, z_neu, temperature):
    """Brute-force symmetric CLIP loss and its metrics, float64, one query at a time."""
    a = z_img.reshape(len(z_img), -1).astype(np.float64)
    b = z_neu.reshape(len(z_neu), -1).astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    n = len(a)
    cos = np.array([[a[i] @ b[j] for j in range(n)] for i in range(n)])
    i2n, n2i, hit_i2n, hit_n2i = [], [], [], []
    for i in range(n):
        row = cos[i] / temperature
        col = cos[:, i] / temperature
        i2n.append(-(row[i] - np.log(np.sum(np.exp(row - row.max()))) - row.max()))
        n2i.append(-(col[i] - np.log(np.sum(np.exp(col - col.max()))) - col.max()))
        hit_i2n.append(np.argmax(row) == i)
        hit_n2i.append(np.argmax(col) == i)
    off = ~np.eye(n, dtype=bool)
    return {
        "loss": 0.5 * (np.mean(i2n) + np.mean(n2i)),
        "loss_img_to_neu": np.mean(i2n),
        "loss_neu_to_img": np.mean(n2i),
        "top1_img_to_neu": np.mean(hit_i2n),
        "top1_neu_to_img": np.mean(hit_n2i),
        "pos_cos": np.mean(np.diag(cos)),
        "neg_cos": np.mean(cos[off]),
        "count": n,
    }


def _pairs(seed, batch=12, shape=(4, 8), noise=1.0):
    """Image maps and neural maps correlated with them (so accuracies are neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    z_img = rng.normal(size=(batch, *shape)).astype(np.float32)
    z_neu = (z_img + noise * rng.normal(size=z_img.shape)).astype(np.float32)
    return z_img, z_neu


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_matches_numpy(temperature):
    z_img, z_neu = _pairs(0, noise=3.0)
    # Different row scales: only directions may matter.
    z_img *= np.linspace(0.1, 10.0, len(z_img), dtype=np.float32)[:, None, None]
    loss, metrics = jax.jit(losses.infonce, static_argnums=2)(z_img, z_neu, temperature)
    expected = numpy_infonce(z_img, z_neu, temperature)
    assert float(loss) == pytest.approx(expected["loss"], rel=1e-5)
    for key, value in expected.items():
        assert float(metrics[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert 0.0 < expected["top1_img_to_neu"] < 1.0  # the accuracies are not trivially 0 or 1


def test_aligned_orthogonal_maps_give_zero_loss_and_perfect_accuracy():
    z = np.eye(8, 16, dtype=np.float32).reshape(8, 4, 4)
    loss, metrics = losses.infonce(z, 3.0 * z, 0.01)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics["top1_img_to_neu"]) == 1.0 == float(metrics["top1_neu_to_img"])
    assert float(metrics["pos_cos"]) == pytest.approx(1.0)
    assert float(metrics["neg_cos"]) == pytest.approx(0.0, abs=1e-7)


def test_identical_maps_give_log_batch_size():
    """With every map the same, each query is a uniform guess among B keys: loss = log(B)."""
    z = np.ones((16, 4, 4), np.float32)
    loss, _ = losses.infonce(z, z, 0.01)
    assert float(loss) == pytest.approx(np.log(16), rel=1e-6)


def test_mask_equals_the_loss_of_the_valid_rows_alone():
    z_img, z_neu = _pairs(1)
    keep = np.array([1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1], np.float32)
    rows = keep > 0
    # Garbage (even NaN-free huge values) in padded rows must not leak into the result.
    z_img[~rows] = 1e6
    _, masked = losses.infonce(z_img, z_neu, 0.05, mask=keep)
    expected = numpy_infonce(z_img[rows], z_neu[rows], 0.05)
    for key, value in expected.items():
        assert float(masked[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_centred_neural_maps_match_numpy_on_the_centred_maps():
    z_img, z_neu = _pairs(3, noise=2.0)
    z_neu += 5.0 * np.random.default_rng(4).normal(size=z_neu.shape[1:]).astype(np.float32)
    keep = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1], np.float32)
    rows = keep > 0
    z_neu[~rows] = 1e3  # padding must not move the centre
    _, metrics = losses.infonce(z_img, z_neu, 0.05, mask=keep, centre_neural=True)
    unit = z_neu[rows].reshape(rows.sum(), -1).astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    expected = numpy_infonce(z_img[rows], unit - unit.mean(axis=0), 0.05)
    for key, value in expected.items():
        assert float(metrics[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # A large pattern shared by the neural maps costs the plain loss; centred, it is lower.
    plain, _ = losses.infonce(z_img, z_neu, 0.05, mask=keep)
    assert expected["loss"] < float(plain)


def test_gradient_matches_numpy_finite_differences():
    z_img, z_neu = _pairs(2, batch=6, shape=(3,))
    temperature = 0.1
    grad = np.asarray(jax.grad(lambda a: losses.infonce(a, z_neu, temperature)[0])(z_img))
    eps = 1e-4
    numeric = np.zeros_like(z_img, dtype=np.float64)
    for index in np.ndindex(z_img.shape):
        plus, minus = z_img.astype(np.float64), z_img.astype(np.float64)
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (
            numpy_infonce(plus, z_neu, temperature)["loss"]
            - numpy_infonce(minus, z_neu, temperature)["loss"]
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


def test_bfloat16_maps_are_compared_in_float32():
    z_img, z_neu = _pairs(3)
    loss, _ = losses.infonce(jnp.asarray(z_img, jnp.bfloat16), jnp.asarray(z_neu), 0.01)
    assert loss.dtype == jnp.float32
