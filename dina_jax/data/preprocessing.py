"""The authors' preprocessing of a recording, on arrays: ``loadProc2800`` + ``compute_means``.

Spontaneous z-scoring, projection of the top spontaneous PCs, mean-centring, and the
repeat-averaged ``responses`` and repeat ``halves`` of each image shown at least twice (see
:func:`preprocess_responses`). No file is read here: :func:`dina_jax.data.stringer.load_recording`
reads the ``.mat`` file, calls this and caches the result.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import scipy.linalg
import scipy.sparse

from dina_jax.data.matfile import _error

_SD_EPS = 1e-6  # Added to the spontaneous std before dividing, as the authors do.


def top_right_singular_vectors(x: np.ndarray, k: int) -> np.ndarray:
    """The top-k right singular vectors of x (T, N) as an (N, k) orthonormal float64 matrix.

    Computed from the smaller Gram matrix with a partial symmetric eigendecomposition, which is
    exact (not randomized) and much cheaper than a full SVD for ~10,000 neurons. Directions with a
    numerically zero singular value are dropped, so fewer than k columns may come back.
    """
    x = np.asarray(x, dtype=np.float64)
    n_rows, n_cols = x.shape
    k = min(k, n_rows, n_cols)
    if k <= 0:
        return np.zeros((n_cols, 0))
    small = min(n_rows, n_cols)
    gram = x.T @ x if n_cols <= n_rows else x @ x.T  # (small, small)
    eigvals, eigvecs = scipy.linalg.eigh(gram, subset_by_index=[small - k, small - 1])
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]  # Descending.
    keep = eigvals > eigvals[0] * 1e-12 if eigvals[0] > 0 else np.zeros(k, dtype=bool)
    eigvals, eigvecs = eigvals[keep], eigvecs[:, keep]
    if n_cols <= n_rows:
        return eigvecs
    v = x.T @ eigvecs / np.sqrt(eigvals)  # Right from left singular vectors: V = X^T U / s.
    q, _ = np.linalg.qr(v)  # Re-orthonormalize against rounding; the span is unchanged.
    return q


def preprocess_responses(
    resp: np.ndarray,
    istim: np.ndarray,
    spont: np.ndarray,
    *,
    n_spont_pcs: int = 32,
    n_images: int | None = None,
    path="<arrays>",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The authors' ``loadProc2800`` followed by ``compute_means(istim, resp, 2)``.

    1. Drop blank trials: the blank is the largest id (as the authors' ``nimg = max(istim) - 1``);
       ``n_images`` only checks that the other ids are rows of the images file.
    2. NaN responses (and NaN spontaneous samples) are set to 0 with a warning, as the authors do
       for ``resp``; +-Inf is a DataError (it cannot come from averaged deconvolved activity and
       zeroing it would hide a damaged file).
    3. z-score every neuron by the mean and std (ddof=0, + 1e-6) of its spontaneous activity
       (of its responses when ``spont`` is empty); a neuron whose spontaneous std is below 1e-6
       takes the std of its responses instead, with a warning (else it would be scaled ~1e6).
    4. Subtract the projection on the top ``n_spont_pcs`` right singular vectors of the z-scored
       spontaneous activity: ``r <- r - (r V) V^T``.
    5. Mean-centre every neuron over trials.
    6. For each image shown at least twice: the mean over all its repeats (``responses``) and the
       means over the first and second half of its repeats in presentation order (``halves``:
       with n repeats, repeats [0, n//2) and [ceil(n/2), ceil(n/2) + n//2), so with 3 repeats the
       middle one is in neither half, as in ``compute_means``). Images shown once are dropped.

    Args:
      resp: (T, N) responses in presentation order.
      istim: (T,) 1-based image ids.
      spont: (T_spont, N) spontaneous activity (may have 0 rows).
      n_spont_pcs: spontaneous PCs projected out (32 in the paper's source, Stringer et al. 2019).
      n_images: number of images in the images file, to check the ids against.
      path: named in error messages.

    Returns:
      responses (S, N) float32, halves (2, S, N) float32, image_index (S,) int64 (0-based, sorted).

    Raises:
      DataError: infinite inputs, ids beyond the images file, no repeats, or non-finite results.
    """
    istim = np.asarray(istim).reshape(-1).astype(np.int64)
    # The authors' rule (nimg = max(istim) - 1): the largest id is the blank, whatever the size
    # of the images file; a file with more images than the recording shows is fine.
    blank_id = int(istim.max()) if istim.size else 1
    if n_images is not None and blank_id > n_images + 1:
        raise _error(
            path,
            f"stim.istim has image id {blank_id - 1} but the images file has only "
            f"{n_images} images (the largest id, {blank_id}, is the blank)",
        )
    keep = istim < blank_id
    istim = istim[keep]
    resp0 = np.array(resp[keep], dtype=np.float64)
    spont = np.array(spont, dtype=np.float64)
    for what, arr in (("stim.resp", resp0), ("stim.spont", spont)):
        if np.isinf(arr).any():
            raise _error(path, f"{what} contains {int(np.isinf(arr).sum())} infinite values")
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            warnings.warn(f"{os.fspath(path)}: {n_nan} NaN values in {what} set to 0", stacklevel=3)
            arr[np.isnan(arr)] = 0.0
    if istim.size == 0:
        raise _error(path, "no image trials (every trial is a blank)")

    reference = spont if spont.shape[0] else resp0
    mu = reference.mean(axis=0)
    sd = reference.std(axis=0)
    flat = sd < _SD_EPS  # z-scoring by them would scale a neuron by ~1e6
    if flat.any():
        fallback = resp0.std(axis=0)
        warnings.warn(
            f"{os.fspath(path)}: {int(flat.sum())} neurons have no variance in "
            f"{'stim.spont' if spont.shape[0] else 'stim.resp'} (e.g. column "
            f"{int(np.flatnonzero(flat)[0])}); z-scored by the std of their responses instead",
            stacklevel=3,
        )
        sd = np.where(flat, np.where(fallback < _SD_EPS, 1.0, fallback), sd)
    sd += _SD_EPS
    resp0 -= mu  # In place: a real recording is ~0.5 GB per float64 copy.
    resp0 /= sd
    if n_spont_pcs > 0 and spont.shape[0]:
        if n_spont_pcs > min(spont.shape):
            warnings.warn(
                f"{os.fspath(path)}: n_spont_pcs={n_spont_pcs} exceeds the rank of stim.spont "
                f"{spont.shape}; using {min(spont.shape)}",
                stacklevel=3,
            )
        spont -= mu
        spont /= sd
        v = top_right_singular_vectors(spont, n_spont_pcs)  # (N, k)
        resp0 -= (resp0 @ v) @ v.T
    resp0 -= resp0.mean(axis=0)

    # Repeat bookkeeping, vectorized: rank of each trial among the repeats of its image.
    order = np.argsort(istim, kind="stable")  # Stable: keeps presentation order within an image.
    ids, first, counts = np.unique(istim[order], return_index=True, return_counts=True)
    n_trials = order.size
    rank = np.arange(n_trials) - np.repeat(first, counts)
    n_rep = np.repeat(counts, counts)
    half = n_rep // 2
    second_start = n_rep - half  # ceil(n / 2)
    repeated = counts >= 2
    if not repeated.any():
        raise _error(path, "no image was shown at least twice (repeats are needed for halves)")
    row = np.repeat(np.cumsum(repeated) - 1, counts)
    valid = np.repeat(repeated, counts)
    n_rows = int(repeated.sum())

    def average(mask, denominator):
        m = valid & mask
        weights = scipy.sparse.csr_matrix(
            (1.0 / denominator[m], (row[m], order[m])), shape=(n_rows, n_trials)
        )
        return np.asarray(weights @ resp0, dtype=np.float32)  # (S, T) @ (T, N) -> (S, N)

    everything = np.ones(n_trials, dtype=bool)
    responses = average(everything, n_rep)
    first_half = average(rank < half, half)
    second_half = average((rank >= second_start) & (rank < second_start + half), half)
    halves = np.stack([first_half, second_half])  # (2, S, N)
    image_index = (ids[repeated] - 1).astype(np.int64)
    for what, arr in (("responses", responses), ("repeat halves", halves)):
        bad = ~np.isfinite(arr)
        if bad.any():  # e.g. huge finite values in a damaged file overflow float32
            raise _error(
                path,
                f"preprocessed {what} have {int(bad.sum())} non-finite values (damaged "
                "stim.resp or stim.spont?); get a fresh copy of the file",
            )
    return responses, halves, image_index


__all__ = ["preprocess_responses", "top_right_singular_vectors"]
