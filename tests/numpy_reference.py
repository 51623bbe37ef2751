"""Float64 NumPy building blocks shared by the tests' independent references (oracles)."""

import numpy as np


def gelu_tanh(x):
    """flax.linen.gelu's default (approximate=True): the tanh form."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def bilinear_matrix(n_in, n_out):
    """(n_out, n_in) 1-D linear interpolation for upsampling: half-pixel centres, edge-clamped."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        low = int(np.floor(centre))
        high = min(low + 1, n_in - 1)
        weights[i, low] += 1.0 - (centre - low)
        weights[i, high] += centre - low
    return weights
