"""``batched_apply``, the library's one chunking loop."""

import jax
import numpy as np
import pytest

from dina_jax.data.pipeline import batched_apply


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
