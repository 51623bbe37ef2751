"""The simulated V1 population and its responses: Gabor cells, their drive, noisy trials.

Neurons: retinotopic Gabor simple cells (half-rectified linear filter) and, for 80% of the visual
neurons (layer 2/3, which two-photon recordings image, is dominated by complex cells), complex
cells (energy of a quadrature pair) with RF centres spread over the visual field, log-uniform sizes
and spatial frequencies, random orientations and phases; log-normal gains (a minority strongly
responsive); a fraction of non-visual neurons (gain 0); a shared multiplicative gain per trial;
low-rank shared noise that is also present in the spontaneous activity (so that projecting out
spontaneous PCs helps, as in the real data); private noise; non-negative (rectified) activity; some
red cells. Each image is shown twice in random order, interleaved with blank (gray screen) trials.

:func:`~dina_jax.data.synthetic.generate` normalizes each neuron's drive by its statistics on the
natural image set before :func:`simulate_recording` turns it into trials.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dina_jax.data.stimuli import IMAGE_SHAPE


@dataclasses.dataclass(frozen=True)
class SimulationParams:
    """Knobs of the simulated V1; the defaults give repeat-to-repeat top-1 decoding well above
    chance but far from perfect (see tests/test_synthetic.py)."""

    frac_nonvisual: float = 0.3  # Neurons with no visual drive (gain 0).
    frac_complex: float = 0.8  # Complex (energy) rather than simple cells; docs/decisions.md.
    frac_redcell: float = 0.08  # GAD+ neurons flagged in stat.redcell (dropped by the loader).
    rf_sigma_range: tuple = (3.0, 9.0)  # Gaussian envelope sigma in degrees (= pixels).
    sf_range: tuple = (0.02, 0.12)  # Spatial frequency in cycles per degree.
    aspect_range: tuple = (1.0, 1.6)  # Envelope elongation along the bars.
    gain_median: float = 0.25  # Median signal std in units of the private noise std.
    gain_log_sigma: float = 0.9  # Log-normal spread of the gains: a minority strongly responsive.
    shared_gain_log_sigma: float = 0.25  # Per-trial multiplicative gain shared by all neurons.
    n_noise_factors: int = 12  # Rank of the shared (spontaneous) noise.
    noise_factor_scale: float = 1.5  # Std of the largest shared-noise factor (decays as k^-0.75).
    baseline_median: float = 4.0  # Median spontaneous rate (rectification rarely binds).
    blank_fraction: float = 0.05  # Blank trials per image trial.
    spont_per_trial: float = 0.5  # Spontaneous timepoints per trial.

    def scaled(self, gain_scale: float) -> SimulationParams:
        """These parameters with every gain multiplied by ``gain_scale``."""
        return dataclasses.replace(self, gain_median=self.gain_median * gain_scale)


# ------------------------------------------------------------------------------ neurons


def make_neurons(n_neurons: int, rng: np.random.Generator, params: SimulationParams) -> dict:
    """Draws the simulated population; every array is indexed by the neuron's file column.

    Returns a dict with ``rf_center`` (N, 2) float32 (row, col) in 68 x 270 pixel coordinates,
    ``rf_sigma``, ``spatial_frequency``, ``orientation``, ``phase``, ``aspect``, ``gain``,
    ``baseline`` (N,) float32 and ``is_visual``, ``is_complex``, ``redcell`` (N,) bool. Non-visual
    neurons keep the filter they would have but have gain 0.
    """
    height, width = IMAGE_SHAPE
    sigma = np.exp(rng.uniform(*np.log(params.rf_sigma_range), n_neurons))
    margin = np.minimum(sigma, 0.45 * height)  # Keep most of each RF on the screens.
    rows = rng.uniform(margin, height - 1 - margin)
    cols = rng.uniform(margin, width - 1 - margin)
    is_visual = rng.random(n_neurons) >= params.frac_nonvisual
    gain = params.gain_median * np.exp(params.gain_log_sigma * rng.standard_normal(n_neurons))
    return {
        "rf_center": np.stack([rows, cols], axis=1).astype(np.float32),
        "rf_sigma": sigma.astype(np.float32),
        "spatial_frequency": np.exp(rng.uniform(*np.log(params.sf_range), n_neurons)).astype(
            np.float32
        ),
        "orientation": rng.uniform(0.0, np.pi, n_neurons).astype(np.float32),
        "phase": rng.uniform(0.0, 2 * np.pi, n_neurons).astype(np.float32),
        "aspect": rng.uniform(*params.aspect_range, n_neurons).astype(np.float32),
        "gain": np.where(is_visual, gain, 0.0).astype(np.float32),
        "baseline": (params.baseline_median * np.exp(0.4 * rng.standard_normal(n_neurons))).astype(
            np.float32
        ),
        "is_visual": is_visual,
        "is_complex": rng.random(n_neurons) < params.frac_complex,
        "redcell": rng.random(n_neurons) < params.frac_redcell,
    }


def gabor_bank(neurons: dict, step: int = 2) -> np.ndarray:
    """Quadrature Gabor filters of every neuron sampled on a ``step``-subsampled pixel grid.

    Returns:
      (2, N, H // step * W // step) float32: the even (phase) and odd (phase + pi/2) filters, each
      with unit L2 norm, evaluated at the centres of the ``step`` x ``step`` pixel blocks.
    """
    height, width = IMAGE_SHAPE
    offset = (step - 1) / 2.0
    grid_r = (np.arange(height // step) * step + offset).astype(np.float32)
    grid_c = (np.arange(width // step) * step + offset).astype(np.float32)
    center = neurons["rf_center"]
    dr = grid_r[None, :, None] - center[:, 0, None, None]  # (N, h, 1)
    dc = grid_c[None, None, :] - center[:, 1, None, None]  # (N, 1, w)
    theta = neurons["orientation"][:, None, None]
    along = dc * np.cos(theta) + dr * np.sin(theta)  # (N, h, w), across the bars
    across = -dc * np.sin(theta) + dr * np.cos(theta)  # along the bars
    sigma = neurons["rf_sigma"][:, None, None]
    aspect = neurons["aspect"][:, None, None]
    envelope = np.exp(-0.5 * (along**2 + (across / aspect) ** 2) / sigma**2)
    # Truncate the tails: float32 denormals far from the RF slow the BLAS product ~100x.
    envelope = np.where(envelope > 1e-6, envelope, 0.0)
    argument = 2 * np.pi * neurons["spatial_frequency"][:, None, None] * along
    argument = argument + neurons["phase"][:, None, None]
    bank = np.stack([envelope * np.cos(argument), envelope * np.sin(argument)])  # (2, N, h, w)
    bank = bank.reshape(2, len(center), -1)
    bank /= np.linalg.norm(bank, axis=2, keepdims=True) + 1e-12
    return bank.astype(np.float32)


def filter_drive(images: np.ndarray, neurons: dict, bank: np.ndarray, step: int = 2) -> np.ndarray:
    """Un-normalized visual drive of every neuron to every image.

    Simple cells: half-rectified even-filter output; complex cells: quadrature energy
    ``sqrt(even^2 + odd^2)``. One matrix product of the (block-averaged) images with the bank.

    Returns:
      (S, N) float32.
    """
    n, height, width = images.shape
    x = (images.astype(np.float32) - 128.0) / 64.0  # The authors' stimulus normalization.
    x = x[:, : height // step * step, : width // step * step]
    x = x.reshape(n, height // step, step, width // step, step).mean(axis=(2, 4))
    x = x.reshape(n, -1)  # (S, P)
    even = x @ bank[0].T  # (S, P) @ (P, N) -> (S, N)
    odd = x @ bank[1].T
    return np.where(neurons["is_complex"], np.sqrt(even**2 + odd**2), np.maximum(even, 0.0))


# ------------------------------------------------------------------------------ recordings


def simulate_recording(
    signal: np.ndarray, neurons: dict, rng: np.random.Generator, params: SimulationParams
) -> dict:
    """Trials in presentation order: each image twice plus blank trials, and spontaneous activity.

    Args:
      signal: (S, N) noise-free stimulus-evoked signal (drive normalized and scaled by gain).

    Returns:
      dict with ``resp`` (T, N) float32, ``istim`` (T,) float64 (1-based, blank = S + 1),
      ``spont`` (T_spont, N) float32 and ``med`` (N, 3) float64 cell centres in micrometres.
    """
    n_images, n_neurons = signal.shape
    n_blank = max(1, round(params.blank_fraction * 2 * n_images))
    istim = np.concatenate([np.tile(np.arange(1, n_images + 1), 2), np.full(n_blank, n_images + 1)])
    istim = rng.permutation(istim)
    n_trials = istim.size
    n_spont = max(4 * params.n_noise_factors, round(params.spont_per_trial * n_trials))

    factor_std = params.noise_factor_scale * np.arange(1, params.n_noise_factors + 1) ** -0.75
    loadings = rng.standard_normal((params.n_noise_factors, n_neurons)).astype(np.float32)
    loadings *= factor_std[:, None].astype(np.float32)
    baseline = neurons["baseline"]

    def activity(n_rows, evoked):
        shared_gain = np.exp(
            params.shared_gain_log_sigma * rng.standard_normal((n_rows, 1))
            - 0.5 * params.shared_gain_log_sigma**2
        ).astype(np.float32)
        factors = rng.standard_normal((n_rows, params.n_noise_factors)).astype(np.float32)
        private = rng.standard_normal((n_rows, n_neurons), dtype=np.float32)
        x = shared_gain * (baseline + evoked) + factors @ loadings + private
        return np.maximum(x, 0.0).astype(np.float32)  # Deconvolved activity is non-negative.

    padded = np.concatenate([signal, np.zeros((1, n_neurons), np.float32)])  # Blank row.
    resp = activity(n_trials, padded[istim - 1])
    spont = activity(n_spont, 0.0)

    # Retinotopic cell positions (um): cortical position follows the RF centre, plus scatter;
    # 11 planes 35 um apart, like the release's multi-plane recordings.
    rows, cols = neurons["rf_center"][:, 0], neurons["rf_center"][:, 1]
    med = np.stack(
        [
            100.0 + 900.0 * cols / IMAGE_SHAPE[1] + 40.0 * rng.standard_normal(n_neurons),
            100.0 + 500.0 * rows / IMAGE_SHAPE[0] + 40.0 * rng.standard_normal(n_neurons),
            35.0 * rng.integers(0, 11, n_neurons),
        ],
        axis=1,
    )
    return {"resp": resp, "istim": istim.astype(np.float64), "spont": spont, "med": med}
