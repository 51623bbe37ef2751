"""``batched_apply``, the library's one chunking loop, and the cached compiled encoders on it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dina_jax.data.pipeline import batched_apply
from dina_jax.models import feature_fns


def _pytree_fn(x, y):
    """Row-wise outputs of several shapes and dtypes: a dict holding an array and a tuple."""
    return {
        "total": x.sum(axis=(1, 2)) + y[:, 0],
        "pair": (2.0 * x, (y > 0).astype(np.int32)),
    }


def _inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, 3, 4)).astype(np.float32),
        rng.standard_normal((n, 5)).astype(np.float32),
    )


@pytest.mark.parametrize(
    "n, batch_size, chunk",
    [
        (7, 3, 3),  # Ragged: chunks of 3, 3 and 1 + 2 padding rows.
        (6, 3, 3),  # Even chunks, no padding.
        (7, 100, 7),  # A batch larger than the data: one chunk of all rows.
        (1, 1, 1),
    ],
)
def test_batched_apply_matches_a_direct_call(n, batch_size, chunk):
    x, y = _inputs(n)
    shapes = []

    def fn(a, b):
        shapes.append((a.shape, b.shape))
        return _pytree_fn(a, b)

    got = batched_apply(fn, x, y, batch_size=batch_size)
    expected = _pytree_fn(x, y)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert isinstance(g, np.ndarray) and g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-6)
    # Every call sees the same shapes (one compiled program), and the padding costs no extra call.
    assert set(shapes) == {((chunk, 3, 4), (chunk, 5))}
    assert len(shapes) == -(-n // batch_size)


def test_batched_apply_pads_with_zeros_and_traces_a_jitted_fn_once():
    x, y = _inputs(7)
    traces, seen = [], []

    @jax.jit
    def fn(a, b):
        traces.append(a.shape)  # Runs while tracing only.
        return a * 3.0, b

    out_x, out_y = batched_apply(fn, x, y, batch_size=3, progress=lambda it: seen.extend(it) or it)
    np.testing.assert_allclose(out_x, 3.0 * x, rtol=1e-6)
    np.testing.assert_array_equal(out_y, y)
    assert traces == [(3, 3, 4)]
    assert seen == [0, 3, 6]  # The progress wrapper gets the chunk starts.

    chunks = []
    batched_apply(lambda a: chunks.append(a) or a, x, batch_size=3)
    np.testing.assert_array_equal(chunks[-1][1:], 0.0)  # The two padding rows of the tail.


def test_batched_apply_without_rows_keeps_shapes_and_dtypes():
    x, y = _inputs(0)
    got = batched_apply(_pytree_fn, x, y, batch_size=4)
    assert got["total"].shape == (0,) and got["total"].dtype == np.float32
    assert got["pair"][0].shape == (0, 3, 4)
    assert got["pair"][1].shape == (0, 5) and got["pair"][1].dtype == np.int32


def test_batched_apply_rejects_bad_arguments():
    x, y = _inputs(4)
    for bad in (0, -2):
        with pytest.raises(ValueError, match="batch_size must be positive"):
            batched_apply(_pytree_fn, x, y, batch_size=bad)
    with pytest.raises(ValueError, match=r"same leading size.*\(4, 3, 4\), \(3, 5\)"):
        batched_apply(_pytree_fn, x, y[:3], batch_size=2)
    with pytest.raises(ValueError, match="same leading size"):
        batched_apply(lambda a: a, np.float32(1.0), batch_size=2)
    with pytest.raises(ValueError, match="at least one array"):
        batched_apply(lambda: None, batch_size=2)


# -------------------------------------------------------------- one compiled encoder per model
TRACES: list[tuple] = []


class _CountingTowers(nn.Module):
    """Two towers with the DualTower methods the encoders call, recording every trace."""

    def setup(self):
        self.scale = self.param("scale", nn.initializers.ones, ())

    def __call__(self, images, responses):
        return self.encode_images(images), self.encode_neurons(responses)

    def encode_images(self, images, pathways=("local", "global")):
        TRACES.append(("images", tuple(pathways)))
        return self.scale * images[:, :2, :4] * len(pathways)  # (B, H, W) -> (B, 2, 4)

    def encode_neurons(self, responses, neuron_mask=None):
        TRACES.append(("neurons", neuron_mask is None))
        if neuron_mask is not None:
            responses = responses * neuron_mask
        total = responses.sum(-1)[:, None, None]  # (B, N) -> (B, 1, 1)
        return self.scale * jnp.broadcast_to(total, (len(responses), 2, 4))


def test_encode_compiles_once_per_model_and_setting():
    model = _CountingTowers()
    images, responses = _inputs(7)
    params = model.init(jax.random.key(0), images[:1], responses[:1])["params"]
    TRACES.clear()

    z_img, z_neu = feature_fns.encode(model, params, images, responses, batch_size=3)
    np.testing.assert_allclose(z_img, 2.0 * images[:, :2, :4], rtol=1e-6)
    np.testing.assert_allclose(z_neu[:, 0, 0], responses.sum(-1), rtol=1e-5)
    # Three chunks (the last one padded), one trace per tower.
    assert sorted(TRACES) == [("images", ("local", "global")), ("neurons", True)]

    # A second call, and one with new parameter values, reuse both programs.
    feature_fns.encode(model, params, images, responses, batch_size=3)
    doubled = jax.tree.map(lambda p: 2.0 * p, params)
    z_img, _ = feature_fns.encode(model, doubled, images, responses, batch_size=3)
    np.testing.assert_allclose(z_img, 4.0 * images[:, :2, :4], rtol=1e-6)
    assert len(TRACES) == 2

    # A pathway setting or a neuron mask is a program of its own, compiled once as well.
    for _ in range(2):
        feature_fns.encode(model, params, images, responses, batch_size=3, pathways=("local",))
        mask = np.random.default_rng(len(TRACES)).random(5) > 0.5
        feature_fns.encode(model, params, images, responses, batch_size=3, neuron_mask=mask)
    assert sorted(TRACES[2:]) == [
        ("images", ("local",)),
        ("neurons", False),
    ]

    with pytest.raises(ValueError, match="7 images but 6 responses"):
        feature_fns.encode(model, params, images, responses[:6], batch_size=3)
