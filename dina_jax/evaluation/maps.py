"""Paired image/neural feature maps compared as images and as populations (paper Sec. 4.3, Fig. 4).

* :func:`map_similarity`: SSIM between each image-tower map and its paired neural-tower map
  (Sec. 4.3), on min-max normalized maps, beside the unpaired level and the raw-map SSIM;
* :func:`map_spectra`: PCA variance spectra and power-law exponents of the test images and of
  both towers' maps (Fig. 4b).

LPIPS, the other paired-map measure of Sec. 4.3, is ``dina_jax.evaluation.lpips``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dina_jax.analysis import spectra
from dina_jax.analysis.ssim import batched_ssim, minmax_normalize


def map_similarity(z_img: np.ndarray, z_neu: np.ndarray, *, win_size: int = 7) -> dict:
    """SSIM between each image-tower map and its paired neural-tower map (Sec. 4.3).

    Args:
      z_img, z_neu: (B, 16, 64) (or (B, 1, 16, 64)) paired maps.
      win_size: SSIM window.

    Returns:
      {"mean", "std", "per_pair" (B,) list} on min-max normalized maps (data range 1), the image
      map as reference; "unpaired_mean"/"unpaired_std", the same between each image map and the
      neural map of the stimulus B // 2 positions further (a non-matching pair: the level the
      paired value must be compared with); "raw_mean"/"raw_std" on the raw maps with the image
      map's range as data range.
    """
    hw = z_img.shape[-2:]
    z_img = jnp.asarray(z_img, jnp.float32).reshape(-1, *hw)
    z_neu = jnp.asarray(z_neu, jnp.float32).reshape(-1, *hw)
    img, neu = minmax_normalize(z_img), minmax_normalize(z_neu)
    paired = np.asarray(batched_ssim(img, neu, win_size=win_size, data_range=1.0))
    shifted = jnp.roll(neu, len(neu) // 2, axis=0)
    unpaired = np.asarray(batched_ssim(img, shifted, win_size=win_size, data_range=1.0))
    raw = np.asarray(batched_ssim(z_img, z_neu, win_size=win_size))
    return {
        "mean": float(paired.mean()),
        "std": float(paired.std()),
        "unpaired_mean": float(unpaired.mean()),
        "unpaired_std": float(unpaired.std()),
        "raw_mean": float(raw.mean()),
        "raw_std": float(raw.std()),
        "win_size": int(win_size),
        "per_pair": paired.tolist(),
    }


def map_spectra(
    images: np.ndarray, z_img: np.ndarray, z_neu: np.ndarray, fit_range: tuple[int, int]
) -> dict:
    """PCA variance spectra and power-law exponents of images and both towers' maps (Fig. 4b).

    Args:
      images: (S, 68, 270) the test images; z_img, z_neu: (S, 16, 64) their paired maps.
      fit_range: (first, last) PC ranks of the power-law fit (``spectra.fit_power_law``).

    Returns:
      {"images", "image_maps", "neural_maps"}, each {"alpha": the exponent, "fit_range": the
      ranks used, "variance": (min(S - 1, D),) the normalized PC variances, decreasing, as a
      list}, D the pixels or map entries of a row.
    """
    result = {}
    for name, x in (("images", images), ("image_maps", z_img), ("neural_maps", z_neu)):
        var, alpha = spectra.variance_spectrum(x, fit_range=fit_range)
        _, _, used = spectra.fit_power_law(var, fit_range)
        result[name] = {"alpha": alpha, "fit_range": list(used), "variance": var.tolist()}
    return result
