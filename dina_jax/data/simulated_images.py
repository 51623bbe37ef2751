"""The simulated stimuli: natural-image surrogates and the paper's two controls derived from them.

Natural-image surrogates are random crops (random scale and position, random horizontal flip) of
the photographs that ship inside scikit-image (no download), converted to grayscale, resized to
68 x 270 and given a random mean luminance and contrast, stored as uint8 like the release. The
whitened set divides every image's Fourier amplitude by the mean amplitude spectrum of the set
(phases kept); the 8D set keeps the projection of every image on the top 8 principal components
of the set (plus the mean image), the paper's two controls (Sec. 4.3, Fig. 4c).

:mod:`dina_jax.data.synthetic` draws them in :func:`~dina_jax.data.synthetic.generate`.
"""

from __future__ import annotations

import numpy as np
import skimage.color
import skimage.data
import skimage.transform

from dina_jax.data.stimuli import IMAGE_SHAPE

STIMSETS = ("natimg2800", "white", "8D")

# Photographs shipped inside the scikit-image wheel (no pooch download needed).
_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "grass",
    "gravel",
    "brick",
    "coins",
    "moon",
    "clock",
    "hubble_deep_field",
)


def _check_stimset(stimset: str) -> None:
    if stimset not in STIMSETS:
        raise ValueError(f"stimset must be one of {STIMSETS}, got {stimset!r}")


def _photos() -> list[np.ndarray]:
    photos = []
    for name in _PHOTOS:
        image = getattr(skimage.data, name)()
        if image.ndim == 3:
            image = skimage.color.rgb2gray(image[..., :3])
        else:
            image = image / 255.0
        photos.append(np.asarray(image, dtype=np.float32))
    return photos


def natural_images(
    n_images: int, rng: np.random.Generator, sources: list | None = None
) -> np.ndarray:
    """Natural-image surrogates: random crops of scikit-image photographs.

    Args:
      n_images: images to make.
      rng: the generator every random choice is drawn from.
      sources: if given, a list that receives each image's source photograph (an index into
        :data:`_PHOTOS`), in image order; the images do not depend on it.

    Returns:
      (n_images, 68, 270) uint8, mean ~128 and std ~50 (random per image), like the release.
    """
    height, width = IMAGE_SHAPE
    photos = _photos()
    out = np.empty((n_images, height, width), dtype=np.uint8)
    for i in range(n_images):
        source = int(rng.integers(len(photos)))
        if sources is not None:
            sources.append(source)
        photo = photos[source]
        max_scale = min(photo.shape[0] / height, photo.shape[1] / width)
        scale = float(np.exp(rng.uniform(np.log(min(0.8, max_scale)), np.log(max_scale))))
        crop_h = min(photo.shape[0], max(2, round(height * scale)))
        crop_w = min(photo.shape[1], max(2, round(width * scale)))
        top = rng.integers(photo.shape[0] - crop_h + 1)
        left = rng.integers(photo.shape[1] - crop_w + 1)
        crop = photo[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image = skimage.transform.resize(
            crop, IMAGE_SHAPE, order=1, anti_aliasing=scale > 1.0, preserve_range=True
        )
        image = (image - image.mean()) / (image.std() + 1e-3)
        contrast = 50.0 * np.exp(0.2 * rng.standard_normal())
        luminance = 128.0 + 10.0 * rng.standard_normal()
        out[i] = np.clip(np.round(luminance + contrast * image), 0, 255).astype(np.uint8)
    return out


def whiten_images(images: np.ndarray) -> np.ndarray:
    """Flattens the mean amplitude spectrum of an image set (phases kept).

    Each image's mean is removed, its 2-D Fourier transform divided by the set's mean amplitude
    spectrum, transformed back, and the set rescaled by one common factor to std 50 around 128.

    Args:
      images: (S, 68, 270) uint8/float.
    Returns:
      (S, 68, 270) uint8.
    """
    x = images.astype(np.float32)
    x -= x.mean(axis=(1, 2), keepdims=True)
    spectra = np.fft.rfft2(x)  # (S, 68, 136)
    amplitude = np.abs(spectra).mean(axis=0)
    amplitude[0, 0] = 1.0  # The DC term is zero after mean removal; avoid 0 / 0.
    white = np.fft.irfft2(spectra / np.maximum(amplitude, 1e-12), s=images.shape[1:])
    white *= 50.0 / white.std()
    return np.clip(np.round(128.0 + white), 0, 255).astype(np.uint8)


def low_dim_images(images: np.ndarray, n_dims: int, rng: np.random.Generator) -> np.ndarray:
    """Reconstructs every image from the top ``n_dims`` principal components of the set.

    The PCs come from a randomized range finder with power iterations (exact to float precision
    for the top few components of an image set, and ~10x cheaper than a full SVD).

    Args:
      images: (S, 68, 270).
    Returns:
      (S, 68, 270) uint8: mean image + projection on the top PCs, the projection scaled by one
      common factor towards the pixel std of the input set (less if more than 0.1% would clip).
    """
    n = images.shape[0]
    x = images.reshape(n, -1).astype(np.float32)
    mean = x.mean(axis=0)
    x -= mean
    basis = _top_pcs(x, n_dims, rng)  # (D, n_dims)
    projection = (x @ basis) @ basis.T  # (S, D) @ (D, k) @ (k, D) -> (S, D)
    # One common gain restores the set's pixel contrast (stimuli are shown at full contrast),
    # capped so that at most 0.1% of the pixels clip: clipping would add dimensions.
    headroom = np.minimum(mean, 255.0 - mean) + 0.5  # (D,)
    with np.errstate(divide="ignore"):
        cap = np.quantile(headroom / np.abs(projection), 1e-3)
    projection *= min(x.std() / max(float(projection.std()), 1e-6), float(cap))
    return np.clip(np.round(mean + projection), 0, 255).astype(np.uint8).reshape(images.shape)


def _top_pcs(x: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 4) -> np.ndarray:
    k = min(k, *x.shape)
    q = x.T @ rng.standard_normal((x.shape[0], k + 16), dtype=x.dtype)  # (D, k + p)
    for _ in range(n_iter):  # Subspace iteration, re-orthonormalized each time for stability.
        q, _ = np.linalg.qr(q)
        q = x.T @ (x @ q)
    q, _ = np.linalg.qr(q)
    _, _, vt = np.linalg.svd(x @ q, full_matrices=False)
    return q @ vt[:k].T


def stimulus_images(stimset: str, natural: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The stimulus set derived from the natural images (the paper's controls)."""
    _check_stimset(stimset)
    if stimset == "white":
        return whiten_images(natural)
    if stimset == "8D":
        return low_dim_images(natural, 8, rng)
    return natural
