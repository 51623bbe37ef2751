"""PCA variance spectra and their power-law exponents (paper Fig. 4b; Stringer et al. 2019).

The spectrum of a sample matrix x (n_samples, n_features) is the list of eigenvalues of its
covariance, sorted in decreasing order and normalized to sum to one: var[k-1] is the fraction of
variance carried by the k-th principal component. A power law var_k ~ k^(-alpha) is fitted by
ordinary least squares of log(var_k) on log(k) over a range of ranks [lo, hi] (1-based, inclusive).

Fit range. Stringer et al. (2019) fitted natural-image spectra (2,800 images) over ranks 11-500. The
paper's Fig. 4b compares the test images with the image- and neural-tower feature maps of the same
280 test stimuli: with 280 samples the covariance has at most 279 non-zero eigenvalues, and the
sample eigenvalues beyond about n/3 are pulled down by the finite sample (Marchenko-Pastur edge),
whatever the true spectrum. We therefore fit every spectrum of Fig. 4b over ranks 10-100
(``config.eval.spectrum_fit_range``): it skips the first few components, which carry the mean
luminance/contrast structure and bend away from any power law, and stops well before the
finite-sample edge. The same range is used for images and maps so their exponents are comparable.

The eigenvalues are computed in float64 with numpy: they span many decades (a spectrum with
alpha = 2 falls by 10^4 over 100 ranks) and this analysis is not performance-critical.
"""

from __future__ import annotations

import numpy as np

DEFAULT_FIT_RANGE = (10, 100)
NUMERICAL_ZERO = 1e-10


def pca_spectrum(x: np.ndarray) -> np.ndarray:
    """Normalized PCA eigenvalue spectrum of x (n_samples, ...) -> (min(n_samples - 1, d),) float64.

    Samples are the first axis; the remaining axes are flattened into d features. The covariance
    eigenvalues are the squared singular values of the mean-centred data divided by n - 1; only the
    at most n - 1 components a centred sample can span are returned, normalized to sum to one (an
    all-constant input returns zeros). Eigenvalues below ``NUMERICAL_ZERO`` times the largest are
    set to 0 (round-off); the fit and the plots use the positive ones only.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if x.shape[0] < 2:
        raise ValueError(f"a spectrum needs at least 2 samples, got x of shape {x.shape}")
    x = x - x.mean(axis=0, keepdims=True)
    # The smaller Gram matrix has the same non-zero eigenvalues as the covariance (n - 1 times).
    if x.shape[0] <= x.shape[1]:
        eigenvalues = np.linalg.eigvalsh(x @ x.T)
    else:
        eigenvalues = np.linalg.eigvalsh(x.T @ x)
    eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)[: min(x.shape[0] - 1, x.shape[1])]
    # Below this fraction of the largest eigenvalue an eigenvalue is round-off of float32 inputs
    # (a map whose readout has fewer hidden units than samples has an exactly lower rank).
    eigenvalues[eigenvalues < NUMERICAL_ZERO * eigenvalues[:1].max(initial=0.0)] = 0.0
    total = eigenvalues.sum()
    return eigenvalues / total if total > 0 else eigenvalues


def fit_power_law(
    var: np.ndarray, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE
) -> tuple[float, float, tuple[int, int]]:
    """Least-squares fit of log var_k = c - alpha log k over ranks k in fit_range (1-based).

    The range is clipped to the ranks with positive variance. Returns (alpha, c, (lo, hi)) with the
    ranks actually used; alpha is 0.0 when fewer than two ranks remain (a degenerate spectrum).
    """
    var = np.asarray(var, dtype=np.float64)
    n_positive = int(np.sum(var > 0))
    lo = max(1, int(fit_range[0]))
    hi = min(int(fit_range[1]), n_positive)
    if hi - lo + 1 < 2:
        return 0.0, 0.0, (lo, hi)
    ranks = np.arange(lo, hi + 1, dtype=np.float64)
    slope, intercept = np.polyfit(np.log(ranks), np.log(var[lo - 1 : hi]), deg=1)
    return float(-slope), float(intercept), (lo, hi)


def variance_spectrum(
    x: np.ndarray, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE
) -> tuple[np.ndarray, float]:
    """PCA variance spectrum of x (n_samples, ...) and its power-law exponent.

    Returns (var, alpha): var (min(n - 1, d),) float64, the normalized eigenvalues in decreasing
    order; alpha the exponent of var_k ~ k^(-alpha) fitted over ``fit_range`` (see module doc).

    Paper: Fig. 4b: PCA variance spectra and power-law exponents.

    Example::

        var, alpha = dina_jax.variance_spectrum(z_img)   # (min(S - 1, 1024),), float
    """
    var = pca_spectrum(x)
    alpha, _, _ = fit_power_law(var, fit_range)
    return var, alpha
